"""NDJSON to a file or stdout, whole lines only.

Each batch of lines goes to the OS in ``write(2)`` calls from a worker thread (a slow pipe never
stalls the event loop). If a write fails part-way on a regular file (disk full), the file is cut back
to the last whole line before the error is raised, so a crash or a full disk never leaves a torn
line for the next run to trip on.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Sequence

import anyio

from ..errors import SinkError
from ..model import Verdict, encode_verdict

__all__ = ("NdjsonSink", "claim")


def claim(path: str) -> int | None:
    """Take ``path`` for this run: an exclusive ``flock`` on it, held by the returned descriptor
    until it is closed or the process ends (a crash included, so a stale lock cannot outlive a run).

    Two runs on one output would interleave their lines, and with a state store both would take the
    unfinished run there as theirs to resume. Claim the output before anything reads or cuts it.
    Raises SinkError when another run holds it. A file system without locks (some NFS mounts)
    gives no protection rather than no run: None is returned."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        raise SinkError(f"cannot open output {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise SinkError(
                f"another scanner run is writing {path}; wait for it or pick another --output"
            ) from None
        return None
    return fd


class NdjsonSink:
    """Lines to ``path`` (``None`` or ``"-"`` for stdout).

    ``append`` keeps what the file holds (a resumed run); otherwise the file is truncated on open.
    ``durable`` fsyncs after each batch, making a written line survive a power cut, not just a crash.
    """

    durable_lines = True

    def __init__(self, path: str | None, *, append: bool = False, durable: bool = False) -> None:
        self._path = None if path in (None, "-") else path
        self._append = append
        self._durable = durable
        self._fd: int | None = None
        self._regular = False
        self.lines = 0

    @property
    def name(self) -> str:
        return "stdout" if self._path is None else self._path

    def __repr__(self) -> str:
        return f"<NdjsonSink {self.name} lines={self.lines}>"

    def open(self) -> None:
        """Open the output now, so a bad path fails before any scanning. Raises SinkError."""
        if self._fd is not None:
            return
        if self._path is None:
            self._fd = 1
        else:
            flags = os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
            # appending reads the tail back to cut a torn last line, so it needs read access too
            flags |= (os.O_RDWR | os.O_APPEND) if self._append else (os.O_WRONLY | os.O_TRUNC)
            try:
                self._fd = os.open(self._path, flags, 0o644)
            except OSError as exc:
                raise SinkError(f"cannot open output {self._path}: {exc.strerror}") from None
        try:
            self._regular = stat.S_ISREG(os.fstat(self._fd).st_mode)
        except OSError as exc:
            raise SinkError(f"cannot use output {self.name}: {exc.strerror}") from None
        if self._regular and self._append:
            self._repair_tail()

    def _repair_tail(self) -> None:
        # A run killed by SIGKILL mid-write (or an older tool) may have left a partial last line:
        # cut the file back to just after its last newline.
        assert self._fd is not None
        end = os.fstat(self._fd).st_size
        if end == 0 or os.pread(self._fd, 1, end - 1) == b"\n":
            return
        pos = end
        while pos > 0:
            start = max(0, pos - (1 << 16))
            cut = os.pread(self._fd, pos - start, start).rfind(b"\n")
            if cut >= 0:
                os.ftruncate(self._fd, start + cut + 1)
                return
            pos = start
        os.ftruncate(self._fd, 0)

    async def write(self, verdicts: Sequence[Verdict], /) -> None:
        if self._fd is None:
            self.open()
        data = b"".join([encode_verdict(v) for v in verdicts])
        await anyio.to_thread.run_sync(self._write_all, data)
        self.lines += len(verdicts)

    def _write_all(self, data: bytes) -> None:
        fd = self._fd
        assert fd is not None
        start = os.lseek(fd, 0, os.SEEK_END) if self._regular else -1
        view = memoryview(data)
        try:
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if self._durable and self._regular:
                os.fsync(fd)
        except OSError as exc:
            if start >= 0 and view.nbytes != len(data):
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
            raise SinkError(_describe(exc, self.name)) from None

    @property
    def path(self) -> str | None:
        """The output file, when it is a regular file that a later run can resume."""
        return self._path if self._regular else None

    def position(self) -> int | None:
        """Bytes in the file now (None for a pipe). Exact between writes: the writer is the only one."""
        if self._fd is None or not self._regular:
            return None
        return os.fstat(self._fd).st_size

    async def fsync(self) -> None:
        """Make every line handed over so far durable."""
        fd = self._fd
        if fd is None or not self._regular:
            return
        try:
            await anyio.to_thread.run_sync(os.fsync, fd)
        except OSError as exc:
            raise SinkError(_describe(exc, self.name)) from None

    async def aclose(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._regular:
                await anyio.to_thread.run_sync(os.fsync, fd)
        except OSError as exc:
            raise SinkError(_describe(exc, self.name)) from None
        finally:
            if fd != 1:
                os.close(fd)

    async def abort(self) -> None:
        await self.aclose()


def _describe(exc: OSError, name: str) -> str:
    if exc.errno == errno.EPIPE:
        return f"output {name} was closed by its reader"
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device holding {name}"
    return f"cannot write to {name}: {exc.strerror}"
