"""A config file that is not a small regular file, a value nested without end, and numbers past any
sane bound are config errors before the run starts.

Regressions: ``--config`` on a fifo waited for a writer forever and ``/dev/zero`` read until memory
ran out; ``a = [[[[...]]]]`` escaped as ``RecursionError`` (an internal error); ``processes =
1000000`` forked until the machine stopped.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from scanner import cli, config, engines
from scanner.errors import ConfigError
from scanner.sources._s3conn import S3Config


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "scanner.toml"
    p.write_text(text)
    return p


def test_a_fifo_is_refused_at_once_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    result: list[BaseException] = []

    def load() -> None:
        try:
            config.load(fifo)
        except BaseException as exc:
            result.append(exc)

    worker = threading.Thread(target=load, daemon=True)
    start = time.monotonic()
    worker.start()
    worker.join(5)
    if worker.is_alive():  # unblock the thread the old code left waiting, then fail
        with open(fifo, "w"):
            pass
        worker.join(5)
        pytest.fail("config.load waited for a writer on a fifo")
    assert time.monotonic() - start < 5
    assert isinstance(result[0], ConfigError), result
    assert "not a regular file" in str(result[0])


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null", "/"])
def test_devices_and_directories_are_refused(path: str) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        config.load(path)


def test_a_file_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, "# " + "x" * config.MAX_CONFIG_BYTES + "\n")
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        config.load(p)


def test_a_file_just_under_the_cap_loads(tmp_path: Path) -> None:
    p = write(tmp_path, "# " + "x" * (config.MAX_CONFIG_BYTES - 100) + "\n[engines.yara]\n")
    assert config.load(p).engine_table("yara") == {}


@pytest.mark.parametrize(
    "text",
    [
        "[engines.yara]\nrules = " + "[" * 5000 + "]" * 5000 + "\n",
        "[engines.yara]\nrules = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n",
        "[engines.yara]\nrules = " + "[" * 200 + "]" * 200 + "\n",  # deep for us, fine for tomllib
        "[s3]\nx = " + "[" * 200 + "]" * 200 + "\n",
    ],
)
def test_a_deeply_nested_value_is_a_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="nested"):
        config.load(write(tmp_path, text))


def test_ordinary_nesting_still_loads(tmp_path: Path) -> None:
    s = config.load(write(tmp_path, '[engines.yara]\nrules = [["a"], ["b"]]\n'))
    assert s.engine_table("yara")["rules"] == [["a"], ["b"]]


@pytest.mark.parametrize(
    ("engine", "key", "value"),
    [
        ("yara", "processes", "1000000"),
        ("yara", "max_file_size", '"2PiB"'),
        ("metadefender", "jobs", "1000000"),
        ("metadefender", "connect_timeout", "1e9"),
        ("metadefender", "read_timeout", "inf"),
        ("metadefender", "poll_timeout", "1e12"),
        ("metadefender", "max_quota_wait", "1e9"),
        ("metadefender", "burst", "10000000"),
        ("metadefender", "dedupe_cache", "1000000000"),
        ("metadefender", "requests_per_second", "1e9"),
    ],
)
def test_every_engine_number_has_a_maximum(tmp_path: Path, engine: str, key: str, value: str) -> None:
    extra = 'api_key = "k"\n' if engine == "metadefender" else ""
    s = config.load(write(tmp_path, f"[engines.{engine}]\n{extra}{key} = {value}\n"))
    with pytest.raises(ConfigError, match=rf"engines\.{engine}\.{key}: "):
        engines.validate_all(s)


@pytest.mark.parametrize(
    ("key", "value"),
    [("list_concurrency", 100000), ("connect_timeout", 1e9), ("read_timeout", float("inf"))],
)
def test_every_s3_number_has_a_maximum(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"s3\.{key}: "):
        S3Config.from_table({key: value})


def test_the_defaults_are_within_the_bounds() -> None:
    engines.validate_all(config.Settings(engines={"metadefender": {"api_key": "k"}, "yara": {}}))
    S3Config.from_table({})


@pytest.mark.parametrize("jobs", ["1000000", "10001"])
def test_jobs_on_the_command_line_has_a_maximum(jobs: str, capfd: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["scan", "/nonexistent-source", "--jobs", jobs]) == 2
    err = capfd.readouterr().err
    assert "--jobs" in err and "at most 10,000" in err, err


def test_jobs_at_the_maximum_is_accepted() -> None:
    args = cli.build_parser().parse_args(["scan", ".", "--jobs", "10000"])
    assert args.jobs == 10000
