"""Stage a body for a hash-first vendor: learn its sha256 and size, keep its bytes re-readable.

A local file (``body.path`` set) is hashed in a worker thread with :func:`hashlib.file_digest` and
re-read from its path on upload. Any other body (S3) is kept in memory up to ``in_memory`` bytes
(1 MiB), or else spooled to a temporary file while it is hashed, so the upload (and its retries)
never read the bucket twice. The event
loop never blocks: every read, write and digest runs in a worker thread.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import BinaryIO

import anyio

from .._content import CHUNK, Hashing
from ..errors import TargetError
from ..sources._base import Body

__all__ = ("FileChunks", "Staged", "stage")


@dataclass(frozen=True, slots=True)
class Staged:
    """The content of one target with its digest and size: on local disk at ``path``, or, for a
    small non-local body, in memory as ``data``."""

    path: str | None
    sha256: str
    size: int
    data: bytes | None = None

    def chunks(self) -> AsyncIterator[bytes]:
        """A fresh stream of the content (call again for each upload attempt)."""
        if self.path is not None:
            return FileChunks(self.path, self.size)
        return _once(self.data or b"")


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _digest(path: str) -> tuple[str, int]:
    try:
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
            return digest, os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise TargetError(f"cannot read: {exc.strerror}", code="unreadable") from None


def _write_all(fd: int, chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:
        n = os.write(fd, view)
        view = view[n:]


@asynccontextmanager
async def stage(
    body: Body, *, spool_dir: str | None = None, in_memory: int = 1 << 20, limit: int | None = None
) -> AsyncIterator[Staged]:
    """Hash (and, for non-local bodies, spool) ``body``; the spool file is removed on exit.
    ``in_memory=0`` always spools, for engines that read the content by path.

    Raises TargetError when the body cannot be read to the end or its size is not the promised one,
    and TargetError ``code="too_large"`` when a non-local body promises more than ``limit`` bytes
    (before reading any) or delivers more (a chunked HTTP answer: at the chunk that passes it, so
    no more than a chunk past the limit is read or spooled).
    Cancellation removes the spool file.
    """
    if body.path is not None:
        sha, size = await anyio.to_thread.run_sync(_digest, body.path)
        if body.size is not None and size != body.size:
            raise TargetError(f"file changed while read ({size} bytes, {body.size} expected)", code="changed")
        yield Staged(body.path, sha, size)
        return
    if limit is not None and body.size is not None and body.size > limit:
        raise TargetError(f"{body.size} bytes is over the limit of {limit} bytes", code="too_large")
    # Small bodies stay in memory (no thread hops, no disk); the first chunk that would take the
    # buffer past ``in_memory`` bytes starts a spool file that receives everything so far.
    hashing = Hashing(body.chunks(), body.size)
    buffered: list[bytes] = []
    held = 0
    spool: tuple[int, str] | None = None
    try:
        async for chunk in hashing:
            if limit is not None and hashing.size > limit:
                raise TargetError(
                    f"over the limit of {limit} bytes (stopped after {hashing.size} bytes)", code="too_large"
                )
            if spool is None and held + len(chunk) <= in_memory:
                buffered.append(chunk)
                held += len(chunk)
                continue
            if spool is None:
                spool = await anyio.to_thread.run_sync(
                    lambda: tempfile.mkstemp(prefix="scanner-spool-", dir=spool_dir)
                )
                for early in buffered:
                    await anyio.to_thread.run_sync(_write_all, spool[0], early)
                buffered = []
            await anyio.to_thread.run_sync(_write_all, spool[0], chunk)
        if spool is None and in_memory > 0:
            yield Staged(None, hashing.sha256, hashing.size, data=b"".join(buffered))
            return
        if spool is None:  # in_memory=0 asks for a file whatever the size, even an empty one
            spool = await anyio.to_thread.run_sync(
                lambda: tempfile.mkstemp(prefix="scanner-spool-", dir=spool_dir)
            )
        yield Staged(spool[1], hashing.sha256, hashing.size)
    finally:
        if spool is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_remove, *spool)


def _remove(fd: int, path: str) -> None:
    os.close(fd)
    with suppress(FileNotFoundError):
        os.unlink(path)


class FileChunks:
    """A local file as an upload body: chunks read in a worker thread, checked against ``size``.

    Raises TargetError ``code="changed"`` as soon as the file turns out shorter or longer than
    ``size`` (it changed after it was hashed), instead of sending a body that breaks its promised
    Content-Length. :meth:`aclose` is safe at any moment, even while a read is in flight on another
    task (aiohttp streams the body from its own writer task): the file is closed when that read
    returns.
    """

    def __init__(self, path: str, size: int, chunk_size: int = CHUNK) -> None:
        self._path = path
        self._size = size
        self._chunk_size = chunk_size
        self._file: BinaryIO | None = None
        self._sent = 0
        self._busy = False
        self._closed = False

    def __aiter__(self) -> FileChunks:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        self._busy = True
        try:
            chunk = await anyio.to_thread.run_sync(self._read)
        finally:
            self._busy = False
            if self._closed:
                self._close_file()
        if self._closed:
            raise StopAsyncIteration
        self._sent += len(chunk)
        if self._sent > self._size or (not chunk and self._sent < self._size):
            self.close()
            raise TargetError(
                f"file changed while read ({self._size} bytes hashed, "
                f"{'more' if self._sent > self._size else self._sent} read for upload)",
                code="changed",
            )
        if not chunk:
            self.close()
            raise StopAsyncIteration
        return chunk

    def _read(self) -> bytes:
        # runs in a worker thread; the file is opened here so a cancelled first read cannot leak it
        try:
            if self._file is None:
                self._file = open(self._path, "rb")  # noqa: SIM115 - closed by close()
            return self._file.read(self._chunk_size)
        except OSError as exc:
            raise TargetError(f"cannot read: {exc.strerror}", code="unreadable") from None

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        """Stop the stream; the file is closed now, or when the read in flight returns."""
        self._closed = True
        if not self._busy:
            self._close_file()

    async def aclose(self) -> None:
        self.close()
