"""Progress on stderr, never in the verdict stream.

On a terminal: a live bar with counts, rate and ETA. Elsewhere (cron, CI, a pipe): one plain line
every ``interval`` seconds, for logs, stamped with the UTC time (RFC 3339). A bar asked for where
there is no terminal is plain lines too: a bar there would only leave blank lines. A stream that
stops taking writes (a closed pipe) ends the reporting, never the run.

While the source is still being listed the total is not known: the lines give what is listed so far
and the listing's own rate, and the ETA covers the targets listed so far, so it is a lower bound and
says so ("eta at least"). Once the listing is done the total is exact and so is the ETA's basis.
(No source tells its total up front: an S3 Inventory manifest lists its data files, not counts.)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

import anyio

__all__ = ("Progress", "format_counts")


class _Stats(Protocol):
    listed: int
    in_flight: int
    written: int
    listing_done: bool
    elapsed: float
    by_status: Mapping[str, int]


class _Watched(Protocol):
    def statistics(self) -> Any: ...


_ORDER = ("infected", "suspicious", "vulnerable", "error", "unscannable", "skipped", "clean")


def format_counts(by_status: Mapping[str, int]) -> str:
    parts = [f"{by_status[k]:,} {k}" for k in _ORDER if by_status.get(k)]
    return ", ".join(parts) or "none"


class Progress:
    """Reports a pipeline's statistics until cancelled. ``mode``: auto, bar, plain or none."""

    def __init__(self, mode: str = "auto", *, interval: float = 10.0, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        if mode in ("auto", "bar"):
            mode = "bar" if _isatty(self._stream) else "plain"
        self.mode = mode
        self._interval = interval

    async def run(self, pipeline: _Watched) -> None:
        if self.mode == "none":
            return
        try:
            if self.mode == "bar":
                await self._bar(pipeline)
            else:
                await self._plain(pipeline)
        except OSError:
            return  # stderr closed: nobody is reading progress any more

    async def _plain(self, pipeline: _Watched) -> None:
        last_written, last_listed, last_t = 0, 0, time.monotonic()
        while True:
            await anyio.sleep(self._interval)
            s: _Stats = pipeline.statistics()
            now = time.monotonic()
            span = max(now - last_t, 1e-9)
            rate, listing = (s.written - last_written) / span, (s.listed - last_listed) / span
            last_written, last_listed, last_t = s.written, s.listed, now
            if s.listing_done:
                total = f"/{s.listed:,} done"
            else:
                total = f" done of {s.listed:,} listed so far (listing {listing:,.0f}/s)"
            eta = ""
            if rate > 0:
                bound = "" if s.listing_done else "at least "
                eta = f", eta {bound}{_duration((s.listed - s.written) / rate)}"
            stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
            print(
                f"scanner: progress {stamp} {s.written:,}{total}, {rate:,.0f}/s, {s.in_flight} in flight"
                f"{eta}: {format_counts(s.by_status)}",
                file=self._stream,
                flush=True,
            )

    async def _bar(self, pipeline: _Watched) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bar

        console = Console(file=self._stream)
        columns = (
            TextColumn("[bold]scanning"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[listing]}{task.fields[counts]}"),
        )
        with Bar(*columns, console=console, transient=True, refresh_per_second=5) as bar:
            task = bar.add_task("scan", total=None, rate="0", counts="", listing="")
            try:
                while True:
                    await anyio.sleep(0.2)
                    s: _Stats = pipeline.statistics()
                    elapsed = max(s.elapsed, 1e-9)
                    # while listing, the total so far: the bar and its ETA are then a lower bound
                    listing = "" if s.listing_done else f"(listing, {s.listed / elapsed:,.0f}/s) "
                    bar.update(
                        task,
                        completed=s.written,
                        total=max(s.listed, 1),
                        rate=f"{s.written / elapsed:,.0f}",
                        counts=format_counts(s.by_status),
                        listing=listing,
                    )
            finally:
                bar.stop()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError):  # closed
        return False


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
