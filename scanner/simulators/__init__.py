"""Vendor simulators: in-process aiohttp apps that follow each vendor's public documents.

Tests and benchmarks drive the real engines against them over 127.0.0.1, and users can rehearse a
job's config with ``scanner simulate VENDOR --port N`` before spending real quota. Each module
defines ``make_app(**options) -> aiohttp.web.Application`` and ``OPTIONS``, a mapping of option name
to (type, default, help) that the ``simulate`` command exposes as ``--option`` flags.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ("load", "names")

_MODULES: dict[str, str] = {
    "metadefender": "scanner.simulators.metadefender",
}


def names() -> tuple[str, ...]:
    return tuple(sorted(_MODULES))


def load(name: str) -> ModuleType:
    from ..errors import UsageError

    try:
        return importlib.import_module(_MODULES[name])
    except KeyError:
        known = ", ".join(names()) or "none yet"
        raise UsageError(f"unknown simulator {name!r} (known: {known})") from None
