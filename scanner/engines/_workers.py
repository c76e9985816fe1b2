"""A pool of worker processes that answer length-prefixed frames over their stdin and stdout.

Why not :class:`concurrent.futures.ProcessPoolExecutor`: every multiprocessing start method makes the
child import the parent's ``__main__`` (here the whole CLI, then with pydantic), which cost more than
a second before the first scan. These workers are ``python -m MODULE`` processes that import only what
they need (about 0.1 s), started with :func:`anyio.open_process` so starting never blocks the loop.

Protocol, both ways: a frame is a 4-byte big-endian length and that many bytes. The parent sends the
``init`` frames, the worker answers one frame when it is ready, then each request frame gets exactly
one answer frame, in order. A worker may hold several requests at once (pipelining keeps it busy
while the parent reads the previous answer).

A worker that dies fails the requests it held with :class:`WorkerDied` and is replaced. A worker is
to ignore SIGINT and SIGTERM, which may reach the whole process group, and die with its parent (the
YARA worker does): the parent alone decides how to stop, by closing a worker's stdin or by SIGKILL.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import Self

import anyio
from anyio.abc import Process, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

from ..errors import EngineError, ours
from ._frames import LEN as _LEN

__all__ = ("WorkerDied", "WorkerPool")

log = logging.getLogger("scanner.engines.workers")


class WorkerDied(EngineError):
    code = "worker_died"


class _Worker:
    def __init__(self, process: Process) -> None:
        self.process = process
        assert process.stdout is not None
        assert process.stdin is not None
        self.reader = BufferedByteReceiveStream(process.stdout)
        self.pending: deque[_Call] = deque()
        self.lock = anyio.Lock()
        self.alive = True

    async def receive(self) -> bytes:
        head = await self.reader.receive_exactly(4)
        return await self.reader.receive_exactly(_LEN.unpack(head)[0])

    async def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        async with self.lock:
            await self.process.stdin.send(_LEN.pack(len(data)) + data)


class _Call:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: bytes | None = None
        self.error: BaseException | None = None


class WorkerPool:
    """``size`` processes running ``python -m module``; use as an async context manager."""

    def __init__(self, module: str, init: Sequence[bytes], size: int) -> None:
        self._argv = [sys.executable, "-m", module]
        self._init = tuple(init)
        self._size = size
        self._workers: list[_Worker] = []
        self._tg: TaskGroup | None = None
        self._closing = False
        self._spawning = 0
        self._joined = anyio.Event()
        self.restarts = 0

    def __repr__(self) -> str:
        busy = sum(len(w.pending) for w in self._workers)
        name = self._argv[-1]
        return f"<WorkerPool {name} workers={len(self._workers)} pending={busy} restarts={self.restarts}>"

    async def __aenter__(self) -> Self:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        try:
            try:
                async with anyio.create_task_group() as starting:
                    for _ in range(self._size):
                        starting.start_soon(self._spawn)
            except ExceptionGroup as group:
                # every worker fails the same way (a permission, a missing module): report the first
                # cause as itself, not as "unhandled errors in a TaskGroup"
                first = ours(group)
                if first is None:
                    raise
                raise first from None
        except BaseException as exc:
            self._closing = True
            with anyio.CancelScope(shield=True):
                # the workers that did start, or they would outlive the failed run
                async with anyio.create_task_group() as stopping:
                    for worker in list(self._workers):
                        stopping.start_soon(_stop, worker)
            tg.cancel_scope.cancel()
            await tg.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._tg is not None
        self._closing = True
        with anyio.CancelScope(shield=True):
            # all at once: each worker takes a few tens of ms to exit, and a run waits for the last
            async with anyio.create_task_group() as stopping:
                for worker in list(self._workers):
                    stopping.start_soon(_stop, worker)
        # the readers are done or waiting on dead pipes; the group is exited outside the shield,
        # in the scope it was entered in
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)

    async def _spawn(self) -> None:
        self._spawning += 1
        try:
            await self._start_one()
        finally:
            self._spawning -= 1
            # wake callers waiting for a worker, whether this one made it or not
            self._joined.set()
            self._joined = anyio.Event()

    async def _start_one(self) -> None:
        try:
            process = await anyio.open_process(
                self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
        except OSError as exc:
            raise EngineError(f"cannot start worker process {self._argv[-1]}: {exc}") from None
        worker = _Worker(process)
        try:
            for frame in self._init:
                await worker.send(frame)
            await worker.receive()  # the ready frame: the worker loaded what init gave it
        except BaseException as exc:
            failed = isinstance(
                exc, (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, OSError)
            )
            # Close it whether it died or we were cancelled (another worker failed): aclose, not just
            # wait, since a pipe left open keeps uvloop's loop from closing ("resource busy").
            with anyio.CancelScope(shield=True):
                if not failed:
                    with contextlib.suppress(OSError):
                        process.kill()
                await process.aclose()
            if failed:
                message = (
                    f"worker process {self._argv[-1]} failed to start (exit status {process.returncode})"
                )
                raise EngineError(message) from None
            raise
        self._workers.append(worker)
        assert self._tg is not None
        self._tg.start_soon(self._read, worker)

    async def _read(self, worker: _Worker) -> None:
        try:
            while True:
                frame = await worker.receive()
                call: _Call = worker.pending.popleft()
                call.result = frame
                call.done.set()
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, OSError):
            pass
        worker.alive = False
        if worker in self._workers:
            self._workers.remove(worker)
        code = await worker.process.wait()
        while worker.pending:
            call = worker.pending.popleft()
            call.error = WorkerDied(f"a worker process died (exit status {code}) while scanning")
            call.done.set()
        if self._closing:
            return
        log.error("worker process %s exited with status %s; starting another", self._argv[-1], code)
        self.restarts += 1
        try:
            await self._spawn()
        except EngineError as exc:
            log.error("%s", exc)

    async def call(self, request: bytes) -> bytes:
        """Send one request to the least busy worker and wait for its answer. Raises WorkerDied."""
        while not self._workers:
            if not self._spawning:
                raise WorkerDied("no worker process is running")
            await self._joined.wait()  # a replacement is starting
        worker = min(self._workers, key=lambda w: len(w.pending))
        call = _Call()
        worker.pending.append(call)
        try:
            await worker.send(request)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            raise WorkerDied("a worker process stopped taking requests") from None
        await call.done.wait()
        if call.error is not None:
            raise call.error
        assert call.result is not None
        return call.result


async def _stop(worker: _Worker, grace: float = 5.0) -> None:
    """Close the worker's stdin (it exits at end of input); kill it if it has not gone in ``grace``,
    or at once if it still holds requests: the pool closes once its callers are done, so nobody
    waits for those answers (jobs abandoned when a drain ran out of time), and the worker takes no
    signal but SIGKILL (see :func:`scanner.engines._yara_worker._obey_parent_only`)."""
    process = worker.process
    if process.stdin is not None:
        with contextlib.suppress(anyio.BrokenResourceError, OSError):
            await process.stdin.aclose()
    if not worker.pending:
        with anyio.move_on_after(grace):
            await process.wait()
            return
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.wait()
