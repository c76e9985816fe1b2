"""The state store: what was scanned, at which content version, with which verdict; and where a run
stopped. SQLite in WAL mode, embedded, no server.

Every call runs in a worker thread, one at a time (a capacity limiter of 1 guards the connection), so
SQLite never blocks the event loop. Nothing here is on the hot path of a single target: lookups come
in batches from the pipeline's admission step, and verdicts are buffered and committed in groups.

Rows cross into SQLite as one JSON text per statement, expanded by ``json_each`` in an ``INSERT ...
SELECT`` (writes) or a join (admission), never as one bound row per target: binding seven values a
row through ``executemany`` was most of the store's cost (measured: 7 us a verdict against 2.5-3.5 us
this way, the B-tree insert included). Admission decides in SQL, so a rerun over unchanged targets
fetches nothing back.

The verdict line is the commit point. A group commit first makes the output durable (the caller
fsyncs it), then records the group's targets together with the output's byte offset. A run killed
between the two leaves lines past the recorded offset; :meth:`StateStore.reconcile` reads them back
from the output on resume and records them, so no target is scanned twice and no line is duplicated.

Tables:

* ``runs``: one row per output file: the run writing it, whether it finished, the committed offset;
* ``targets``: per (engine, identity): content version, sha256, verdict, time, and the run that wrote
  its line (``RUN:unchanged`` when that line was only a ``skipped`` / ``unchanged`` one: the row
  keeps the verdict, version and time it had, and the run knows it wrote the line);
* ``content``: per (engine, sha256): the verdict for that content, for the content cache;
* ``pending``: per (engine, identity): the vendor reference (data_id, scan_id, ...) of a submission
  still in flight, so a resumed run polls it instead of submitting again;
* ``unsealed``: the runs writing a report that exists only once it is complete (an S3 object). Their
  rows say what was scanned, but no report holds those lines until the run seals it, so
  ``--skip-unchanged`` never takes them as done: a run killed before it sealed its report is
  scanned again by the next one instead of having its findings reported nowhere.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import orjson

from ._versions import file_version
from .errors import ConfigError, StateError
from .model import ErrorInfo, Finding, Kind, Outcome, Status, Target, Verdict, raw_name

__all__ = (
    "DONE",
    "SCAN",
    "UNCHANGED",
    "UNCHANGED_CODE",
    "Row",
    "Run",
    "Snapshot",
    "StateStore",
    "content_version",
    "file_version",
    "identity",
)

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
CREATE TABLE IF NOT EXISTS unsealed (run_id TEXT PRIMARY KEY) WITHOUT ROWID;
"""
_SCHEMA_VERSION = "1"
# Keys of names with undecodable bytes were once their ``\xNN`` spelling, which a name holding a
# literal backslash-x shares. Opening a store keyed that way drops those rows once (their files are
# rescanned once), so a stale row can never stand for the other name. Same schema: rows are only
# ever dropped, and a store without the mark is simply one that has not been through this yet.
_KEYS_VERSION = "2"
_OLD_KEYS = r"*\x[0-9a-f][0-9a-f]*"  # a GLOB pattern: backslash is no escape there
_KEYS_MARK = "SELECT value FROM meta WHERE key = 'keys'"
_SCHEMA_MARK = "SELECT value FROM meta WHERE key = 'schema'"
#: seconds a statement waits for another connection's write lock (sqlite3's default, made explicit)
_BUSY_TIMEOUT = 5.0
_ANY_PENDING = "SELECT EXISTS (SELECT 1 FROM pending)"
# One statement per (engine, status, sha256 length, has a version, run) in a commit, usually one or
# two. ``value`` is the content version, the sha256, or both run together and cut apart at the
# sha256's length (null when neither). Each mention of ``value`` costs a copy a row, and pulling
# fields out of a JSON array per row cost more still: 2.1-3.0 us a row this way against 3.7 with two
# mentions and 4-5 with arrays (B-tree insert included, 100,000 rows of 60-byte paths).
_UPSERT = (
    "INSERT OR REPLACE INTO targets (engine, identity, version, sha256, status, scanned_at, run_id)"
    " SELECT ?1, key, value, NULL, ?2, ?3, ?4 FROM json_each(?5)"
)
_UPSERT_SHA = (
    "INSERT OR REPLACE INTO targets (engine, identity, version, sha256, status, scanned_at, run_id)"
    " SELECT ?1, key, NULL, value, ?2, ?3, ?4 FROM json_each(?5)"
)
_UPSERT_BOTH = (
    "INSERT OR REPLACE INTO targets (engine, identity, version, sha256, status, scanned_at, run_id)"
    " SELECT ?1, key, substr(value, ?6 + 1), substr(value, 1, ?6), ?2, ?3, ?4 FROM json_each(?5)"
)
_UPSERT_CONTENT = (
    "INSERT OR REPLACE INTO content (engine, sha256, status, findings, scanned_at)"
    " SELECT ?1, key, ?2, value, ?3 FROM json_each(?4)"
)
# A ``skipped`` line for an unchanged target leaves its row as it was but for the run, so the row
# still says what the content was found to be and when, and a resumed run knows the line is written.
_MARK_UNCHANGED = (
    "UPDATE targets SET run_id = ?3 WHERE engine = ?1 AND identity IN (SELECT value FROM json_each(?2))"
)
_DONE_PENDING = "DELETE FROM pending WHERE engine = ?1 AND identity IN (SELECT key FROM json_each(?2))"
_LOOKUP = (
    "SELECT t.identity, t.version, t.sha256, t.status, t.scanned_at, t.run_id"
    " FROM json_each(?2) AS j CROSS JOIN targets AS t ON t.engine = ?1 AND t.identity = j.value"
)  # CROSS JOIN: the batch is the outer loop (left to itself the planner may scan the table instead)
# Admission's decision per listed target, made where the rows are: ``j`` is the batch as
# {identity: content version}. The LEFT JOIN keeps the batch as the outer loop, one primary-key
# probe per target. Fates: 0 scan it, 1 this run already wrote its line, 2 unchanged. The fate most
# targets had in the batch before (``?7``: 0 on a first run, 2 on a rerun) does not come back, so
# neither a first run over a new tree nor a rerun over an unchanged one fetches a row a target; fate 2
# always comes back when its rows are asked for (``?7`` = 0 then). A row written by a run whose
# report is not sealed is in no report, so it is never unchanged (the subquery is evaluated once). A row
# whose ``skipped`` / ``unchanged`` line this run wrote (``?8``) is done too, and says ``skipped``:
# what the line said, which is what counts for the run's exit status.
_TRIAGE = """
SELECT key, fate, version, sha256, status, scanned_at, run_id FROM (
    SELECT j.key AS key, t.version, t.sha256, t.scanned_at, t.run_id,
        CASE WHEN t.run_id = ?8 THEN 'skipped' ELSE t.status END AS status, CASE
        WHEN t.identity IS NULL THEN 0
        WHEN t.run_id = ?2 OR t.run_id = ?8 THEN 1
        WHEN ?3 AND t.version = j.value AND t.status NOT IN ('error', 'skipped') AND t.scanned_at > ?4
            AND NOT (?5 AND t.status IN ('infected', 'suspicious', 'vulnerable'))
            AND t.run_id NOT IN (SELECT run_id FROM unsealed) THEN 2
        ELSE 0 END AS fate
    FROM json_each(?6) AS j LEFT JOIN targets AS t ON t.engine = ?1 AND t.identity = j.key
) WHERE fate <> ?7 OR (fate = 2 AND status IN ('infected', 'suspicious', 'vulnerable'))
"""
_PREFIX = {kind: f"{kind.value}:" for kind in Kind}
#: the key prefix of a name with undecodable bytes, keyed by their hex: never a ``kind:`` prefix
_RAW_PREFIX = {kind: f"{kind.value}-bytes:" for kind in Kind}
#: ``error.code`` of a target made of a malformed input line (a list's or stdin's): it is named by
#: whatever the line said, so its key has a prefix of its own, which no real target's key has
_BAD_TARGET = "bad_target"
_BAD_PREFIX = "bad:"
#: ``error.code`` of the ``skipped`` line :class:`~scanner.resume.Admission` writes for an unchanged
#: target (with ``--emit-skipped``): recording it must not replace the verdict it stands for
UNCHANGED_CODE = "unchanged"
#: what :meth:`StateStore.triage` says of a listed target
SCAN, DONE, UNCHANGED = 0, 1, 2
#: appended to the run id of a row whose line was a ``skipped`` / ``unchanged`` one
_UNCHANGED_RUN = ":unchanged"
#: verdicts whose content cache entries are worth keeping (a failure says nothing about content)
_CACHEABLE = frozenset({Status.CLEAN, Status.INFECTED, Status.SUSPICIOUS, Status.UNSCANNABLE})


