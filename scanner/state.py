"""The state store: what was scanned, at which content version, with which verdict; and where a run
stopped. SQLite in WAL mode, embedded, no server.

Every call runs in a worker thread, one at a time (a capacity limiter of 1 guards the connection), so
SQLite never blocks the event loop. Nothing here is on the hot path of a single target: lookups come
in batches from the pipeline's admission step, and verdicts are buffered and committed in groups.

The verdict line is the commit point. A group commit first makes the output durable (the caller
fsyncs it), then records the group's targets together with the output's byte offset. A run killed
between the two leaves lines past the recorded offset; :meth:`StateStore.reconcile` reads them back
from the output on resume and records them, so no target is scanned twice and no line is duplicated.

Tables:

* ``runs``: one row per output file: the run writing it, whether it finished, the committed offset;
* ``targets``: per (engine, identity): content version, sha256, verdict, time, and the run that wrote
  its line;
* ``content``: per (engine, sha256): the verdict for that content, for the content cache;
* ``pending``: per (engine, identity): the vendor reference (data_id, scan_id, ...) of a submission
  still in flight, so a resumed run polls it instead of submitting again.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import orjson

from .errors import ConfigError
from .model import Finding, Kind, Outcome, Status, Target, Verdict

__all__ = ("Row", "Run", "Snapshot", "StateStore", "content_version", "identity")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    output TEXT PRIMARY KEY, run_id TEXT NOT NULL, engine TEXT NOT NULL,
    started REAL NOT NULL, finished INTEGER NOT NULL DEFAULT 0, committed_offset INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS targets (
    engine TEXT NOT NULL, identity TEXT NOT NULL, version TEXT, sha256 TEXT,
    status TEXT NOT NULL, scanned_at REAL NOT NULL, run_id TEXT,
    PRIMARY KEY (engine, identity)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS content (
    engine TEXT NOT NULL, sha256 TEXT NOT NULL, status TEXT NOT NULL, findings TEXT NOT NULL,
    scanned_at REAL NOT NULL, PRIMARY KEY (engine, sha256)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
    engine TEXT NOT NULL, identity TEXT NOT NULL, reference TEXT NOT NULL, submitted_at REAL NOT NULL,
    PRIMARY KEY (engine, identity)
) WITHOUT ROWID;
"""
_SCHEMA_VERSION = "1"
_LOOKUP = (
    "SELECT identity, version, sha256, status, scanned_at, run_id FROM targets"
    " WHERE engine = ? AND identity IN ({marks})"
)
_ANY_PENDING = "SELECT EXISTS (SELECT 1 FROM pending)"
_LOOKUP_CHUNK = 500  # SQLite's default limit on host parameters is 999 (older builds)
#: verdicts whose content cache entries are worth keeping (a failure says nothing about content)
_CACHEABLE = frozenset({Status.CLEAN, Status.INFECTED, Status.SUSPICIOUS, Status.UNSCANNABLE})


def identity(target: Target) -> str:
    """The stable key of a target across runs: kind, name and, for object versions, the version."""
    base = f"{target.kind.value}:{target.target}"
    return f"{base}#{target.version_id}" if target.version_id and target.kind is Kind.S3 else base


def content_version(target: Target) -> str | None:
    """What tells that a target's content changed without reading it; None when the listing gave
    nothing usable (the target is then always rescanned)."""
    if target.version_id:
        return f"v:{target.version_id}"
    if target.etag:
        return f"e:{target.etag}:{target.size}"
    if target.size is not None and target.mtime is not None:
        return f"m:{target.size}:{target.mtime!r}"
    return None


