"""The CLI's error paths, in process: each ends in exit status 2 and one clear line.

Regressions from a QA pass: ``--debug`` turned an internal error into exit 1 ("infected"); a dangling
symlink as SOURCE, worker processes that cannot start, and a bad option value each ended in an
"internal error" line or were silently accepted; an interrupted run's summary hid what it lost.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scanner import cli, config, logs
from scanner.engines import _workers
from scanner.pipeline import Summary


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state-home"))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_bytes(b"harmless")
    return tmp_path


def run(capfd: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    capfd.readouterr()
    code = cli.run(argv)
    return code, capfd.readouterr().err


def one_line(code: int, err: str, mentions: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("scanner: error: "), err
    assert "internal error" not in err and "Traceback" not in err, err
    assert mentions in err, err


def test_debug_shows_the_traceback_of_an_internal_error_and_still_exits_2(
    sandbox: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "debug-SECRET-in-a-traceback"
    logs.register_secrets([secret])

    def broken(path: object) -> config.Settings:
        raise RuntimeError(f"a bug that echoes {secret}")

    monkeypatch.setattr(cli.config, "load", broken)
    code, err = run(capfd, ["scan", "d", "--debug"])
    assert code == 2, err  # was 1: the exception escaped run() and Python exits 1
    assert "Traceback" in err and "RuntimeError: a bug that echoes ***" in err
    assert err.splitlines()[-1].startswith("scanner: error: internal error: RuntimeError")
    assert secret not in err
    code, err = run(capfd, ["scan", "d"])
    assert code == 2 and "Traceback" not in err and "run with --debug" in err


@pytest.mark.parametrize("follow", [[], ["--follow-symlinks"]])
@pytest.mark.parametrize("debug", [[], ["--debug"]])
def test_a_dangling_symlink_as_source_is_one_clear_line(
    sandbox: Path, capfd: pytest.CaptureFixture[str], follow: list[str], debug: list[str]
) -> None:
    (sandbox / "dangling").symlink_to(sandbox / "gone")
    code, err = run(capfd, ["scan", "dangling", *follow, *debug])
    one_line(
        code, err, f"{sandbox / 'dangling'}: a symbolic link to '{sandbox / 'gone'}', which does not exist"
    )


def test_a_symlink_loop_as_source_is_one_clear_line(sandbox: Path, capfd: pytest.CaptureFixture[str]) -> None:
    (sandbox / "a").symlink_to(sandbox / "b")
    (sandbox / "b").symlink_to(sandbox / "a")
    code, err = run(capfd, ["scan", "a"])
    one_line(code, err, "a symbolic link that cannot be followed")


def test_worker_processes_that_cannot_start_give_the_cause_not_a_task_group(
    sandbox: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_workers.anyio, "open_process", denied)
    code, err = run(capfd, ["scan", "d", "--progress", "none", "-q"])
    one_line(
        code, err, "cannot start worker process scanner.engines._yara_worker: [Errno 13] Permission denied"
    )


def test_worker_processes_that_die_at_start_give_the_cause(
    sandbox: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = _workers.WorkerPool.__init__

    def no_such_module(self: _workers.WorkerPool, module: str, init: object, size: int) -> None:
        real(self, "scanner.no_such_worker_module", init, size)  # type: ignore[arg-type]

    monkeypatch.setattr(_workers.WorkerPool, "__init__", no_such_module)
    code, err = run(capfd, ["scan", "d", "--progress", "none", "-q", "--debug"])
    one_line(code, err, "worker process scanner.no_such_worker_module failed to start (exit status 1)")


@pytest.mark.parametrize(
    ("flags", "mentions"),
    [
        (["--jobs", "0"], "argument --jobs/-j: must be at least 1 and at most 10,000, not 0"),
        (["--jobs", "-3"], "argument --jobs/-j: must be at least 1 and at most 10,000, not -3"),
        (["--jobs", "many"], "argument --jobs/-j: not a whole number: 'many'"),
        (
            ["--drain-timeout", "-1"],
            "argument --drain-timeout: must be at least 0 and at most 86,400 seconds, not -1",
        ),
        (
            ["--drain-timeout", "nan"],
            "argument --drain-timeout: must be at least 0 and at most 86,400 seconds, not nan",
        ),
        (
            ["--progress-interval", "0"],
            "argument --progress-interval: must be at least 1 and at most 86,400 seconds, not 0",
        ),
        (["--rescan-after", "30d"], "--rescan-after needs --skip-unchanged and --state"),
        (["--rescan-after", "30d", "--state", "s.db"], "--rescan-after needs --skip-unchanged"),
        (
            ["--rescan-infected", "--emit-skipped", "--state", "s.db"],
            "--rescan-infected and --emit-skipped need --skip-unchanged",
        ),
        (["--include", "[z-a]"], "argument --include: '[z-a]' can never match"),
        (["--exclude", "*.[9-0]"], "argument --exclude: '*.[9-0]' can never match"),
        (["--include", ""], "argument --include: an empty pattern matches nothing"),
        (["--min-size", "10", "--max-size", "5"], "--min-size 10 is more than --max-size 5"),
        (
            ["--modified-since", "1d", "--modified-before", "2d"],
            "is not before --modified-before",
        ),
    ],
)
def test_option_values_that_cannot_mean_anything_are_usage_errors(
    sandbox: Path, capfd: pytest.CaptureFixture[str], flags: list[str], mentions: str
) -> None:
    code, err = run(capfd, ["scan", "d", *flags])
    one_line(code, err, mentions)
    assert not (sandbox / "s.db").exists()


def test_option_values_at_their_bounds_are_accepted(sandbox: Path, capfd: pytest.CaptureFixture[str]) -> None:
    flags = ["--jobs", "1", "--drain-timeout", "0", "--progress-interval", "1", "--include", "["]
    flags += ["--min-size", "5", "--max-size", "5", "--modified-since", "2d", "--modified-before", "1d"]
    code, err = run(capfd, ["scan", "d", "-q", "-o", os.devnull, *flags])
    assert code == 0, err  # '[' is a literal to fnmatch: a file may be named so, it is not an error


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


def test_an_interrupted_summary_says_what_was_lost_and_advises_state_only_when_given(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli._print_summary(summary(dropped={"unchanged": 3}), "out.ndjson", cli._Notable(), listing_done=False)
    err = capsys.readouterr().err
    assert (
        "  interrupted: the run is incomplete: 7 targets read from the source got no line "
        "(abandoned in flight or still queued); the rest of the source was not read\n"
    ) in err
    assert "same --state" not in err and "--state PATH lets a rerun continue" in err

    cli._print_summary(summary(written=12), "out.ndjson", cli._Notable(), listing_done=True, state="s.db")
    err = capsys.readouterr().err
    assert "  interrupted: the run is incomplete\n" in err
    assert "run it again (same --state and --output) to finish" in err