def identity(target: Target) -> str:
    """The stable key of a target across runs: kind, name and, for object versions, the version.

    A name with undecodable bytes (a lone surrogate from ``os.fsdecode``) is keyed by the hex of its
    raw bytes under its own prefix (``file-bytes:...``): its line's ``\\xNN`` spelling is shared with a
    name that holds a literal backslash-x, and the two must never share a row. Its verdict line
    carries the same bytes as ``path_bytes``, which :meth:`StateStore.reconcile` reads back.

    A malformed input line (``error.code`` ``bad_target``) is keyed under ``bad:``: its name is
    whatever the line said (``{"kind": "bogus", "target": "/data/x"}`` is named ``/data/x``), and a
    real line for that target must not be taken as done because the malformed one was written."""
    name = target.target
    raw = raw_name(name)
    if raw is None and "\x00" in name:
        # no file has such a name, but a malformed input line may: SQLite's JSON functions end a
        # string at a NUL, so the key would never match its own row (a resumed run wrote it again)
        raw = name.encode("utf-8")
    base = f"{target.kind.value}:{name}" if raw is None else f"{_RAW_PREFIX[target.kind]}{raw.hex()}"
    if target.version_id and target.kind is Kind.S3:
        base = f"{base}#{target.version_id}"
    error = target.error
    return _BAD_PREFIX + base if error is not None and error.code == _BAD_TARGET else base


