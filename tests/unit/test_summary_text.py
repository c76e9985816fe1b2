"""The summary an operator reads on stderr: what it advises and what it counts.

Regressions: an interrupted run writing to stdout advised "run again with the same --state and
--output", and a rerun appending with ``>>`` then held every line twice.
"""

from __future__ import annotations

import pytest

from scanner import cli
from scanner.pipeline import Summary


def summary(**kw: object) -> Summary:
    base: dict[str, object] = {
        "listed": 12,
        "written": 2,
        "elapsed": 5.0,
        "by_status": {"clean": 2},
        "errors_by_code": {},
        "interrupted": True,
    }
    return Summary(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("state", [None, "s.db"])
def test_an_interrupted_run_to_stdout_says_it_cannot_be_resumed(
    capsys: pytest.CaptureFixture[str], state: str | None
) -> None:
    cli._print_summary(summary(), "stdout", cli._Notable(), listing_done=False, state=state)
    err = capsys.readouterr().err
    assert "same --state and --output" not in err
    assert "stdout cannot be resumed" in err
    assert "--output FILE --state PATH" in err


@pytest.mark.parametrize("state", [None, "s.db"])
def test_an_interrupted_run_to_s3_says_the_report_is_written_whole_by_a_new_run(
    capsys: pytest.CaptureFixture[str], state: str | None
) -> None:
    cli._print_summary(summary(), "s3://b/report.ndjson", cli._Notable(), listing_done=False, state=state)
    err = capsys.readouterr().err
    assert "same --state and --output" not in err
    assert "an S3 report is never resumed" in err


def test_an_interrupted_run_to_a_file_with_state_is_continued_by_the_same_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli._print_summary(summary(), "/r/out.ndjson", cli._Notable(), listing_done=True, state="s.db")
    assert "run it again (same --state and --output) to finish" in capsys.readouterr().err
