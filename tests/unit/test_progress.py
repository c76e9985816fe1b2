from __future__ import annotations

import io
import re
from datetime import UTC, datetime

import anyio
import pytest

from scanner.pipeline import PipelineStatistics
from scanner.progress import Progress, format_counts

pytestmark = pytest.mark.anyio


class FakePipeline:
    def __init__(self) -> None:
        self.written = 0

    def statistics(self) -> PipelineStatistics:
        self.written += 100
        return PipelineStatistics(
            listed=1000,
            in_flight=7,
            written=self.written,
            max_at_once=8,
            listing_done=True,
            elapsed=1.0,
            by_status={"clean": self.written - 1, "infected": 1},
        )


def test_counts_put_findings_first() -> None:
    assert format_counts({"clean": 5, "infected": 1, "error": 2}) == "1 infected, 2 error, 5 clean"
    assert format_counts({}) == "none"


async def test_plain_lines_for_logs_with_rate_and_eta() -> None:
    out = io.StringIO()
    progress = Progress("auto", interval=0.05, stream=out)  # a StringIO is not a terminal: plain
    assert progress.mode == "plain"
    with anyio.move_on_after(0.18):
        await progress.run(FakePipeline())
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2
    assert lines[-1].startswith("scanner: progress ")
    assert "/1,000 done" in lines[-1] and "7 in flight" in lines[-1] and "eta" in lines[-1]
    assert "1 infected" in lines[-1]


async def test_none_prints_nothing() -> None:
    out = io.StringIO()
    with anyio.move_on_after(0.1):
        await Progress("none", interval=0.01, stream=out).run(FakePipeline())
    assert out.getvalue() == ""


async def test_a_bar_asked_for_without_a_terminal_gives_plain_lines_and_no_blank_ones() -> None:
    # it used to start a rich bar on the pipe, which wrote two blank lines and no progress
    out = io.StringIO()
    progress = Progress("bar", interval=0.05, stream=out)
    assert progress.mode == "plain"
    with anyio.move_on_after(0.18):
        await progress.run(FakePipeline())
    lines = out.getvalue().splitlines()
    assert lines and all(line.startswith("scanner: progress ") for line in lines)


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


async def test_a_closed_stderr_ends_the_progress_lines_not_the_run() -> None:
    with anyio.fail_after(2):
        await Progress("plain", interval=0.01, stream=_ClosedPipe()).run(FakePipeline())


class ListingPipeline:
    """A run still listing: 500 more listed and 100 more written per look."""

    def __init__(self) -> None:
        self.looks = 0

    def statistics(self) -> PipelineStatistics:
        self.looks += 1
        return PipelineStatistics(
            listed=500 * self.looks,
            in_flight=3,
            written=100 * self.looks,
            max_at_once=8,
            listing_done=False,
            elapsed=float(self.looks),
            by_status={"clean": 100 * self.looks},
        )


async def test_plain_lines_while_listing_estimate_rate_and_eta_and_carry_a_utc_timestamp() -> None:
    out = io.StringIO()
    with anyio.move_on_after(0.18):
        await Progress("plain", interval=0.05, stream=out).run(ListingPipeline())
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2
    last = lines[-1]
    assert re.match(r"scanner: progress \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \d", last), last
    assert re.search(r"of [\d,]+ listed so far \(listing [\d,]+/s\)", last), last
    # the ETA while listing covers what is listed so far: a lower bound, and said to be one
    assert re.search(r"eta at least \d+s", last), last


async def test_the_timestamp_is_utc_now() -> None:
    out = io.StringIO()
    with anyio.move_on_after(0.08):
        await Progress("plain", interval=0.05, stream=out).run(FakePipeline())
    stamp = out.getvalue().split()[2]
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - moment).total_seconds()) < 5
