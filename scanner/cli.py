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
import signal
import sys
import traceback
from collections.abc import Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

import anyio

from . import __version__, config, engines, logs, sources
from .errors import ScannerError, UsageError, ours
from .model import Kind, Status, Target, Verdict, as_written
from .pipeline import Pipeline, Summary
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
  1  at least one target infected, suspicious or vulnerable (even if others failed)
  2  some target ended in error, the run was interrupted, or it could not start

examples:
  scanner scan ~/Downloads                               # embedded YARA engine, verdicts on stdout
  scanner scan /srv/uploads --exclude '*.log' --output report.ndjson
  scanner scan s3://my-bucket/2026/11/ --modified-since 24h --output s3://reports/nightly.ndjson
  scanner scan ./files --engine metadefender --config scanner.toml
  find . -name '*.pdf' -printf '{"kind":"file","target":"%p"}\\n' | scanner scan -
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _size(text: str) -> int:
    try:
        return int(config.ByteSize.from_config(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 10MB, 1.5GiB or 4096)") from None


def _at_least_one(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


def _seconds(minimum: float) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not value >= minimum:  # also false for nan
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g} seconds, not {text}")
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
        type=_at_least_one,
        metavar="N",
        help="targets in flight at once (default: the engine's own, e.g. 256 for yara)",
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
        help="skip targets whose content version (size+mtime, ETag, version id) matches an earlier verdict",
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
    h.add_argument("-q", "--quiet", action="store_true", help="no progress and no summary; errors only")
    h.add_argument("-v", "--verbose", action="count", default=0, help="more log detail (-vv: debug)")
    h.add_argument("--debug", action="store_true", help="show tracebacks for internal errors")

    sim = sub.add_parser(
        "simulate",
        help="serve a vendor simulator on 127.0.0.1 to rehearse a config without spending quota",
        description="Serve a faithful local simulator of a vendor API. Point the engine's base_url at it.",
    )
    sim.add_argument("vendor", help="which vendor API to simulate")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8080)
    sim.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help="a simulator option (see the vendor's module for the list); repeatable",
    )

    sample = sub.add_parser(
        "sample", help="write a small sample tree (with EICAR test files) to try scanner on"
    )
    sample.add_argument("directory", help="where to write it (created)")
    return parser


def main(argv: Sequence[str] | None = None) -> NoReturn:
    code = run(argv)
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


def run(argv: Sequence[str] | None = None) -> int:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError("a command is required: scan, simulate or sample (see 'scanner --help')")
        logs.configure(-1 if getattr(args, "quiet", False) else getattr(args, "verbose", 0))
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


