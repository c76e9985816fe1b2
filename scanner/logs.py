"""Logging to stderr, with every configured secret redacted from every record.

Adapters already keep secrets out of their messages; this filter is the backstop: whatever a
third-party library or an exception message might echo, a registered secret is replaced by
``[redacted]`` before a byte reaches stderr.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

import pydantic

__all__ = ("Redactor", "configure", "redact", "register_secrets", "secrets_in")

_MIN_SECRET = 4  # shorter values would redact ordinary words


class Redactor(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self._secrets: list[str] = []

    def add(self, secrets: Iterable[str]) -> None:
        for s in secrets:
            if len(s) >= _MIN_SECRET and s not in self._secrets:
                self._secrets.append(s)
        self._secrets.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self._secrets:
            if s in text:
                text = text.replace(s, "[redacted]")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            message = record.getMessage()
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.msg, record.args = self(message), None
            if record.exc_text:
                record.exc_text = self(record.exc_text)
        return True


_redactor = Redactor()


def redact(text: str) -> str:
    """Apply the process-wide redactor to text bound for a human (the CLI's error lines)."""
    return _redactor(text)


def secrets_in(model: pydantic.BaseModel) -> list[str]:
    """Every SecretStr value inside a validated config model, nested models included."""
    found: list[str] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, pydantic.SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, pydantic.BaseModel):
            found.extend(secrets_in(value))
    return found


def register_secrets(secrets: Iterable[str]) -> None:
    _redactor.add(secrets)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.levelname = record.levelname.lower()
        return super().format(record)


def configure(verbosity: int) -> None:
    """-q: errors only; default: warnings; -v: info; -vv: debug. Always stderr."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("scanner: %(levelname)s: %(message)s"))
    handler.addFilter(_redactor)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if verbosity < 2 else logging.DEBUG)
    logging.getLogger("scanner").setLevel(level)
