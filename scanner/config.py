"""TOML config -> validated, frozen settings.

* ``${VAR}`` in any string is replaced from the environment; a missing variable is a
  :class:`~scanner.errors.ConfigError` naming the key and the variable. ``$$`` is a literal ``$``;
  any other ``${`` (unclosed, or not a variable name) is an error, never sent on as written.
* Each ``[engines.NAME]`` table is validated by that engine's own model, a frozen ``msgspec.Struct``
  (the registry in :mod:`scanner.engines` knows them), so a new engine brings its keys with it.
  Unknown engines and unknown keys are errors, never silently ignored. Validation is lax about
  strings, so ``timeout = "${TIMEOUT}"`` still gives an int.
* Secrets are :class:`Secret`: every repr, log and error shows ``**********``. An empty secret, or
  one with a control character (a newline from a key file; Unicode category Cc) or a U+2028/U+2029
  line separator, is rejected before any vendor sees it:
  it could only earn a 401, and repeated 401s get the address blocked. Validation errors are
  rebuilt from the key path and msgspec's message, which never quotes a secret (custom types such as
  :class:`Secret` raise messages without the input).
* The ``[urls]`` table (:class:`UrlsConfig`) says how ``url`` targets are fetched.
* Sizes are :class:`ByteSize`: ``4096``, ``"10MB"`` (10**6), ``"1.5GiB"`` (2**30), at most 1 PiB.
* The file must be a regular file of at most 1 MiB (a fifo or a device is refused at once, never
  read), and no value may nest more than 16 tables or arrays deep. Every numeric setting of every
  engine and of ``[s3]`` has a maximum, in its struct: a typo such as ``processes = 1000000`` is a
  config error, not a machine brought down.

msgspec, not pydantic: it imports in milliseconds and validates in C, and a run's fixed cost was a
third of a second of pydantic import and schema building.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import urlsplit

import msgspec

from .errors import ConfigError

__all__ = (
    "MAX_CONFIG_BYTES",
    "MAX_DEPTH",
    "ByteSize",
    "EngineConfig",
    "HttpUrl",
    "Secret",
    "Settings",
    "UrlsConfig",
    "format_validation_error",
    "interpolate",
    "load",
    "validate_section",
)

M = TypeVar("M", bound=msgspec.Struct)
_TOP_LEVEL = frozenset({"engines", "s3", "urls"})
#: a config file is a page of settings: anything larger is the wrong file (a log, an image)
MAX_CONFIG_BYTES = 1 << 20
#: tables and arrays inside one value (``[engines.yara]`` itself is depth 0): settings need two
MAX_DEPTH = 16
#: ``$$``, ``${NAME}``, or (group 2) a ``${`` that starts neither: an error, not a literal
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|(\$\{)")


class UrlsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The ``[urls]`` table: how ``url`` targets are fetched (see :mod:`scanner.sources._http_body`)."""

    #: connect to link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10,
    #: fd00:ec2::254), refused by default: a URL list nobody vetted must not reach this machine's
    #: cloud credentials
    allow_link_local: bool = False


@dataclass(frozen=True, slots=True)
class Settings:
    """The parsed config file: raw, interpolated engine tables keyed by engine name."""

    path: str | None = None
    engines: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: the ``[s3]`` table (endpoint_url, region, ...), validated by the S3 module that uses it
    s3: Mapping[str, Any] = field(default_factory=dict)
    urls: UrlsConfig = field(default_factory=UrlsConfig)

    def engine_table(self, name: str) -> Mapping[str, Any]:
        return self.engines.get(name, {})


