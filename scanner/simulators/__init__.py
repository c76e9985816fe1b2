"""Vendor simulators: in-process aiohttp apps that follow each vendor's public documents.

Tests and benchmarks drive the real engines against them over 127.0.0.1, and users can rehearse a
job's config with ``scanner simulate VENDOR --port N`` before spending real quota. Each module
defines ``make_app(**options) -> aiohttp.web.Application`` and ``OPTIONS``, a mapping of option name
to (type, default, help) that the ``simulate`` command takes as ``--set NAME=VALUE``. The table and
its ``NOTES`` live in a light module of their own, so ``scanner --help`` lists them without
importing aiohttp.
"""

from __future__ import annotations

import importlib
import textwrap
from collections.abc import Mapping
from types import ModuleType
from typing import Any

__all__ = ("help_text", "load", "names", "options")

#: vendor -> (the app's module, the module holding its OPTIONS and NOTES)
_MODULES: dict[str, tuple[str, str]] = {
    "metadefender": ("scanner.simulators.metadefender", "scanner.simulators._metadefender_options"),
}

_WIDTH = 100


def names() -> tuple[str, ...]:
    return tuple(sorted(_MODULES))


def _entry(name: str) -> tuple[str, str]:
    from ..errors import UsageError

    try:
        return _MODULES[name]
    except KeyError:
        known = ", ".join(names()) or "none yet"
        raise UsageError(f"unknown simulator {name!r} (known: {known})") from None


def load(name: str) -> ModuleType:
    """The simulator's module (imports aiohttp). Raises UsageError for an unknown name."""
    return importlib.import_module(_entry(name)[0])


def options(name: str) -> Mapping[str, tuple[type, Any, str]]:
    """The simulator's option table, without importing its app. Raises UsageError for an unknown name."""
    table: Mapping[str, tuple[type, Any, str]] = importlib.import_module(_entry(name)[1]).OPTIONS
    return table


def help_text() -> str:
    """Every simulator's ``--set`` options (name, type, default, meaning) and notes, for ``--help``."""
    blocks = []
    for vendor in names():
        module = importlib.import_module(_entry(vendor)[1])
        table: Mapping[str, tuple[type, Any, str]] = module.OPTIONS
        lines = [f"{vendor} options (--set NAME=VALUE):"]
        for opt, (kind, default, meaning) in table.items():
            shown = '""' if default == "" else str(default)
            head = f"  {opt:<18}{kind.__name__:<6}default {shown:<10}"
            lines += textwrap.wrap(meaning, _WIDTH, initial_indent=head, subsequent_indent=" " * len(head))
        lines.append("")
        lines += textwrap.wrap(module.NOTES, _WIDTH, initial_indent="  ", subsequent_indent="  ")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
