"""The summary an operator reads on stderr: what it advises and what it counts.

Regressions: an interrupted run writing to stdout advised "run again with the same --state and
--output", and a rerun appending with ``>>`` then held every line twice.
"""

from __future__ import annotations

from pathlib import Path

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


def test_quiet_prints_the_error_summary_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_bytes(b"harmless")
    listing = tmp_path / "urls.txt"
    listing.write_text("".join(f"not a url {i}\n" for i in range(12)))
    capfd.readouterr()
    code = cli.run(["scan", "d", f"urls:{listing}", "-q", "-o", str(tmp_path / "out.ndjson")])
    err = capfd.readouterr().err
    assert code == 2, err
    lines = err.splitlines()
    assert lines[0] == "scanner: 12 targets ended in error; not scanned, by cause: bad_target 12", err
    assert sum(line.startswith("  error: ") for line in lines) == 10, err
    assert lines[-1] == f"  ... and 2 more errors in {tmp_path / 'out.ndjson'}", err
    assert len(lines) == 12, err  # no counts line, no progress, no advice
    assert "verdicts in" not in err


def test_quiet_prints_nothing_when_nothing_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_bytes(b"harmless")
    capfd.readouterr()
    assert cli.run(["scan", "d", "-q", "-o", str(tmp_path / "out.ndjson")]) == 0
    assert capfd.readouterr().err == ""
