"""The command line: parse, load config, build adapters from the registries, run. No business logic.

Every failure a user can cause (bad flag, bad config, missing source, unreachable engine) ends as one
line on stderr and exit status 2; a traceback appears only with ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import sys
import traceback
from collections.abc import Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

import anyio

from . import __version__, config, engines, logs, simulators, sources
from .errors import ScannerError, SinkError, UsageError, ours
from .model import Kind, Status, Target, Verdict, as_written
from .pipeline import Pipeline, Summary, check_kinds
from .progress import Progress, format_counts
from .sinks._base import Sink

if TYPE_CHECKING:
    # imported by _scan only with --state (sqlite3 and the resume machinery)
    from .state import StateStore

__all__ = ("main",)

log = logging.getLogger("scanner")

_SCAN_EXAMPLES = """\
sources:
  DIR or FILE           walk a directory (symlinks not followed) or scan one file
  s3://bucket[/prefix]  every object under the prefix (AWS credential chain; AWS_ENDPOINT_URL honoured)
  inventory:MANIFEST    an S3 Inventory manifest.json (s3://... or a local path)
  urls:FILE             one URL a line            sites:FILE   one host name a line
  -                     NDJSON on stdin: {"kind": "file|s3|url|site", "target": "..."} a line

exit status:
  0  every target scanned, nothing found
  1  at least one target infected, suspicious or vulnerable (even if others failed or it was interrupted)
  2  nothing found, and some target ended in error, the run was interrupted, or it could not start

examples:
  scanner scan ~/Downloads                               # embedded YARA engine, verdicts on stdout
  scanner scan /srv/uploads --exclude '*.log' --output report.ndjson
  scanner scan s3://my-bucket/2026/11/ --modified-since 24h --output s3://reports/nightly.ndjson
  scanner scan ./files --engine metadefender --config scanner.toml
  find . -name '*.pdf' -printf '{"kind":"file","target":"%p"}\\n' | scanner scan -
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors that name the real cause (see :func:`_explain`)."""

    _tokens: Sequence[str] = ()

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._tokens = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras and all(e.startswith("-") and e != "-" for e in extras):
            self.error(_unknown_options_message(extras))
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{_explain(self, message)} (see '{self.prog} --help')")


_SOURCE_REQUIRED = "the following arguments are required: SOURCE"
_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


def _unknown_options_message(unknown: Sequence[str]) -> str:
    return (
        f"unknown option{'s' if len(unknown) > 1 else ''} {' '.join(unknown)} "
        "(a source starting with '-' goes after '--')"
    )


def _explain(parser: _Parser, message: str) -> str:
    """argparse's message, or the cause behind a missing SOURCE: a source that looks like an option
    (``-leading-dash``), or a string option that took the source as its value (``--state tree``)."""
    if message != _SOURCE_REQUIRED:
        return message
    unknown: list[str] = []
    took: tuple[str, str] | None = None
    pending: tuple[str, argparse.Action] | None = None  # an option waiting for its value
    for arg in parser._tokens:
        if arg == "--":
            break
        if pending is not None and (not arg.startswith("-") or _NUMBER.match(arg)):
            if pending[1].type is None:  # a string value, so it may well be the source
                took = (pending[0], arg)
            pending = None
            continue
        pending = None
        if not arg.startswith("-") or arg == "-":
            continue
        name, has_value = arg.split("=", 1)[0], "=" in arg
        action = parser._option_string_actions.get(name)
        if action is None and arg.startswith("--"):
            matches = {a for o, a in parser._option_string_actions.items() if o.startswith(name)}
            action = matches.pop() if len(matches) == 1 else None
        elif action is None and arg[:2] in parser._option_string_actions:
            continue  # -j4, -qv: a short option with its value or more flags attached
        if action is None:
            unknown.append(arg)
        elif action.nargs in (None, "?") and not has_value:
            pending = (arg, action)
    if unknown:
        return _unknown_options_message(unknown)
    if took is not None:
        return f"SOURCE required ({took[0]} took {took[1]!r} as its value? give the source too)"
    return "SOURCE required"


def _size(text: str) -> int:
    try:
        return int(config.ByteSize.from_config(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 10MB, 1.5GiB or 4096)") from None


#: --jobs: each job is a coroutine and, while it reads, an open file; past this a typo, not a plan
MAX_JOBS = 10_000
#: --drain-timeout and --progress-interval: a day
_MAX_SECONDS = 86_400.0


def _jobs(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= n <= MAX_JOBS:
        raise argparse.ArgumentTypeError(f"must be at least 1 and at most {MAX_JOBS:,}, not {n:,}")
    return n


def _seconds(minimum: float) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not minimum <= value <= _MAX_SECONDS:  # also false for nan
            raise argparse.ArgumentTypeError(
                f"must be at least {minimum:g} and at most {_MAX_SECONDS:,.0f} seconds, not {text}"
            )
        return value

    return parse


def _glob(text: str) -> str:
    try:
        return sources.check_glob(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_REL = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(text: str) -> timedelta:
    m = _REL.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 30m, 24h or 7d)")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


def _when(text: str) -> datetime:
    """An RFC 3339 time, a date (UTC midnight), or a duration meaning that long ago."""
    if _REL.match(text.strip()):
        return datetime.now(UTC) - _duration(text)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (try 2026-11-21, 2026-11-21T06:00:00Z or 24h)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def default_state_path() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "scanner", "state.sqlite")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="scanner",
        description="Scan everything: files, S3 objects, URLs and sites through malware and "
        "vulnerability engines, with one NDJSON verdict line per target.",
        epilog="Run 'scanner scan --help' for sources, options, exit codes and examples.",
    )
    parser.add_argument("--version", action="version", version=f"scanner {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    scan = sub.add_parser(
        "scan",
        help="scan targets and write one verdict line per target",
        description="Scan every target the SOURCEs list and write one NDJSON verdict line per target "
        "to --output (stdout by default). Progress and the summary go to stderr.",
        epilog=_SCAN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    scan.add_argument("sources", nargs="+", metavar="SOURCE", help="what to scan (forms below)")
    scan.add_argument(
        "--engine",
        default=engines.DEFAULT_ENGINE,
        help=f"scanning engine: {', '.join(engines.names())} (default: %(default)s, embedded, no account)",
    )
    scan.add_argument(
        "--config", metavar="FILE", help="TOML config with [engines.NAME] tables (see configs/)"
    )
    scan.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        default="-",
        help="where verdict lines go: a file, - for stdout (default), or s3://bucket/key",
    )
    scan.add_argument(
        "--jobs",
        "-j",
        type=_jobs,
        metavar="N",
        help=f"targets in flight at once, 1 to {MAX_JOBS:,} (default: the engine's own, e.g. 256 for yara)",
    )
    g = scan.add_argument_group("selecting targets")
    g.add_argument(
        "--include",
        type=_glob,
        action="append",
        default=[],
        metavar="GLOB",
        help="only targets matching GLOB (name, or path relative to the source if it has /); repeatable",
    )
    g.add_argument(
        "--exclude",
        type=_glob,
        action="append",
        default=[],
        metavar="GLOB",
        help="skip targets (and directories) matching GLOB; repeatable; wins over --include",
    )
    g.add_argument(
        "--min-size", type=_size, metavar="SIZE", help="skip targets smaller than SIZE (10KB, 1MiB)"
    )
    g.add_argument("--max-size", type=_size, metavar="SIZE", help="skip targets larger than SIZE")
    g.add_argument(
        "--modified-since",
        type=_when,
        metavar="WHEN",
        help="only targets modified at or after WHEN (2026-11-21, RFC 3339, or 24h ago)",
    )
    g.add_argument("--modified-before", type=_when, metavar="WHEN", help="only targets modified before WHEN")
    g.add_argument(
        "--follow-symlinks",
        action="store_true",
        help="follow symbolic links while walking (each directory is entered once)",
    )
    g.add_argument(
        "--all-versions", action="store_true", help="S3: scan every object version, not just the latest"
    )
    st = scan.add_argument_group(
        "state: resume and incremental rescans",
        "With --state, a rerun with the same --output continues an interrupted run without scanning "
        "or writing anything twice, and --skip-unchanged leaves alone what an earlier run already judged.",
    )
    st.add_argument(
        "--state",
        nargs="?",
        const=default_state_path(),
        metavar="PATH",
        help=f"keep the state store (SQLite) at PATH (default when PATH is omitted: {default_state_path()})",
    )
    st.add_argument(
        "--skip-unchanged",
        action="store_true",
        help="skip targets whose content version (size+mtime, ETag, version id) matches an earlier verdict "
        "(the summary counts the earlier findings skipped so)",
    )
    st.add_argument(
        "--rescan-after",
        type=_duration,
        metavar="AGE",
        help="with --skip-unchanged: verdicts older than AGE (30d, 12h) are rescanned anyway",
    )
    st.add_argument(
        "--rescan-infected",
        action="store_true",
        help="with --skip-unchanged: always rescan targets last found infected or suspicious",
    )
    st.add_argument(
        "--emit-skipped",
        action="store_true",
        help="write a 'skipped' line (error.code 'unchanged') for each unchanged target, not just a count",
    )
    st.add_argument(
        "--cache-age",
        type=_duration,
        default=timedelta(days=7),
        metavar="AGE",
        help="engines that hash first reuse a verdict for the same content this long (default 7d)",
    )
    h = scan.add_argument_group("running")
    h.add_argument(
        "--drain-timeout",
        type=_seconds(0),
        default=30.0,
        metavar="SECONDS",
        help="on Ctrl-C/SIGTERM, let jobs in flight finish this long (0: abandon them at once; "
        "default: %(default)s); a second signal quits at once",
    )
    h.add_argument(
        "--progress",
        choices=("auto", "bar", "plain", "none"),
        default="auto",
        help="progress on stderr: a live bar on a terminal, a plain line otherwise, even for bar "
        "(default: auto)",
    )
    h.add_argument(
        "--progress-interval",
        type=_seconds(1),
        default=10.0,
        metavar="SECONDS",
        help="seconds between plain progress lines, at least 1 (default: %(default)s)",
    )
    h.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="errors only: no progress; the summary only of targets that ended in error (by cause, "
        "the first few), none when no target did",
    )
    h.add_argument("-v", "--verbose", action="count", default=0, help="more log detail (-vv: debug)")
    h.add_argument("--debug", action="store_true", help="show tracebacks for internal errors")

    sim = sub.add_parser(
        "simulate",
        help="serve a vendor simulator on 127.0.0.1 to rehearse a config without spending quota",
        description="Serve a faithful local simulator of a vendor API. Point the engine's base_url "
        "(or any client's) at it.",
        epilog=simulators.help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sim.add_argument("vendor", choices=simulators.names(), help="which vendor API to simulate")
    sim.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    sim.add_argument(
        "--port", type=int, default=8080, help="port to listen on; 0 picks a free one (default: %(default)s)"
    )
    sim.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a simulator option (listed below); repeatable",
    )

    sample = sub.add_parser(
        "sample", help="write a small sample tree (with EICAR test files) to try scanner on"
    )
    sample.add_argument("directory", help="where to write it (created)")
    return parser


def main(argv: Sequence[str] | None = None) -> NoReturn:
    closed = _fill_standard_streams()
    code = run(argv, stdout_closed=1 in closed)
    # run() has closed or flushed everything that matters (outputs, state store, workers, logs).
    # Leave without the interpreter's teardown, which frees every module and object one by one:
    # 30-60 ms of every run. A stream that cannot be flushed is a closed pipe: nothing more can be
    # said on it, and exiting the usual way would turn the status into Python's 1 or 120. Verdicts go
    # through the sink, which reports its own loss; what was left in sys.stdout is output lost.
    try:
        sys.stdout.flush()
    except OSError:
        code = code or 2
    with contextlib.suppress(OSError):
        sys.stderr.flush()
    os._exit(code)


def _fill_standard_streams() -> frozenset[int]:
    """Open ``/dev/null`` on each of fd 0, 1 and 2 that is closed; the set of those that were.

    Call first, before anything opens a descriptor: a closed one would be taken by the next file
    opened (the event loop's self-pipe, a worker's pipe), and libuv aborts the process when asked to
    close a descriptor below 3. The stream then behaves as one redirected to /dev/null."""
    closed = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: fd itself, as 0..fd-1 are open
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            os.set_inheritable(fd, True)  # worker processes get it as their own standard stream
    # Python left sys.stdin/stdout/stderr None for a descriptor closed at its start
    if 0 in closed:
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 (lives as long as the process)
    if 1 in closed:
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    if 2 in closed:
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    return frozenset(closed)


def run(argv: Sequence[str] | None = None, *, stdout_closed: bool = False) -> int:
    """The command's exit status. ``stdout_closed``: the process started with fd 1 closed (now
    ``/dev/null``), so verdict lines meant for stdout would be lost: a scan to stdout is refused."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError("a command is required: scan, simulate or sample (see 'scanner --help')")
        logs.configure(-1 if getattr(args, "quiet", False) else getattr(args, "verbose", 0))
        if args.command == "scan" and stdout_closed and args.output == "-":
            raise SinkError(
                "stdout is closed: the verdict lines would be lost; write them to a file with --output FILE"
            )
        if args.command == "scan":
            return _run_async(_scan, args)
        if args.command == "simulate":
            return _simulate(args)
        return _sample(args)
    except ScannerError as exc:
        _fail(exc.message)
        return 2
    except KeyboardInterrupt:
        _fail("interrupted")
        return 2
    except Exception as exc:
        known = ours(exc)
        if known is not None:
            _fail(known.message)
            return 2
        if debug:
            # the traceback, redacted; the status stays 2 (1 would read as "infected")
            _write_stderr(logs.redact("".join(traceback.format_exception(exc))))
        _fail(
            f"internal error: {type(exc).__name__}: {exc}"
            + ("" if debug else " (run with --debug for the traceback)")
        )
        return 2