def _resumable_sink(sink: Sink) -> bool:
    """True for sinks whose partial output is worth keeping (a file or stdout, appended to on resume)."""
    return not sink.name.startswith("s3://")


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
    _check_state_flags(args)
    _check_ranges(args)
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
        avoid=frozenset(path for path in own if path is not None),
    )
    built = [sources.build(spec, options) for spec in args.sources]
    for source in built:
        check = getattr(source, "check", None)
        if check is not None:
            check()
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
    run = None if store is None else await store.begin_run(output, engine.name)
    sink = _build_sink(args.output, settings, append=run is not None and run.resumed)
    notable = _Notable()
    on_written = notable.collect
    admission = committer = None
    if store is not None and run is not None:
        from .resume import Admission, Committer, Policy

        if run.resumed and output is not None:
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

        async def on_written(verdicts: Sequence[Verdict]) -> None:
            await notable.collect(verdicts)
            await committer(verdicts)

    pipeline = Pipeline(
        built,
        engine,
        sink,
        max_at_once=jobs,
        admit=admission,
        on_written=on_written,
        drain_timeout=args.drain_timeout,
    )
    pipeline.check()
    progress = Progress("none" if args.quiet else args.progress, interval=args.progress_interval)
    summary: Summary | None = None
    try:
        fatal: ScannerError | None = None
        async with AsyncExitStack() as stack:
            if committer is not None:
                await stack.enter_async_context(committer)  # group commits in the background
            await stack.enter_async_context(engine)
            tg = await stack.enter_async_context(anyio.create_task_group())
            tg.start_soon(_watch_signals, pipeline)
            tg.start_soon(progress.run, pipeline)
            try:
                summary = await pipeline.run()
                if admission is not None and admission.carried:
                    summary = dataclasses.replace(summary, carried=dict(admission.carried))
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
            if summary is None:
                await sink.abort()
    assert summary is not None  # run() either returned one or raised
    with anyio.CancelScope(shield=True):
        if summary.interrupted and not _resumable_sink(sink):
            # an S3 report is all or nothing: an interrupted run must not look like a complete one
            log.warning("interrupted: the report to %s is discarded; run again to write it whole", sink.name)
            await sink.abort()
        await sink.aclose()
        if store is not None and run is not None and not summary.interrupted:
            await store.finish_run(output, run.run_id)
    if not args.quiet:
        listing_done = pipeline.statistics().listing_done
        _print_summary(summary, sink.name, notable, listing_done=listing_done, state=args.state)
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
    summary: Summary, output: str, notable: _Notable, *, listing_done: bool = True, state: str | None = None
) -> None:
    """The run at a glance, on stderr; a closed stderr loses it and changes nothing else."""
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
        causes = ", ".join(
            f"{code} {n:,}" for code, n in sorted(summary.errors_by_code.items(), key=lambda x: -x[1])
        )
        lines.append(f"  not scanned, by cause: {causes}")
    for v in notable.failed:
        lines.append(f"  error: {_shown(v.target)}: {v.error.message if v.error else ''}")
    failed = summary.by_status.get(Status.ERROR, 0)
    if notable.failed and failed > len(notable.failed):
        lines.append(f"  ... and {failed - len(notable.failed):,} more errors in {output}")
    if summary.halted is not None:
        lines.append(f"  halted: {summary.halted.message}")
    for message in summary.source_errors:
        lines.append(f"  source failed: {message}")
    if summary.carried:
        lines.append(f"  written by the interrupted attempt(s) before: {format_counts(summary.carried)}")
    if summary.dropped:
        reasons = ", ".join(f"{n:,} {why}" for why, n in sorted(summary.dropped.items()))
        lines.append(f"  not rescanned: {reasons}")
    if summary.interrupted:
        lines.extend(_interrupted_lines(summary, listing_done=listing_done, state=state))
    # a name or a message may hold a newline or a terminal escape: never a forged line in a cron log
    _write_stderr("".join(_CONTROL.sub(_escape, line) + "\n" for line in lines))


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


def _interrupted_lines(summary: Summary, *, listing_done: bool, state: str | None) -> list[str]:
    """What an interrupt lost, and how to get it back (with --state only if this run had one)."""
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
    if state is not None:
        lines.append("  run it again (same --state and --output) to finish")
    else:
        lines.append(
            "  run it again to finish; it starts over (next time, --state PATH lets a rerun "
            "continue where it stopped)"
        )
    return lines


def _simulate(args: argparse.Namespace) -> int:
    from aiohttp import web

    from . import simulators

    module = simulators.load(args.vendor)
    known: dict[str, tuple[type, Any, str]] = getattr(module, "OPTIONS", {})
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
    app = module.make_app(**options)
    print(
        f"scanner: simulating {args.vendor} on http://{args.host}:{args.port} (Ctrl-C to stop)",
        file=sys.stderr,
    )
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    return 0


def _sample(args: argparse.Namespace) -> int:
    from .sample import write_sample

    written = write_sample(args.directory)
    print(
        f"scanner: wrote {written} files under {args.directory}; try: scanner scan {args.directory}",
        file=sys.stderr,
    )
    return 0
