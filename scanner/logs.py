"""Logging to stderr, with every configured secret redacted from every record.

Adapters already keep secrets out of their messages (:mod:`scanner._redact`); this filter is the
backstop: whatever a third-party library or an exception message might echo, a registered secret is
replaced by ``***`` before a byte reaches stderr. Every validated engine config registers its secrets.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping

from ._redact import Redactor

__all__ = (
    "RedactingFilter",
    "configure",
    "redact",
    "register_environment_secrets",
    "register_secrets",
    "secrets_in",
)

#: Libraries whose DEBUG records carry credentials: botocore logs the canonical request and the signed
#: headers (``x-amz-security-token``, the access key id, signatures); urllib3 and aiohttp log URLs
#: with presigned queries. They never log below INFO, whatever ``-v`` says.
QUIET_LIBRARIES = ("botocore", "aiobotocore", "boto3", "aioboto3", "s3transfer", "urllib3", "aiohttp")

#: Environment variables that hold AWS secrets (the access key id is an identifier, not a secret)
AWS_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


class RedactingFilter(logging.Filter):
    """The process-wide backstop: every registered secret is masked in every log record."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._redactor = Redactor()

    def add(self, secrets: Iterable[str]) -> None:
        self._secrets.update(secrets)
        self._redactor = Redactor(self._secrets)

    def __call__(self, text: str) -> str:
        return self._redactor.text(text)

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            message = record.getMessage()
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.msg, record.args = self(message), None
            if record.exc_text:
                record.exc_text = self(record.exc_text)
        return True


_redactor = RedactingFilter()


def redact(text: str) -> str:
    """Apply the process-wide redactor to text bound for a human (the CLI's error lines)."""
    return _redactor(text)


def secrets_in(config: object) -> list[str]:
    """Every :class:`~scanner.config.Secret` inside a validated config struct, nested structs included."""
    found: list[str] = []
    for name in getattr(type(config), "__struct_fields__", ()):
        value = getattr(config, name)
        if hasattr(value, "get_secret_value"):
            found.append(value.get_secret_value())
        elif hasattr(type(value), "__struct_fields__"):
            found.extend(secrets_in(value))
    return found


def register_secrets(secrets: Iterable[str]) -> None:
    _redactor.add(secrets)


def register_environment_secrets(environ: Mapping[str, str] | None = None) -> None:
    """Register the AWS secrets of the environment: a backstop behind :data:`QUIET_LIBRARIES`."""
    env = os.environ if environ is None else environ
    register_secrets(env[name] for name in AWS_SECRET_VARIABLES if env.get(name))


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.levelname = record.levelname.lower()
        return super().format(record)


def configure(verbosity: int) -> None:
    """-q: errors only; default: warnings; -v: info; -vv: debug. Always stderr.

    Third-party libraries show warnings, and with -vv their info too, never their debug records
    (see :data:`QUIET_LIBRARIES`). Registers the environment's AWS secrets with the redactor.
    """
    register_environment_secrets()
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("scanner: %(levelname)s: %(message)s"))
    handler.addFilter(_redactor)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if verbosity < 2 else logging.DEBUG)
    logging.getLogger("scanner").setLevel(level)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING if verbosity < 2 else logging.INFO)