def _fail(message: str) -> None:
    _write_stderr(f"scanner: error: {_one_line(logs.redact(message))}\n")


def _write_stderr(text: str) -> None:
    """Write to stderr; a closed stderr (``2>&1 | true``) loses the text and changes nothing else."""
    with contextlib.suppress(OSError):
        sys.stderr.write(text)
        sys.stderr.flush()


def _one_line(text: str) -> str:
    """Escape what would break the line (a newline in a TOML key, a file name or a vendor's text)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _run_async(fn: Any, args: argparse.Namespace) -> int:
    result: int = anyio.run(fn, args, backend="asyncio", backend_options={"use_uvloop": _has_uvloop()})
    return result


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _build_sink(output: str, settings: config.Settings, *, append: bool) -> Sink:
    if output.startswith("s3://"):
        from .sinks import s3

        sink: Sink = s3.S3Sink.from_uri(output, settings.s3)
        return sink
    from .sinks.ndjson import NdjsonSink

    ndjson = NdjsonSink(output, append=append)
    ndjson.open()
    return ndjson


def _claim(output: str) -> int | None:
    """Lock a file output for this run (see :func:`scanner.sinks.ndjson.claim`); the descriptor
    holding the lock, or None for stdout, S3 and anything that is not a regular file."""
    path = _resumable(output)
    if path is None:
        return None
    from .sinks.ndjson import claim

    return claim(path)


def _resumable(output: str) -> str | None:
    """The absolute path of an output a later run can continue, or None (stdout, S3, a pipe)."""
    if output == "-" or output.startswith("s3://"):
        return None
    path = os.path.abspath(output)
    return None if os.path.exists(path) and not os.path.isfile(path) else path


async def _scan(args: argparse.Namespace) -> int:
    """Start-up, in an order a kill at any step of leaves nothing half done: every check first, then
    the output is claimed (locked, not cut), the store opened, the engine started (vendor reachable,
    key good), and only then is the output opened for writing and a new run recorded."""
    _check_state_flags(args)
    _check_ranges(args)
    _check_distinct(args.state, args.output)
    settings = config.load(args.config)
    engines.validate_all(settings)
    engine = engines.build(args.engine, settings)
    # a walk never reads this run's own files: its report, its store and SQLite's files beside it
    own = [_resumable(args.output)]
    if args.state is not None:
        own += [args.state + end for end in ("", "-wal", "-shm", "-journal")]
    options = sources.SourceOptions(
        filters=sources.TargetFilter(
            include=tuple(args.include),
            exclude=tuple(args.exclude),
            min_size=args.min_size,
            max_size=args.max_size,
            modified_since=args.modified_since,
            modified_before=args.modified_before,
        ),
        follow_symlinks=args.follow_symlinks,
        all_versions=args.all_versions,
        stat_files=args.skip_unchanged,
        s3=settings.s3,
        urls=settings.urls,
        avoid=frozenset(path for path in own if path is not None),
    )
    built = [sources.build(spec, options) for spec in args.sources]
    for source in built:
        check = getattr(source, "check", None)
        if check is not None:
            check()
    check_kinds(built, engine)
    jobs = args.jobs or engine.default_jobs
    # before the store is read or the output cut: a second run on this output stops here
    claimed = _claim(args.output)
    try:
        store = None
        if args.state is not None:
            from .state import StateStore

            store = await StateStore.open(args.state)
        try:
            return await _scan_with(args, engine, built, jobs, settings, store)
        finally:
            if store is not None:
                with anyio.CancelScope(shield=True):
                    await store.aclose()
    finally:
        if claimed is not None:
            os.close(claimed)


def _check_distinct(state: str | None, output: str) -> None:
    """The store and the report in one file would be neither: refuse before either is opened."""
    if state is None or _resumable(output) is None:
        return
    paths = (os.path.realpath(state), os.path.realpath(output))
    same = paths[0] == paths[1]
    with contextlib.suppress(OSError):
        same = same or os.path.samefile(*paths)
    if same:
        raise UsageError(f"--state and --output are the same file ({state}): give each its own path")


def _check_ranges(args: argparse.Namespace) -> None:
    """Filters that no target can pass are a typo, not a clean night: say so instead of exiting 0."""
    if args.min_size is not None and args.max_size is not None and args.min_size > args.max_size:
        raise UsageError(
            f"--min-size {args.min_size:,} is more than --max-size {args.max_size:,}: nothing can match"
        )
    since, before = args.modified_since, args.modified_before
    if since is not None and before is not None and since >= before:
        raise UsageError(
            f"--modified-since {since.isoformat(timespec='seconds')} is not before "
            f"--modified-before {before.isoformat(timespec='seconds')}: "
            "nothing can match"
        )


def _check_state_flags(args: argparse.Namespace) -> None:
    """Flags that only mean something with others are errors without them, never silently ignored."""
    if args.state is None and (args.skip_unchanged or args.rescan_infected or args.emit_skipped):
        raise UsageError("--skip-unchanged, --rescan-infected and --emit-skipped need --state")
    refine = [
        flag
        for flag, given in (
            ("--rescan-after", args.rescan_after is not None),
            ("--rescan-infected", args.rescan_infected),
            ("--emit-skipped", args.emit_skipped),
        )
        if given
    ]
    if refine and not args.skip_unchanged:
        needed = "--skip-unchanged" + ("" if args.state is not None else " and --state")
        raise UsageError(f"{' and '.join(refine)} {'needs' if len(refine) == 1 else 'need'} {needed}")


async def _scan_with(
    args: argparse.Namespace,
    engine: engines.Engine,
    built: list[sources.Source],
    jobs: int,
    settings: config.Settings,
    store: StateStore | None,
) -> int:
    output = _resumable(args.output)
    run = None if store is None else await store.resume_run(output, engine.name)
    notable = _Notable()
    summary: Summary | None = None
    sink: Sink | None = None
    try:
        fatal: ScannerError | None = None
        async with AsyncExitStack() as stack:
            # a vendor that is down or a key that is refused ends the run here, report untouched
            await stack.enter_async_context(engine)
            sink = _build_sink(args.output, settings, append=run is not None)
            on_written = notable.collect
            admission = committer = None
            if store is not None:
                from .resume import Admission, Committer, Policy

                if run is None:
                    # only now that the output holds nothing of an earlier run: a kill before this
                    # leaves the earlier run as it was, a kill after leaves this run and its report
                    run = await store.new_run(output, engine.name, sealed=sink.durable_lines)
                elif output is not None:
                    done = await store.reconcile(output, run.committed_offset, run.run_id)
                    log.warning(
                        "resuming the unfinished run writing %s (%d lines past its last commit recovered)",
                        output,
                        done,
                    )
                policy = Policy(
                    skip_unchanged=args.skip_unchanged,
                    rescan_after=args.rescan_after.total_seconds() if args.rescan_after else float("inf"),
                    rescan_infected=args.rescan_infected,
                    emit_skipped=args.emit_skipped,
                )
                if run.resumed or policy.skip_unchanged:
                    # a fresh run that skips nothing needs no admission step (and no lookups)
                    admission = Admission(store, engine.name, run, policy)
                attach = getattr(engine, "attach_state", None)
                committer = Committer(
                    store,
                    run,
                    output=output,
                    position=getattr(sink, "position", None),
                    fsync=getattr(sink, "fsync", None),
                    cache=attach is not None,  # only an engine given the store reads its content cache
                )
                if attach is not None:
                    attach(store, args.cache_age.total_seconds())
                await stack.enter_async_context(committer)  # group commits in the background
                record = committer

                async def on_written(verdicts: Sequence[Verdict]) -> None:
                    await notable.collect(verdicts)
                    await record(verdicts)

            pipeline = Pipeline(
                built,
                engine,
                sink,
                max_at_once=jobs,
                admit=admission,
                on_written=on_written,
                drain_timeout=args.drain_timeout,
            )
            progress = Progress("none" if args.quiet else args.progress, interval=args.progress_interval)
            tg = await stack.enter_async_context(anyio.create_task_group())
            tg.start_soon(_watch_signals, pipeline)
            tg.start_soon(progress.run, pipeline)
            try:
                summary = await pipeline.run()
                if admission is not None:
                    summary = dataclasses.replace(
                        summary,
                        carried=dict(admission.carried),
                        unchanged_findings=dict(admission.unchanged_findings),
                    )
            except ScannerError as exc:
                # raised through the task group it would come out wrapped in an ExceptionGroup,
                # which run() reports as an internal error instead of the error's own line
                fatal = exc
            tg.cancel_scope.cancel()
            if committer is not None:
                with anyio.CancelScope(shield=True):
                    await committer.flush()
        if fatal is not None:
            raise fatal
    finally:
        with anyio.CancelScope(shield=True):
            for source in built:
                await source.aclose()
            if summary is None and sink is not None:
                await sink.abort()
    assert summary is not None  # run() either returned one or raised
    assert sink is not None
    with anyio.CancelScope(shield=True):
        if summary.interrupted and not sink.durable_lines:
            # an S3 report is all or nothing: an interrupted run must not look like a complete one
            log.warning("interrupted: the report to %s is discarded; run again to write it whole", sink.name)
            await sink.abort()
        await sink.aclose()
        if store is not None and run is not None and not summary.interrupted:
            # after the report is whole where it lives: its targets count as reported from now on
            await store.finish_run(output, run.run_id)
    listing_done = pipeline.statistics().listing_done
    _print_summary(summary, sink.name, notable, listing_done=listing_done, state=args.state, quiet=args.quiet)
    return summary.exit_code


async def _watch_signals(pipeline: Pipeline) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        count = 0
        async for signum in signals:
            count += 1
            name = signal.Signals(signum).name
            if count == 1:
                log.warning(
                    "%s: stopping; jobs in flight get up to %.0fs to finish (signal again to quit now)",
                    name,
                    pipeline.drain_timeout,
                )
                pipeline.stop()
            else:
                log.warning("%s again: quitting now", name)
                pipeline.abort()


class _Notable:
    """Keeps the first few findings and failures for the summary, so the operator sees them at once."""

    LIMIT = 10

    def __init__(self) -> None:
        self.found: list[Verdict] = []
        self.failed: list[Verdict] = []

    async def collect(self, verdicts: Sequence[Verdict]) -> None:
        for v in verdicts:
            if v.status.is_finding and len(self.found) < self.LIMIT:
                self.found.append(v)
            elif v.status is Status.ERROR and len(self.failed) < self.LIMIT:
                self.failed.append(v)


def _print_summary(
    summary: Summary,
    output: str,
    notable: _Notable,
    *,
    listing_done: bool = True,
    state: str | None = None,
    quiet: bool = False,
) -> None:
    """The run at a glance, on stderr; a closed stderr loses it and changes nothing else.

    ``quiet`` (``-q``: errors only): the targets that ended in error, counted by cause, and the
    first few of them; nothing at all when none did."""
    if quiet:
        failed = summary.by_status.get(Status.ERROR, 0)
        if failed:
            plural = "s" if failed != 1 else ""
            causes = _causes(summary)
            head = f"scanner: {failed:,} target{plural} ended in error; not scanned, by cause: {causes}"
            _write_lines([head, *_failed_lines(summary, output, notable)])
        return
    lines = []
    rate = summary.written / summary.elapsed if summary.elapsed > 0 else 0.0
    lines.append(
        f"scanner: {summary.written:,} verdicts in {summary.elapsed:.1f}s ({rate:,.0f}/s) to {output}: "
        f"{format_counts(summary.by_status)}"
    )
    for v in notable.found:
        names = ", ".join(f.name for f in v.findings) or v.status.value
        lines.append(f"  {v.status.value}: {_shown(v.target)} ({names})")
    if summary.findings > len(notable.found):
        lines.append(f"  ... and {summary.findings - len(notable.found):,} more in {output}")
    if summary.errors_by_code:
        lines.append(f"  not scanned, by cause: {_causes(summary)}")
    lines.extend(_failed_lines(summary, output, notable))
    if summary.halted is not None:
        lines.append(f"  halted: {summary.halted.message}")
    for message in summary.source_errors:
        lines.append(f"  source failed: {message}")
    if summary.carried:
        lines.append(f"  written by the interrupted attempt(s) before: {format_counts(summary.carried)}")
    if summary.dropped:
        reasons = ", ".join(f"{n:,} {why}" for why, n in sorted(summary.dropped.items()))
        lines.append(f"  not rescanned: {reasons}")
    if summary.unchanged_findings:
        lines.append(
            f"  found before and skipped as unchanged: {format_counts(summary.unchanged_findings)} "
            "(--rescan-infected scans them again)"
        )
    if summary.interrupted:
        lines.extend(_interrupted_lines(summary, output, listing_done=listing_done, state=state))
    _write_lines(lines)


def _write_lines(lines: Sequence[str]) -> None:
    # a name or a message may hold a newline or a terminal escape: never a forged line in a cron log
    _write_stderr("".join(_CONTROL.sub(_escape, line) + "\n" for line in lines))


def _causes(summary: Summary) -> str:
    """``timeout 3, not_found 1``: the codes of the lines that were not clean, most frequent first."""
    return ", ".join(
        f"{code} {n:,}" for code, n in sorted(summary.errors_by_code.items(), key=lambda x: -x[1])
    )


def _failed_lines(summary: Summary, output: str, notable: _Notable) -> list[str]:
    """The first few targets that ended in error, and how many more the report holds."""
    lines = [f"  error: {_shown(v.target)}: {v.error.message if v.error else ''}" for v in notable.failed]
    failed = summary.by_status.get(Status.ERROR, 0)
    if notable.failed and failed > len(notable.failed):
        lines.append(f"  ... and {failed - len(notable.failed):,} more errors in {output}")
    return lines


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(m: re.Match[str]) -> str:
    return m.group().encode("unicode_escape").decode("ascii")


def _shown(target: Target) -> str:
    """A target's name for the summary: undecodable bytes as its line spells them, and a URL
    without its query string or credentials (the cron log is no place for a token)."""
    if target.kind is Kind.URL:
        from ._redact import quote_url

        return quote_url(target.target)
    return as_written(target.target)


def _interrupted_lines(summary: Summary, output: str, *, listing_done: bool, state: str | None) -> list[str]:
    """What an interrupt lost, and how to get it back: the same command continues only a file
    output with a state store; stdout and an S3 report are written again from the start."""
    # listed, minus lines written, minus targets deliberately given none (done before, unchanged):
    # jobs abandoned when the drain timed out, and targets still queued behind them
    abandoned = summary.listed - summary.written - sum(summary.dropped.values())
    lost = []
    if abandoned > 0:
        lost.append(
            f"{abandoned:,} target{'s' if abandoned != 1 else ''} read from the source got no line "
            "(abandoned in flight or still queued)"
        )
    if not listing_done:
        lost.append("the rest of the source was not read")
    lines = [f"  interrupted: the run is incomplete{': ' + '; '.join(lost) if lost else ''}"]
    if output == "stdout":
        # what a rerun writes to stdout is every line again: `>> report` would hold them twice
        lines.append(
            "  stdout cannot be resumed: run it again to start over, or write to a file "
            "(--output FILE --state PATH) so that a rerun continues where it stopped"
        )
    elif output.startswith("s3://"):
        lines.append("  an S3 report is never resumed: run it again to write it whole")
    elif state is not None:
        lines.append("  run it again (same --state and --output) to finish")
    else:
        lines.append(
            "  run it again to finish; it starts over (next time, --state PATH lets a rerun "
            "continue where it stopped)"
        )
    return lines


def _simulate(args: argparse.Namespace) -> int:
    from aiohttp import web

    known = simulators.options(args.vendor)
    options: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise UsageError(
                f"unknown simulator option {key!r} (known: {', '.join(sorted(known)) or 'none'})"
            )
        kind = known[key][0]
        try:
            options[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
        except ValueError:
            raise UsageError(f"simulator option {key}: not a {kind.__name__}: {value!r}") from None
    app = simulators.load(args.vendor).make_app(**options)
    # bound here, so --port 0 picks a free port and the line below names the one it got
    family = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)[0][0]
    try:
        sock = socket.create_server((args.host, args.port), family=family)
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"scanner: simulating {args.vendor} on http://{shown}:{port} (Ctrl-C to stop)", file=sys.stderr)
    web.run_app(app, sock=sock, print=None, access_log=None)
    return 0


def _sample(args: argparse.Namespace) -> int:
    from .sample import write_sample

    written = write_sample(args.directory)
    try_next = shlex.join([*_program(), "scan", args.directory])
    print(f"scanner: wrote {written} files under {args.directory}; try: {try_next}", file=sys.stderr)
    return 0


def _program() -> list[str]:
    """This program as the user's shell can start it again: ``scanner`` when that name on PATH is
    this very program, else its path (``.venv/bin/scanner`` in a checkout), or ``python -m scanner``."""
    here = sys.argv[0]
    if os.path.basename(here) == "__main__.py":
        return [_shortest(sys.executable), "-m", "scanner"]
    found = shutil.which("scanner")
    if found is not None and os.path.realpath(found) == os.path.realpath(here):
        return ["scanner"]
    return [_shortest(here)]


def _shortest(path: str) -> str:
    """``path`` relative to the working directory when that does not climb out of it."""
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") and "/" in relative else os.path.abspath(path)
