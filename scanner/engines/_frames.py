"""Length-prefixed frames, the worker side: stdlib only, so a worker process starts fast.

A frame is a 4-byte big-endian length and that many bytes (see :mod:`scanner.engines._workers`).
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: workers never need it
if TYPE_CHECKING:
    from typing import BinaryIO

__all__ = ("LEN", "read_frame", "write_frame")

LEN = struct.Struct(">I")


def read_frame(stream: BinaryIO) -> bytes | None:
    """Worker side: the next frame from the parent, or None at end of input."""
    head = stream.read(4)
    if len(head) < 4:
        return None
    (n,) = LEN.unpack(head)
    data = stream.read(n)
    if len(data) < n:
        return None
    return data


def write_frame(stream: BinaryIO, data: bytes) -> None:
    """Worker side: one frame to the parent, flushed."""
    stream.write(LEN.pack(len(data)))
    stream.write(data)
    stream.flush()
