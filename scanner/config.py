"""TOML config -> validated, frozen settings.

* ``${VAR}`` in any string is replaced from the environment; a missing variable is a
  :class:`~scanner.errors.ConfigError` naming the key and the variable. ``$$`` is a literal ``$``.
* Each ``[engines.NAME]`` table is validated by that engine's own pydantic model (the registry in
  :mod:`scanner.engines` knows them), so a new engine brings its keys with it. Unknown engines and
  unknown keys are errors, never silently ignored.
* Secrets are ``pydantic.SecretStr``: every repr, log and error shows ``**********``. Validation
  errors are rebuilt from locations and messages only, never from the offending input.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pydantic

from .errors import ConfigError

__all__ = ("EngineConfig", "Settings", "format_validation_error", "interpolate", "load", "validate_section")

M = TypeVar("M", bound=pydantic.BaseModel)
_TOP_LEVEL = frozenset({"engines", "s3"})
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Settings:
    """The parsed config file: raw, interpolated engine tables keyed by engine name."""

    path: str | None = None
    engines: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: the ``[s3]`` table (endpoint_url, region, ...), validated by the S3 module that uses it
    s3: Mapping[str, Any] = field(default_factory=dict)

    def engine_table(self, name: str) -> Mapping[str, Any]:
        return self.engines.get(name, {})


def load(path: str | os.PathLike[str] | None, *, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and interpolate a config file. ``None`` gives empty settings (every engine's defaults)."""
    if path is None:
        return Settings()
    env = os.environ if environ is None else environ
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {p}: not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p}: not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - _TOP_LEVEL)
    if unknown:
        raise ConfigError(
            f"config file {p}: unknown key {unknown[0]!r} (expected: [engines.NAME] tables and [s3])"
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
    return Settings(path=str(p), engines=out, s3=interpolate(s3, env, "s3"))


def interpolate(value: Any, environ: Mapping[str, str], where: str) -> Any:
    """Replace ``${VAR}`` in every string of a TOML value; ``where`` is the key path for errors."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            var = m.group(1)
            if var not in environ:
                raise ConfigError(f"{where}: environment variable {var} is not set")
            return environ[var]

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: interpolate(v, environ, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, environ, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def validate_section(model: type[M], table: Mapping[str, Any], where: str) -> M:
    """Validate one table with a pydantic model, turning errors into one ConfigError line."""
    try:
        return model.model_validate(dict(table))
    except pydantic.ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from None


def format_validation_error(exc: pydantic.ValidationError, where: str) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(x) for x in (where, *err["loc"]))
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


class EngineConfig(pydantic.BaseModel):
    """Base for every ``[engines.NAME]`` model: frozen, unknown keys rejected."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