@dataclass(frozen=True, slots=True)
class Row:
    version: str | None
    sha256: str | None
    status: Status
    scanned_at: float
    run_id: str | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    rows: list[tuple[Any, ...]]
    content: list[tuple[Any, ...]]
    done: list[tuple[str, str]]
    submitted: list[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Run:
    run_id: str
    #: True when this run continues an unfinished one writing the same output
    resumed: bool
    #: where the last group commit left the output; lines past it are reconciled on resume
    committed_offset: int


class StateStore:
    """One SQLite file. Open with :meth:`open`; every method is safe to call from the event loop."""

    def __init__(self, path: str, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection
        self._limiter = anyio.CapacityLimiter(1)
        self._buffer: list[tuple[Any, ...]] = []
        self._content: list[tuple[Any, ...]] = []
        self._done_pending: list[tuple[str, str]] = []
        self._submitted: list[tuple[Any, ...]] = []
        #: whether ``pending`` may hold rows: while it holds none, a commit skips a DELETE per verdict
        self._any_pending = bool(connection.execute(_ANY_PENDING).fetchone()[0])
        self.commits = 0

    def __repr__(self) -> str:
        return f"<StateStore {self.path} buffered={len(self._buffer)} commits={self.commits}>"

    @classmethod
    async def open(cls, path: str) -> StateStore:
        """Open or create the store; raises ConfigError for a path that cannot hold one."""
        return await anyio.to_thread.run_sync(cls._open, path)

    @classmethod
    def _open(cls, path: str) -> StateStore:
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (_SCHEMA_VERSION,))
            elif row[0] != _SCHEMA_VERSION:
                raise ConfigError(f"state store {path}: schema {row[0]} is not {_SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"state store {path}: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"state store {path}: {exc.strerror}") from None
        return cls(path, db)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def aclose(self) -> None:
        await self._run(self._db.close)

    # Runs.

    async def begin_run(self, output: str | None, engine: str) -> Run:
        """Resume the unfinished run writing ``output`` with ``engine``, or start a new one.

        ``output`` None (stdout, S3) can never be resumed: it gets a fresh run every time."""
        result: Run = await self._run(self._begin_run, output, engine)
        return result

    def _begin_run(self, output: str | None, engine: str) -> Run:
        if output is not None:
            row = self._db.execute(
                "SELECT run_id, finished, committed_offset, engine FROM runs WHERE output = ?", (output,)
            ).fetchone()
            if row is not None and not row[1] and row[3] == engine and os.path.exists(output):
                return Run(row[0], True, row[2])
        run = Run(uuid.uuid4().hex, False, 0)
        if output is not None:
            self._db.execute(
                "INSERT OR REPLACE INTO runs (output, run_id, engine, started) VALUES (?, ?, ?, ?)",
                (output, run.run_id, engine, time.time()),
            )
        return run

    async def finish_run(self, output: str | None, run_id: str) -> None:
        """Mark the run complete: the next run writing this output starts afresh."""
        if output is not None:
            await self._run(
                lambda: self._db.execute(
                    "UPDATE runs SET finished = 1 WHERE output = ? AND run_id = ?", (output, run_id)
                )
            )

    # Lookups (batched by the caller).

    async def lookup(self, engine: str, targets: Sequence[Target]) -> dict[str, Row]:
        """The stored row of each target that has one, keyed by :func:`identity`."""
        keys = [identity(t) for t in targets]
        result: dict[str, Row] = await self._run(self._lookup, engine, keys)
        return result

    def _lookup(self, engine: str, keys: list[str]) -> dict[str, Row]:
        found: dict[str, Row] = {}
        for i in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[i : i + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            query = _LOOKUP.format(marks=marks)  # only placeholders are spliced in, never values
            for key, version, sha, status, at, run_id in self._db.execute(query, (engine, *chunk)):
                found[key] = Row(version, sha, Status(status), at, run_id)
        return found

    async def cached(self, engine: str, sha256: str, max_age: float) -> Outcome | None:
        """The content cache: a verdict for this exact content younger than ``max_age`` seconds."""
        row = await self._run(
            lambda: self._db.execute(
                "SELECT status, findings, scanned_at FROM content WHERE engine = ? AND sha256 = ?",
                (engine, sha256),
            ).fetchone()
        )
        if row is None or time.time() - row[2] > max_age:
            return None
        findings = tuple(Finding(**f) for f in orjson.loads(row[1]))
        return Outcome(Status(row[0]), findings, sha256=sha256, cached=True)

    async def pending(self, engine: str, target: Target) -> Mapping[str, Any] | None:
        """The vendor reference of a submission a killed run left in flight, if any."""
        row = await self._run(
            lambda: self._db.execute(
                "SELECT reference FROM pending WHERE engine = ? AND identity = ?", (engine, identity(target))
            ).fetchone()
        )
        return None if row is None else orjson.loads(row[0])

    def submitted(self, engine: str, target: Target, reference: Mapping[str, Any]) -> None:
        """Remember a vendor submission; written with the next group commit (a crash before that
        costs at most one resubmission per job in flight)."""
        self._submitted.append(
            (engine, identity(target), orjson.dumps(dict(reference)).decode(), time.time())
        )

    # Recording (buffered; written by commit()).

    def record(self, verdicts: Iterable[Verdict], run_id: str) -> None:
        now = time.time()
        for v in verdicts:
            key = identity(v.target)
            self._buffer.append(
                (v.engine, key, content_version(v.target), v.sha256, v.status.value, now, run_id)
            )
            self._done_pending.append((v.engine, key))
            if v.sha256 and v.status in _CACHEABLE and not v.cached:
                findings = orjson.dumps([_finding(f) for f in v.findings]).decode()
                self._content.append((v.engine, v.sha256, v.status.value, findings, now))

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def take(self) -> Snapshot:
        """Everything recorded since the last take, to be committed later as one transaction."""
        snapshot = Snapshot(self._buffer, self._content, self._done_pending, self._submitted)
        self._buffer, self._content, self._done_pending, self._submitted = [], [], [], []
        return snapshot

    async def commit(
        self,
        output: str | None = None,
        run_id: str | None = None,
        offset: int | None = None,
        snapshot: Snapshot | None = None,
    ) -> None:
        """Write ``snapshot`` (default: everything buffered) in one transaction, with the output's
        committed offset, which must not count lines whose targets the snapshot lacks."""
        snap = self.take() if snapshot is None else snapshot
        await self._run(
            self._commit, snap.rows, snap.content, snap.done, snap.submitted, output, run_id, offset
        )
        self.commits += 1

    def _commit(
        self,
        rows: list[tuple[Any, ...]],
        content: list[tuple[Any, ...]],
        done: list[tuple[str, str]],
        submitted: list[tuple[Any, ...]],
        output: str | None,
        run_id: str | None,
        offset: int | None,
    ) -> None:
        db = self._db
        any_pending = self._any_pending or bool(submitted)
        db.execute("BEGIN")
        try:
            db.executemany("INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?)", submitted)
            db.executemany("INSERT OR REPLACE INTO targets VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            db.executemany("INSERT OR REPLACE INTO content VALUES (?, ?, ?, ?, ?)", content)
            if any_pending:
                db.executemany("DELETE FROM pending WHERE engine = ? AND identity = ?", done)
                any_pending = bool(db.execute(_ANY_PENDING).fetchone()[0])
            if output is not None and offset is not None:
                db.execute(
                    "UPDATE runs SET committed_offset = ? WHERE output = ? AND run_id = ?",
                    (offset, output, run_id),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._any_pending = any_pending

    async def reconcile(self, output: str, offset: int, run_id: str) -> int:
        """Record the lines a killed run wrote past its last commit; returns how many."""
        count: int = await self._run(self._reconcile, output, offset, run_id)
        return count

    def _reconcile(self, output: str, offset: int, run_id: str) -> int:
        rows = []
        now = time.time()
        with open(output, "rb") as f:
            f.seek(offset)
            for line in f:
                if not line.endswith(b"\n"):
                    break  # a torn tail; the sink cuts it off when it opens for append
                try:
                    obj = orjson.loads(line)
                    target = Target(
                        Kind(obj["kind"]),
                        obj["target"],
                        version_id=obj.get("version_id"),
                        etag=obj.get("etag"),
                    )
                    rows.append(
                        (
                            obj["engine"],
                            identity(target),
                            None,
                            obj.get("sha256"),
                            obj["verdict"],
                            now,
                            run_id,
                        )
                    )
                except (orjson.JSONDecodeError, KeyError, ValueError, TypeError):
                    continue
        if rows:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO targets VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        return len(rows)


def _finding(f: Finding) -> dict[str, str]:
    return {
        k: v for k, v in (("name", f.name), ("engine", f.engine), ("severity", f.severity)) if v is not None
    }