def load(path: str | os.PathLike[str] | None, *, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and interpolate a config file. ``None`` gives empty settings (every engine's defaults)."""
    if path is None:
        return Settings()
    env = os.environ if environ is None else environ
    p = Path(path)
    try:
        raw = tomllib.loads(_read(p).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {p}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {p}: a value is nested too deeply") from None
    unknown = sorted(set(raw) - _TOP_LEVEL)
    if unknown:
        raise ConfigError(
            f"config file {p}: unknown key {unknown[0]!r} (expected: [engines.NAME] tables, [s3] and [urls])"
        )
    engines = raw.get("engines", {})
    if not isinstance(engines, dict):
        raise ConfigError(f"config file {p}: 'engines' must be a table of [engines.NAME] tables")
    out: dict[str, Mapping[str, Any]] = {}
    for name, table in engines.items():
        if not isinstance(table, dict):
            raise ConfigError(f"config file {p}: engines.{name} must be a table")
        out[name] = interpolate(table, env, f"engines.{name}")
    s3 = raw.get("s3", {})
    if not isinstance(s3, dict):
        raise ConfigError(f"config file {p}: 's3' must be a table")
    urls = raw.get("urls", {})
    if not isinstance(urls, dict):
        raise ConfigError(f"config file {p}: 'urls' must be a table")
    return Settings(
        path=str(p),
        engines=out,
        s3=interpolate(s3, env, "s3"),
        urls=validate_section(UrlsConfig, interpolate(urls, env, "urls"), "urls"),
    )


def _read(p: Path) -> bytes:
    """The bytes of a regular file of at most :data:`MAX_CONFIG_BYTES`; raises ConfigError.

    Opened without blocking, so a fifo is refused at once instead of waiting for a writer; a device
    (``/dev/zero``) or a directory is refused before a byte is read."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError(f"config file {p}: not found") from None
    except OSError as exc:
        raise ConfigError(f"config file {p}: cannot read: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"config file {p}: not a regular file")
        chunks, size = [], 0
        while size <= MAX_CONFIG_BYTES and (chunk := os.read(fd, MAX_CONFIG_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ConfigError(f"config file {p}: cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {p}: larger than {MAX_CONFIG_BYTES >> 20} MiB; is it the right file?")
    return b"".join(chunks)


def interpolate(value: Any, environ: Mapping[str, str], where: str, *, depth: int = 0) -> Any:
    """Replace ``${VAR}`` in every string of a TOML value; ``where`` is the key path for errors.

    A value nested deeper than :data:`MAX_DEPTH` tables and arrays is a ConfigError: no setting
    needs it, and the validators below recurse."""
    if depth > MAX_DEPTH:
        raise ConfigError(f"{where}: nested deeper than {MAX_DEPTH} tables or arrays")
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            if m.group(2):
                # the text is not quoted: it may be a secret with a typo in it
                raise ConfigError(
                    f"{where}: '${{' without a closing '}}' or a variable name "
                    "(write ${NAME}, or $$ for a literal $)"
                )
            var = m.group(1)
            if var not in environ:
                raise ConfigError(f"{where}: environment variable {var} is not set")
            return environ[var]

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: interpolate(v, environ, f"{where}.{k}", depth=depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, environ, f"{where}[{i}]", depth=depth + 1) for i, v in enumerate(value)]
    return value


def validate_section(model: type[M], table: Mapping[str, Any], where: str) -> M:
    """Validate one table with a config struct, turning errors into one ConfigError line."""
    try:
        return msgspec.convert(dict(table), model, strict=False, dec_hook=_decode)
    except msgspec.ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from None


def _decode(kind: type, value: Any) -> Any:
    """msgspec's hook for the custom types below: each parses itself, raising ValueError/TypeError."""
    parse = getattr(kind, "from_config", None)
    if parse is None:
        raise NotImplementedError(kind)
    return parse(value)


_UNKNOWN = "Object contains unknown field `"
_MISSING = "Object missing required field `"


def format_validation_error(exc: msgspec.ValidationError, where: str) -> str:
    """One line, ``where.key.path: message``, from msgspec's "message - at `$.key.path`" text."""
    text = str(exc)
    message, at, path = text.rpartition(" - at `")
    if not at or not path.endswith("`") or not path.startswith("$"):
        message, path = text, "$`"
    loc = where + path[1:-1]
    for prefix, meaning in ((_UNKNOWN, "unknown key"), (_MISSING, "required key missing")):
        if message.startswith(prefix) and message.endswith("`"):
            return f"{loc}.{message[len(prefix) : -1]}: {meaning}"
    # "Expected `int` >= 1" reads better as "expected int >= 1"; msgspec's `object` is TOML's table
    message = message.replace("`object`", "table").replace("`", "")
    return f"{loc}: {message[:1].lower()}{message[1:]}"


class EngineConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base for every ``[engines.NAME]`` struct: frozen, unknown keys rejected.

    Subclasses say ``class Config(EngineConfig, frozen=True, kw_only=True)``: msgspec inherits
    ``frozen`` but mypy does not see it, and ``kw_only`` (a required key may follow keys with
    defaults; constructors take keywords only) is not inherited at all.
    """


#: what a secret may not hold: the control characters (Unicode category Cc: C0, DEL, C1) and the
#: line and paragraph separators, which some HTTP stacks take for line breaks. Not str.isprintable(),
#: which also refuses valid characters a password may hold (U+00A0 no-break space, U+200D zero-width
#: joiner, ...).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class Secret:
    """A string that never shows itself: repr and str are ``**********``; ask with get_secret_value()."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    @classmethod
    def from_config(cls, value: object) -> Self:
        if isinstance(value, cls):
            return value
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {type(value).__name__}")  # never the value
        if not value:
            raise ValueError("empty (is the environment variable set to nothing?)")
        if _CONTROL.search(value):
            # a newline or tab from a key file; never quote the value, nor the character's place
            raise ValueError(
                "contains a control character (a newline or tab?) or a line separator (U+2028, U+2029); "
                "remove it"
            )
        return cls(value)


class ByteSize(int):
    """A number of bytes, from an int or a string with a unit: ``"10MB"`` (10**6), ``"4GiB"`` (2**30).

    At most :attr:`MAX` (1 PiB): more than any file or object a scan can finish, and far less than
    what overflows the 64-bit integers of SQLite and the workers' JSON."""

    MAX: ClassVar[int] = 1 << 50

    #: pydantic's ByteSize units: decimal (KB or K), binary (KiB) and bits (Kbit, Kibit); any case
    UNITS: ClassVar[dict[str, float]] = {
        "b": 1,
        **{p + "b": 10 ** (3 * (i + 1)) for i, p in enumerate("kmgtpe")},
        **{p: 10 ** (3 * (i + 1)) for i, p in enumerate("kmgtpe")},
        **{p + "ib": 2 ** (10 * (i + 1)) for i, p in enumerate("kmgtpe")},
        "bit": 1 / 8,
        **{p + "bit": 10 ** (3 * (i + 1)) / 8 for i, p in enumerate("kmgtpe")},
        **{p + "ibit": 2 ** (10 * (i + 1)) / 8 for i, p in enumerate("kmgtpe")},
    }
    _TEXT: ClassVar[re.Pattern[str]] = re.compile(r"\s*(\d*\.?\d+)\s*([A-Za-z]*)\s*")

    @classmethod
    def from_config(cls, value: object) -> Self:
        """Raises ValueError (TypeError for a value of the wrong type) naming what was expected."""
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise TypeError(f"expected a size (4096, '10MB', '1.5GiB'), got {type(value).__name__}")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError("expected a whole number of bytes")
            value = int(value)
        if isinstance(value, int):
            if value < 0:
                raise ValueError("expected a size >= 0")
            if value > cls.MAX:
                raise ValueError("expected a size of at most 1PiB")
            return cls(value)
        m = cls._TEXT.fullmatch(value)
        if m is None:
            raise ValueError("expected a size such as 4096, '10MB' or '1.5GiB'")
        number, unit = m.groups()
        try:
            multiplier = cls.UNITS[unit.lower() or "b"]
        except KeyError:
            raise ValueError(f"unknown unit {unit!r} (B, KB, MB, GB, KiB, MiB, GiB, ...)") from None
        try:
            size = int(float(number) * multiplier)
        except OverflowError:
            size = cls.MAX + 1
        if size > cls.MAX:
            raise ValueError("expected a size of at most 1PiB")
        return cls(size)


class HttpUrl(str):
    """An ``http://`` or ``https://`` URL with a host, stored without a trailing ``/``."""

    __slots__ = ()

    @classmethod
    def from_config(cls, value: object) -> Self:
        if not isinstance(value, str):
            raise TypeError(f"expected a URL string, got {type(value).__name__}")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return cls(value.rstrip("/"))
