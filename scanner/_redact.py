"""Secret redaction for messages, logs, header maps and URLs."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

__all__ = ("Redactor",)

_SECRET_HEADERS = frozenset({"apikey", "authorization", "cookie", "x-api-key", "proxy-authorization"})
_SECRET_PARAM = re.compile(r"(?i)((?:api_?key|key|token|secret|password|auth_key|signature)=)[^&]*")


class Redactor:
    """Masks secrets in text, header maps and URLs. Secrets shorter than 4 characters are ignored."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = tuple(sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True))

    def text(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def url(self, url: str) -> str:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2] if "@" in parts.netloc else parts.netloc
        query = _SECRET_PARAM.sub(r"\1***", parts.query)
        return self.text(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)))

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        return {k: "***" if k.lower() in _SECRET_HEADERS else self.text(v) for k, v in headers.items()}
