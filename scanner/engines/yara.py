"""The embedded default engine: YARA-X rules, in process, no daemon, no network, no account.

Scanning happens in a small pool of worker processes (yara-x holds the GIL, so threads would stall
the event loop). Local files are scanned by path: the worker opens, hashes and scans each file in one
read. The pipeline hands local files over in batches (:meth:`YaraEngine.scan_batch`, its batch lane),
and each batch is one request to a worker, so small files cost one inter-process hop per batch, not
per file. Bodies that are not local files (S3 objects, URLs) are spooled to a temporary file, hashed
on the way, then scanned by path, one request each: their download costs far more than the hop.

Verdicts: a matching rule gives ``infected``, or ``suspicious`` when its meta says
``verdict = "suspicious"``; the finding's name is the rule's ``threat`` meta, else its identifier.
Files over ``max_file_size`` (default 4 GiB) get ``unscannable`` with ``error.code = "too_large"``;
a scan over ``timeout`` seconds gets ``unscannable``/``scan_timeout``.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Self

import anyio
import orjson
import yara_x
from msgspec import Meta

from ..config import ByteSize, EngineConfig
from ..errors import ConfigError, EngineError, TargetError
from ..model import ErrorInfo, Finding, Kind, Outcome, Status, Target
from ..sources._base import Body, Source
from . import _yara_worker
from ._staging import stage
from ._workers import WorkerDied, WorkerPool

__all__ = ("Config", "YaraEngine", "compile_rules", "create")

log = logging.getLogger("scanner.engines.yara")


class Config(EngineConfig, frozen=True, kw_only=True):
    """``[engines.yara]``"""

    rules: Annotated[tuple[str, ...], Meta(description="extra rule files, or folders of *.yar / *.yara")] = ()
    builtin_rules: Annotated[bool, Meta(description="load the bundled rules (EICAR)")] = True
    max_file_size: Annotated[ByteSize, Meta(description="larger targets are unscannable")] = ByteSize(4 << 30)
    # bounded (a day) so that inf, which JSON cannot carry to the workers, is a config error here
    timeout: Annotated[
        float, Meta(ge=0, le=86400, description="seconds per file (rounded up), at most 86400; 0 = none")
    ] = 60.0
    processes: Annotated[
        int, Meta(ge=0, le=256, description="worker processes, at most 256; 0 = one per CPU")
    ] = 0
    batch_size: Annotated[int, Meta(ge=1, le=4096, description="files per round trip")] = 64
    spool_dir: Annotated[str | None, Meta(description="where non-local bodies are spooled")] = None


def create(config: Config) -> YaraEngine:
    return YaraEngine(config)


def compile_rules(config: Config) -> bytes:
    """Compile the bundled and configured rules; serialized for the workers. Raises ConfigError."""
    sources: list[tuple[str, str]] = []
    if config.builtin_rules:
        text = resources.files("scanner.rules").joinpath("builtin.yar").read_text(encoding="utf-8")
        sources.append(("builtin", text))
    for entry in config.rules:
        p = Path(entry).expanduser()
        if p.is_dir():
            files = sorted(q for q in p.rglob("*") if q.suffix in (".yar", ".yara") and q.is_file())
            if not files:
                raise ConfigError(f"engines.yara.rules: {entry}: no .yar or .yara files in this folder")
        elif p.is_file():
            files = [p]
        else:
            raise ConfigError(f"engines.yara.rules: {entry}: no such file or folder")
        for f in files:
            try:
                sources.append((str(f), f.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"engines.yara.rules: {f}: cannot read: {exc}") from None
    if not sources:
        raise ConfigError("engines.yara: no rules (builtin_rules = false and no rules given)")
    compiler = yara_x.Compiler()  # made only now: no exception above may carry it to another thread
    failure = None
    try:
        for origin, text in sources:
            # One namespace per file, so two files may each define a rule of the same name.
            compiler.new_namespace(_namespace(origin))
            try:
                compiler.add_source(text, origin=origin)
            except yara_x.CompileError as exc:
                failure = f"engines.yara.rules: {origin}: {str(exc).strip().splitlines()[0]}"
                break
        else:
            buf = io.BytesIO()
            compiler.build().serialize_into(buf)
            return buf.getvalue()
    finally:
        # yara-x objects may only be dropped on the thread that made them; an exception's traceback
        # would otherwise keep this one alive until some other thread collects it.
        del compiler
    raise ConfigError(failure)


def _namespace(origin: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in origin) or "rules"


class YaraEngine:
    name = "yara"
    accepts = frozenset({Kind.FILE, Kind.S3, Kind.URL})

    def __init__(self, config: Config) -> None:
        self._config = config
        self.max_size: int | None = int(config.max_file_size)
        self._processes = config.processes or os.cpu_count() or 1
        #: the pipeline hands this many targets at once to :meth:`scan_batch`
        self.batch_size = config.batch_size
        self.default_jobs = 2 * self._processes * config.batch_size
        self._pool: WorkerPool | None = None
        self._stack = AsyncExitStack()
        self._busy = 0
        self._batches = 0
        self._files = 0

    def __repr__(self) -> str:
        return f"<YaraEngine processes={self._processes} busy={self._busy} batches={self._batches}>"

    def statistics(self) -> Mapping[str, Any]:
        return {
            "processes": self._processes,
            "busy": self._busy,
            "batches": self._batches,
            "files": self._files,
        }

    async def __aenter__(self) -> Self:
        serialized = await anyio.to_thread.run_sync(compile_rules, self._config)
        options = orjson.dumps({"timeout": self._config.timeout, "max_size": int(self._config.max_file_size)})
        pool = WorkerPool("scanner.engines._yara_worker", [serialized, options], self._processes)
        async with AsyncExitStack() as stack:
            try:
                self._pool = await stack.enter_async_context(pool)
            except EngineError as exc:
                raise EngineError(f"cannot start the YARA worker processes: {exc}") from None
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.__aexit__(exc_type, exc, tb)
        self._pool = None

    async def scan(self, target: Target, source: Source, /) -> Outcome:
        local = source.local_path(target)
        if local is not None:
            return _outcome(await self._submit(local.path, local.follow_symlinks))
        async with source.open(target) as body:
            if body.path is not None:  # the target's own file
                return _outcome(await self._submit(body.path, True))
            return await self._scan_spooled(body)

    async def scan_batch(self, items: Sequence[tuple[Target, Source]], /) -> list[Outcome | Exception]:
        """Scan many targets in one round trip to a worker: the pipeline's batch lane.

        Local files go to one worker as one request; other bodies are spooled and scanned
        concurrently, one by one. A target's failure is returned in its place, not raised.
        """
        results: list[Outcome | Exception | None] = [None] * len(items)
        where: list[int] = []
        paths: list[str] = []
        follow: list[bool] = []
        remote: list[int] = []
        for i, (target, source) in enumerate(items):
            local = source.local_path(target)
            if local is None:
                remote.append(i)
            else:
                where.append(i)
                paths.append(local.path)
                follow.append(local.follow_symlinks)

        async def one(i: int) -> None:
            try:
                results[i] = await self.scan(*items[i])
            except Exception as exc:
                results[i] = exc

        async with anyio.create_task_group() as tg:
            for i in remote:
                tg.start_soon(one, i)
            if paths:
                answers = await self._call(paths, follow)
                for i, answer in zip(where, answers, strict=True):
                    try:
                        results[i] = _outcome(answer)
                    except TargetError as exc:
                        results[i] = exc
        return [r if r is not None else RuntimeError("no result") for r in results]

    async def _scan_spooled(self, body: Body) -> Outcome:
        size = body.size
        if size is not None and self.max_size is not None and size > self.max_size:
            return _outcome(
                ("err", "too_large", f"{size} bytes is over the limit of {self.max_size} bytes", size)
            )
        try:
            # the limit also stops a body of no promised size (chunked HTTP) early
            async with stage(
                body, spool_dir=self._config.spool_dir, in_memory=0, limit=self.max_size
            ) as staged:
                assert staged.path is not None
                # the spool file's mtime says nothing of the target's version
                return _outcome(await self._submit(staged.path, False), own_file=False)
        except TargetError as exc:
            if exc.code != "too_large":
                raise
            return Outcome(Status.UNSCANNABLE, error=ErrorInfo(exc.message, exc.code))

    async def _submit(self, path: str, follow: bool) -> tuple[Any, ...]:
        (result,) = await self._call([path], [follow])
        return result

    async def _call(self, paths: list[str], follow: list[bool]) -> list[tuple[Any, ...]]:
        """One round trip to the least busy worker: a result per path, in order."""
        if any("\0" in p for p in paths):
            # NUL separates the paths of a request: one inside a path would split it, and the worker
            # would refuse the whole frame. Such a path is its own error; the others still go.
            return await self._call_without_nul(paths, follow)
        assert self._pool is not None
        self._busy += 1
        try:
            answer = await self._pool.call(_yara_worker.encode_request(paths, follow))
        except WorkerDied as exc:
            return [("err", "worker_died", exc.message, None)] * len(paths)
        finally:
            self._busy -= 1
        results: list[tuple[Any, ...]] = orjson.loads(answer)
        self._batches += 1
        self._files += len(paths)
        return results

    async def _call_without_nul(self, paths: list[str], follow: list[bool]) -> list[tuple[Any, ...]]:
        sent = [i for i, p in enumerate(paths) if "\0" not in p]
        answers = await self._call([paths[i] for i in sent], [follow[i] for i in sent]) if sent else []
        results: list[tuple[Any, ...]] = [_NUL_PATH] * len(paths)
        for i, answer in zip(sent, answers, strict=True):
            results[i] = answer
        return results


_UNSCANNABLE = frozenset({"too_large", "scan_timeout"})
_NUL_PATH = ("err", "bad_target", "not a usable path: it holds a NUL byte", None)


def _outcome(result: tuple[Any, ...], *, own_file: bool = True) -> Outcome:
    """The outcome of a worker's result; with ``own_file`` (the path scanned was the target's own
    file, not a spooled copy) it carries the content version the worker saw, that of what it scanned."""
    if result[0] == "err":
        _, code, message, size = result
        if code in _UNSCANNABLE:
            return Outcome(Status.UNSCANNABLE, error=ErrorInfo(message, code), size=size)
        raise TargetError(message, code=code)
    _, size, digest, matches, version = result
    if not own_file:
        version = None
    if not matches:
        return Outcome(Status.CLEAN, sha256=digest, size=size, version=version)
    findings = []
    status = Status.SUSPICIOUS
    for identifier, _namespace, meta in matches:
        findings.append(Finding(name=str(meta.get("threat") or identifier), engine="yara"))
        if meta.get("verdict", "infected") != "suspicious":
            status = Status.INFECTED
    return Outcome(status, findings=tuple(findings), sha256=digest, size=size, version=version)
