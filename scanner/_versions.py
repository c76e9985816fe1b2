"""The content version of a local file: one spelling for the walk, the state store and the engines.

Import-light (a YARA worker process imports it): nothing but the function.
"""

from __future__ import annotations

import os

__all__ = ("file_version",)


def file_version(st: os.stat_result) -> str:
    """``f:SIZE:MTIME_NS:CTIME_NS:INODE``: the same string whether the walk stat()ed the file or an
    engine fstat()ed the descriptor it read, so a run of either kind recognises the other's rows.

    The ctime is there because no one can set it back (``touch -d`` and restores can the mtime), the
    inode because a file renamed over another is another file; the device is not, since some file
    systems renumber theirs at each mount, which would rescan everything."""
    return f"f:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"
