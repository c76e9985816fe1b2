"""Secret redaction for messages, logs, header maps and URLs.

Two policies for URLs. :meth:`Redactor.url` keeps a vendor request's URL whole but for the values
of parameters named like secrets (``apikey=***``), for logs of the requests we make ourselves.
:func:`quote_url` keeps only scheme, host, port and path of a URL a user gave us (a presigned URL
carries its signature and session token in parameters of any name) and says that a query was there
(``?…``) without its text; :func:`scrub_urls` does that to every URL inside a message. Neither keeps
``user:password@``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

__all__ = ("Redactor", "quote_url", "scrub_urls")

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
        netloc = parts.netloc.rpartition("@")[2]
        query = _SECRET_PARAM.sub(r"\1***", parts.query)
        return self.text(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)))

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        return {k: "***" if k.lower() in _SECRET_HEADERS else self.text(v) for k, v in headers.items()}


# a scheme, "://", then up to the first character that cannot be inside a URL quoted in text
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>()\[\]{}]*(?:\[[^\s\]]*\][^\s\"'<>(){}]*)?")


def quote_url(url: str) -> str:
    """``url`` fit to quote in a message: no userinfo, no query, no fragment."""
    try:
        parts = urlsplit(url)
    except ValueError:
        # not even splittable: keep nothing past the host's place
        head, sep, rest = url.partition("://")
        return f"{head}{sep}{rest.split('/', 1)[0].rpartition('@')[2].split('?', 1)[0]}/\u2026"
    netloc = parts.netloc.rpartition("@")[2]
    quoted = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return quoted + ("?\u2026" if parts.query else "")


def scrub_urls(text: str) -> str:
    """``text`` with every URL in it replaced by :func:`quote_url`'s form of it."""
    if "://" not in text:
        return text
    return _URL.sub(_quote_match, text)


def _quote_match(m: re.Match[str]) -> str:
    # punctuation that ends a sentence is the text's, not the URL's
    url = m.group(0)
    core = url.rstrip(".,;:!?")
    return quote_url(core) + url[len(core) :]
