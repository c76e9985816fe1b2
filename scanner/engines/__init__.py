"""Engine registry: a name maps to the module that implements it.

Each engine module defines ``Config`` (a :class:`scanner.config.EngineConfig` model for its
``[engines.NAME]`` table) and ``create(config) -> Engine``. Modules are imported only when named, so
a run with the embedded engine never imports an HTTP vendor's code, and vice versa.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see the worker note below)
if TYPE_CHECKING:
    from typing import Any

    from ..config import Settings
    from ._base import Engine

# Worker processes (python -m scanner.engines._yara_worker) import this package before their own
# module, so it imports nothing at the top: the records, the protocols and scanner.config are loaded
# by the functions that need them (40 ms of CPU off every worker's start on the 2-core dev box).

__all__ = ("DEFAULT_ENGINE", "Engine", "build", "names", "validate_all")

DEFAULT_ENGINE = "yara"

_MODULES: dict[str, str] = {
    "metadefender": "scanner.engines.metadefender",
    "yara": "scanner.engines.yara",
}


def names() -> tuple[str, ...]:
    return tuple(sorted(_MODULES))


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from ._base import Engine

        return Engine
    raise AttributeError(f"module 'scanner.engines' has no attribute {name!r}")


def _module(name: str) -> ModuleType:
    try:
        dotted = _MODULES[name]
    except KeyError:
        from ..errors import ConfigError

        raise ConfigError(f"unknown engine {name!r} (known: {', '.join(names())})") from None
    return importlib.import_module(dotted)


def build(name: str, settings: Settings) -> Engine:
    """Validate ``[engines.NAME]`` and construct the engine (no I/O until it is entered)."""
    from ..config import validate_section
    from ..logs import register_secrets, secrets_in

    mod = _module(name)
    config = validate_section(mod.Config, settings.engine_table(name), f"engines.{name}")
    register_secrets(secrets_in(config))
    engine: Engine = mod.create(config)
    return engine


def validate_all(settings: Settings) -> None:
    """Reject unknown engine tables and invalid keys in every table, not just the chosen engine's."""
    from ..config import validate_section

    for name, table in settings.engines.items():
        validate_section(_module(name).Config, table, f"engines.{name}")