def _into_wal(db: sqlite3.Connection) -> None:
    """Put the store in WAL mode. Switching a new file takes an exclusive lock, and SQLite answers
    "database is locked" at once, without the busy timeout, to a run opening the same new store at
    that moment (measured: about one open in 300 with eight at once); it is tried again a while."""
    deadline = time.monotonic() + _BUSY_TIMEOUT
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def content_version(target: Target) -> str | None:
    """What tells that a target's content changed without reading it; None when the listing gave
    nothing usable (the target is then always rescanned, unless the engine saw its file's version:
    :attr:`Verdict.version <scanner.model.Verdict.version>`)."""
    if target.version is not None:
        return target.version
    if target.version_id:
        return f"v:{target.version_id}"
    if target.etag:
        return f"e:{target.etag}:{target.size}"
    if target.size is not None and target.mtime is not None:
        # a listing that gave only these (a target made by hand, a future source)
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
    #: batches of verdicts as recorded, with the run that wrote them and whether to cache by content
    verdicts: list[tuple[list[Verdict], str, bool]]
    submitted: list[tuple[Any, ...]]
    #: when they were taken: the ``scanned_at`` of their rows
    at: float


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
        self._verdicts: list[tuple[list[Verdict], str, bool]] = []
        self._buffered = 0
        self._submitted: list[tuple[Any, ...]] = []
        #: whether ``pending`` may hold rows: while it holds none, a commit skips deleting from it
        self._any_pending = bool(connection.execute(_ANY_PENDING).fetchone()[0])
        #: the fate most targets of the last triaged batch had: the next one's answer leaves it out
        self._usual_fate = SCAN
        self.commits = 0
        self._submission: anyio.Event | None = None

    def __repr__(self) -> str:
        return f"<StateStore {self.path} buffered={self._buffered} commits={self.commits}>"

    @classmethod
    async def open(cls, path: str) -> StateStore:
        """Open or create the store; raises ConfigError for a path that cannot hold one."""
        return await anyio.to_thread.run_sync(cls._open, path)

    @classmethod
    def _open(cls, path: str) -> StateStore:
        directory = os.path.dirname(os.path.abspath(path))
        db = None
        try:
            os.makedirs(directory, exist_ok=True)
            # Runs writing different outputs may share a store: a write waits up to this long for
            # another's to end instead of failing at once with "database is locked".
            db = sqlite3.connect(path, timeout=_BUSY_TIMEOUT, check_same_thread=False, isolation_level=None)
            _into_wal(db)
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            # Each step may race another run opening the store: a mark is written only if still
            # absent, then read back, and the migration decides inside the write lock.
            schema = db.execute(_SCHEMA_MARK).fetchone()
            if schema is None:
                db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (_SCHEMA_VERSION,))
                schema = db.execute(_SCHEMA_MARK).fetchone()
            (schema,) = schema
            if schema != _SCHEMA_VERSION:
                raise ConfigError(f"state store {path}: schema {schema} is not {_SCHEMA_VERSION}")
            if db.execute(_KEYS_MARK).fetchone() is None:
                cls._migrate_keys(db)
            store = cls(path, db)
        except BaseException as exc:
            if db is not None:
                db.close()
            if isinstance(exc, sqlite3.Error):  # a --state that cannot be used: the run cannot start
                raise ConfigError(_describe(path, exc)) from None
            if isinstance(exc, OSError):
                raise ConfigError(f"state store {path}: {exc.strerror}") from None
            raise
        return store

    @staticmethod
    def _migrate_keys(db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute(_KEYS_MARK).fetchone() is None:  # another run may have done it meanwhile
                db.execute("DELETE FROM targets WHERE identity GLOB ?", (_OLD_KEYS,))
                db.execute("DELETE FROM pending WHERE identity GLOB ?", (_OLD_KEYS,))
                db.execute("INSERT OR IGNORE INTO meta VALUES ('keys', ?)", (_KEYS_VERSION,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise StateError(_describe(self.path, exc)) from None

    async def aclose(self) -> None:
        await self._run(self._db.close)

    # Runs.

    async def begin_run(self, output: str | None, engine: str, *, sealed: bool = True) -> Run:
        """:meth:`resume_run`, or else :meth:`new_run`: for callers with no output to cut between."""
        return await self.resume_run(output, engine) or await self.new_run(output, engine, sealed=sealed)

    async def resume_run(self, output: str | None, engine: str) -> Run | None:
        """The unfinished run writing ``output`` with ``engine``, to continue; None when there is none.
        Writes nothing: deciding to start afresh leaves the store as it was.

        Only an output that still holds the run's committed lines (at least its committed offset)
        is resumed: one deleted or cut since is no longer that run's report, and the targets the
        store says it wrote are not in it. ``output`` None (stdout, S3) is never resumed."""
        if output is None:
            return None
        result: Run | None = await self._run(self._resume_run, output, engine)
        return result

    def _resume_run(self, output: str, engine: str) -> Run | None:
        row = self._db.execute(
            "SELECT run_id, finished, committed_offset, engine FROM runs WHERE output = ?", (output,)
        ).fetchone()
        if row is not None and not row[1] and row[3] == engine and _holds(output, row[2]):
            return Run(row[0], True, row[2])
        return None

    async def new_run(self, output: str | None, engine: str, *, sealed: bool = True) -> Run:
        """Record a new run writing ``output`` (None: one no later run can continue).

        Call it only once the output holds nothing of an earlier run (truncated, or new): from the
        moment this returns, a rerun takes what ``output`` holds as this run's lines. Killed before,
        the store still has the earlier run, finished or not, and that run's own offset.
        ``sealed`` False: the report exists only once the run seals it (:meth:`finish_run`); until
        then no later run takes this run's targets as unchanged."""
        result: Run = await self._run(self._new_run, output, engine, sealed)
        return result

    def _new_run(self, output: str | None, engine: str, sealed: bool) -> Run:
        db = self._db
        db.execute("BEGIN IMMEDIATE")  # two runs starting at once on one store get two ids
        try:
            # A counter kept in the store: unique within it by construction, and a few bytes on
            # every row the run writes, where a uuid's 32 cost about 0.5 us of SQLite work a row.
            # The "r" keeps them apart from the uuids of stores written before.
            row = db.execute("SELECT value FROM meta WHERE key = 'runs'").fetchone()
            n = int(row[0]) + 1 if row is not None else 1
            db.execute("INSERT OR REPLACE INTO meta VALUES ('runs', ?)", (str(n),))
            run = Run(f"r{n}", False, 0)
            if output is not None:
                db.execute(
                    "INSERT OR REPLACE INTO runs (output, run_id, engine, started) VALUES (?, ?, ?, ?)",
                    (output, run.run_id, engine, time.time()),
                )
            if not sealed:
                db.execute("INSERT INTO unsealed VALUES (?)", (run.run_id,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return run

    async def finish_run(self, output: str | None, run_id: str) -> None:
        """Mark the run complete (call it once its report is whole where it lives): the next run
        writing this output starts afresh, and the run's targets count as reported."""

        def finish() -> None:
            db = self._db
            db.execute("BEGIN")
            try:
                if output is not None:
                    db.execute(
                        "UPDATE runs SET finished = 1 WHERE output = ? AND run_id = ?", (output, run_id)
                    )
                db.execute("DELETE FROM unsealed WHERE run_id = ?", (run_id,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self._run(finish)

    # Lookups (batched by the caller).

    async def lookup(self, engine: str, targets: Sequence[Target]) -> dict[str, Row]:
        """The stored row of each target that has one, keyed by :func:`identity`."""
        keys = [identity(t) for t in targets]
        result: dict[str, Row] = await self._run(self._lookup, engine, keys)
        return result

    def _lookup(self, engine: str, keys: list[str]) -> dict[str, Row]:
        rows = self._db.execute(_LOOKUP, (engine, orjson.dumps(keys).decode()))
        return {
            key: Row(version, sha, Status(status), at, run) for key, version, sha, status, at, run in rows
        }

    async def triage(
        self,
        engine: str,
        targets: Sequence[Target],
        *,
        run_id: str | None = None,
        skip_unchanged: bool = False,
        since: float = float("-inf"),
        rescan_findings: bool = False,
        rows: bool = False,
    ) -> list[tuple[int, Row | None]]:
        """What each target needs, in order: ``(SCAN, row or None)``; ``(DONE, row)`` when run
        ``run_id`` already wrote its line (the row's status is what that line said: ``skipped`` for
        an unchanged target's ``skipped`` line); with ``skip_unchanged``, ``(UNCHANGED, row)`` when its
        stored verdict is final (not error or skipped; not a finding with ``rescan_findings``), was
        recorded after ``since`` and has the target's content version. The row of an unchanged
        target is given only with ``rows`` or when its verdict was a finding, else None. A target
        carrying a listing error is SCAN or DONE, never UNCHANGED: an error is tried again by every
        later run."""
        result: list[tuple[int, Row | None]] = await self._run(
            self._triage, engine, targets, (run_id, skip_unchanged, since, rescan_findings, rows)
        )
        return result

    def _triage(
        self, engine: str, targets: Sequence[Target], rules: tuple[str | None, bool, float, bool, bool]
    ) -> list[tuple[int, Row | None]]:
        run_id, skip_unchanged, since, rescan_findings, rows = rules
        keys: list[str] = []
        versions: dict[str, str | None] = {}
        errored: list[int] = []
        for t in targets:
            if t.error is not None:
                # no version: never unchanged, but done once this run wrote its line
                errored.append(len(keys))
                key = identity(t)
                keys.append(key)
                versions.setdefault(key, None)
                continue
            # identity() and content_version() inlined for the common case, as in _commit
            name = t.target
            key = _PREFIX[t.kind] + name if name.isascii() and not t.version_id else identity(t)
            keys.append(key)
            versions[key] = (
                content_version(t) if t.version or t.size is not None or t.etag or t.version_id else None
            )
        if not versions:
            return [(SCAN, None)] * len(targets)
        found: dict[str, tuple[int, Row | None]] = {}
        batch = orjson.dumps(versions).decode()
        marked = None if run_id is None else run_id + _UNCHANGED_RUN
        # the rows of unchanged targets are needed when asked for
        usual = SCAN if rows else self._usual_fate
        params = (engine, run_id, skip_unchanged, since, rescan_findings, batch, usual, marked)
        for key, fate, version, sha, status, at, run in self._db.execute(_TRIAGE, params):
            # an unchanged earlier finding keeps its row (few, and the summary counts them)
            if status is None or (fate == UNCHANGED and not rows and not Status(status).is_finding):
                found[key] = (fate, None)
            else:
                found[key] = (fate, Row(version, sha, Status(status), at, run))
        # absent from the answer: the usual fate, without a row
        default = (usual, None)
        fates = [found.get(k, default) for k in keys]
        for i in errored:
            if fates[i][0] == UNCHANGED:  # a real target of the same name in this batch is unchanged
                fates[i] = (SCAN, None)
        if not rows:
            scans = len(fates) - len(found) if usual == SCAN else sum(f == SCAN for f, _ in found.values())
            self._usual_fate = SCAN if 2 * scans >= len(fates) else UNCHANGED
        return fates

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
        """Remember a vendor submission as soon as the vendor answered it. A run's committer writes
        it within a fraction of a second, with or without a verdict line to commit (a kill before
        costs at most one resubmission per job in flight)."""
        self._submitted.append(
            (engine, identity(target), orjson.dumps(dict(reference)).decode(), time.time())
        )
        if self._submission is not None:
            self._submission.set()

    async def wait_submitted(self) -> None:
        """Return once a submission waits to be committed (at once if one does already)."""
        while not self._submitted:
            if self._submission is None or self._submission.is_set():
                self._submission = anyio.Event()  # made in the event loop: the store is made in a thread
            await self._submission.wait()

    def take_submitted(self) -> Snapshot:
        """The submissions recorded since the last take, without any verdict: a snapshot that may
        be committed at any moment, as it moves no output's offset."""
        snapshot = Snapshot([], self._submitted, time.time())
        self._submitted = []
        return snapshot

    # Recording (buffered; written by commit()).

    def record(self, verdicts: Iterable[Verdict], run_id: str, *, cache: bool = True) -> None:
        """Buffer verdicts whose lines are written, for the next commit. With ``cache`` False their
        content is left out of the content cache (for an engine that never consults it)."""
        batch = list(verdicts)
        self._verdicts.append((batch, run_id, cache))
        self._buffered += len(batch)

    @property
    def buffered(self) -> int:
        return self._buffered

    def take(self) -> Snapshot:
        """Everything recorded since the last take, to be committed later as one transaction."""
        snapshot = Snapshot(self._verdicts, self._submitted, time.time())
        self._verdicts, self._submitted, self._buffered = [], [], 0
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
        await self._run(self._commit, snap, output, run_id, offset)
        self.commits += 1

    def _commit(self, snap: Snapshot, output: str | None, run_id: str | None, offset: int | None) -> None:
        # Rows are grouped by what a statement binds once. A target recorded twice in one snapshot
        # under two groups keeps one of its verdicts, either of them a true one for its version.
        rows: dict[tuple[str, Status, int, bool, str], dict[str, str | None]] = {}
        content: dict[tuple[str, Status], dict[str, list[dict[str, str]]]] = {}
        into: dict[str, str | None] = {}
        unchanged: dict[tuple[str, str], list[str]] = {}
        last = None
        skipped = Status.SKIPPED
        for verdicts, run, cache in snap.verdicts:
            for v in verdicts:
                t = v.target
                # identity() and content_version() inlined for the common case: half this loop's cost
                name = t.target
                key = (
                    _PREFIX[t.kind] + name
                    if name.isascii() and not t.version_id and t.error is None
                    else identity(t)
                )
                if v.status is skipped and v.error is not None and v.error.code == UNCHANGED_CODE:
                    unchanged.setdefault((v.engine, run + _UNCHANGED_RUN), []).append(key)
                    continue
                # the version of the file the engine read, when it saw one (made in its worker,
                # and that of what was scanned, should the file change after the walk stat()ed it)
                version = v.version
                if version is None and (t.version or t.size is not None or t.etag or t.version_id):
                    version = content_version(t)
                sha = v.sha256
                group = (v.engine, v.status, len(sha) if sha else 0, version is not None, run)
                if group != last:
                    into = rows.setdefault(group, {})
                    last = group
                into[key] = (sha + version if version else sha) if sha else version
                if cache and sha and v.status in _CACHEABLE and not v.cached:
                    content.setdefault((v.engine, v.status), {})[sha] = [_finding(f) for f in v.findings]
        db = self._db
        any_pending = self._any_pending or bool(snap.submitted)
        db.execute("BEGIN")
        try:
            db.executemany("INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?)", snap.submitted)
            for (engine, status, sha_len, versioned, run), keyed in rows.items():
                values = orjson.dumps(keyed).decode()
                params = (engine, status.value, snap.at, run, values)
                if sha_len and versioned:
                    db.execute(_UPSERT_BOTH, (*params, sha_len))
                else:
                    db.execute(_UPSERT_SHA if sha_len else _UPSERT, params)
                if any_pending:
                    db.execute(_DONE_PENDING, (engine, values))
            for (engine, marked), keys in unchanged.items():
                db.execute(_MARK_UNCHANGED, (engine, orjson.dumps(keys).decode(), marked))
            for (engine, status), findings in content.items():
                db.execute(_UPSERT_CONTENT, (engine, status.value, snap.at, orjson.dumps(findings).decode()))
            if any_pending:
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
        """Record the lines a killed run wrote past its last commit, and move the run's committed
        offset past them (``output`` is the key :meth:`begin_run` was given); returns how many."""
        count: int = await self._run(self._reconcile, output, offset, run_id)
        return count

    def _reconcile(self, output: str, offset: int, run_id: str) -> int:
        rows = []
        unchanged: dict[str, list[str]] = {}
        now = time.time()
        end = offset
        with open(output, "rb") as f:
            f.seek(offset)
            for line in f:
                if not line.endswith(b"\n"):
                    break  # a torn tail; the sink cuts it off when it opens for append
                end += len(line)
                try:
                    obj = orjson.loads(line)
                    raw = obj.get("path_bytes")
                    name = (
                        obj["target"]
                        if raw is None
                        else bytes.fromhex(raw).decode("utf-8", "surrogateescape")
                    )
                    error = obj["error"]
                    code = error.get("code") if error else None
                    target = Target(
                        Kind(obj["kind"]),
                        name,
                        version_id=obj.get("version_id"),
                        etag=obj.get("etag"),
                        # keyed as the listing's target was: a malformed line's key is its own
                        error=ErrorInfo("", code) if code == _BAD_TARGET else None,
                    )
                    if obj["verdict"] == Status.SKIPPED and code == UNCHANGED_CODE:
                        unchanged.setdefault(obj["engine"], []).append(identity(target))
                        continue
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
                except (orjson.JSONDecodeError, KeyError, ValueError, TypeError, AttributeError):
                    continue
        if end == offset:
            return 0
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany("INSERT OR REPLACE INTO targets VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            for engine, keys in unchanged.items():
                db.execute(_MARK_UNCHANGED, (engine, orjson.dumps(keys).decode(), run_id + _UNCHANGED_RUN))
            # the lines read back are committed now: should the report be deleted or cut before
            # the next commit, a later attempt must see that it no longer holds them
            db.execute(
                "UPDATE runs SET committed_offset = ? WHERE output = ? AND run_id = ?", (end, output, run_id)
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return len(rows) + sum(map(len, unchanged.values()))


def _finding(f: Finding) -> dict[str, str]:
    return {
        k: v for k, v in (("name", f.name), ("engine", f.engine), ("severity", f.severity)) if v is not None
    }


def _describe(path: str, exc: sqlite3.Error) -> str:
    """One line naming what went wrong with the store, in the operator's terms."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name == "SQLITE_FULL":
        why = "the disk holding it is full"
    elif name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        why = f"locked by another process for over {_BUSY_TIMEOUT:.0f}s (another run, or a tool holding it)"
    elif name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        why = f"damaged or not a state store ({exc}); move it aside to start a new one"
    elif name.startswith("SQLITE_READONLY"):
        why = "read-only (a file or folder without write permission)"
    elif name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")):
        why = f"cannot be read or written ({exc})"
    elif isinstance(exc, sqlite3.OperationalError) and "no such" in str(exc):
        why = f"its tables are not a scanner store's ({exc}); move it aside to start a new one"
    else:
        why = str(exc)
    return f"state store {path}: {why}"


def _holds(output: str, offset: int) -> bool:
    """Whether ``output`` is at least ``offset`` bytes long (False when it is gone)."""
    try:
        return os.path.getsize(output) >= offset
    except OSError:
        return False
