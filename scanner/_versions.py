"""The content version of a local file: one spelling for the walk, the state store and the engines.

Import-light (a YARA worker process imports it): nothing but the function.
"""

from __future__ import annotations

__all__ = ("file_version",)


def file_version(size: int, mtime: float) -> str:
    """``m:SIZE:MTIME``: the same string whether the walk stat()ed the file or an engine fstat()ed
    the descriptor it read, so a run of either kind recognises the other's rows."""
    return f"m:{size}:{mtime!r}"
