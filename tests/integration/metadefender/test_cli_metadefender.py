"""End to end: ``python -m scanner scan DIR --engine metadefender`` as a subprocess, against the simulator
served in this test's event loop on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import anyio
import orjson
import pytest

from scanner.testing import eicar

from .conftest import KEY, simulator

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def write_config(tmp_path: Path, url: str, **extra: object) -> Path:
    lines = [
        "[engines.metadefender]",
        f'base_url = "{url}"',
        'api_key = "${METADEFENDER_API_KEY}"',
        "poll_initial = 0.02",
        "poll_max = 0.2",
        "hash_linger = 0.01",
        "retry_base = 0.05",
        "retry_cap = 0.5",
    ]
    lines += [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in extra.items()]
    path = tmp_path / "scanner.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def run_scanner(args: list[str], key: str = KEY) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "METADEFENDER_API_KEY": key}
    with anyio.fail_after(120):
        return await anyio.run_process([sys.executable, "-m", "scanner", *args], env=env, check=False)


def tree(root: Path, n: int) -> Path:
    root.mkdir()
    for i in range(n):
        (root / f"f{i}.txt").write_bytes(f"file number {i}".encode())
    return root


async def test_a_scan_ends_with_verdicts_and_the_summary(tmp_path: Path) -> None:
    root = tree(tmp_path / "data", 3)
    (root / "eicar.com").write_bytes(eicar())
    (root / "copy.txt").write_bytes(b"file number 0")
    out = tmp_path / "out.ndjson"
    async with simulator() as sim:
        cfg = write_config(tmp_path, sim.url)
        proc = await run_scanner(
            ["scan", str(root), "--engine", "metadefender", "--config", str(cfg), "-o", str(out)]
        )
    assert proc.returncode == 1, proc.stderr
    lines = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert len(lines) == 5
    by_name = {Path(x["target"]).name: x for x in lines}
    assert by_name["eicar.com"]["verdict"] == "infected"
    assert by_name["eicar.com"]["findings"][0]["name"] == "EICAR-Test-File (not a virus)"
    assert by_name["eicar.com"]["vendor"]["data_id"]
    assert all(x["engine"] == "metadefender" for x in lines)
    assert sim.state.uploads == 4  # the copy shared its twin's upload


async def test_quota_exhausted_run_writes_skipped_lines_and_exits_2(tmp_path: Path) -> None:
    root = tree(tmp_path / "data", 6)
    out = tmp_path / "out.ndjson"
    async with simulator(prevention_limit=2, interval=5 * 3600) as sim:
        cfg = write_config(tmp_path, sim.url)
        proc = await run_scanner(
            ["scan", str(root), "--engine", "metadefender", "--config", str(cfg), "-o", str(out)]
        )
    assert proc.returncode == 2, proc.stderr
    lines = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert len(lines) == 6
    verdicts = sorted(x["verdict"] for x in lines)
    assert verdicts == ["clean", "clean", "skipped", "skipped", "skipped", "skipped"]
    for x in lines:
        if x["verdict"] == "skipped":
            assert x["error"]["code"] == "quota_exhausted"
            assert x["error"]["reset_at"].endswith("Z")
    assert sim.state.quota_429 == 0
    assert sim.state.uploads == 2


async def test_wrong_key_exits_2_with_one_clear_line_after_few_requests(tmp_path: Path) -> None:
    root = tree(tmp_path / "data", 20)
    out = tmp_path / "out.ndjson"
    wrong = "wrong-key-ABCDEF123456"
    async with simulator() as sim:
        cfg = write_config(tmp_path, sim.url)
        proc = await run_scanner(
            ["scan", str(root), "--engine", "metadefender", "--config", str(cfg), "-o", str(out)], key=wrong
        )
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "credentials refused" in lines[0]
    assert "401" in lines[0]
    assert sim.state.requests <= 3
    assert wrong not in err


async def test_the_key_never_appears_in_stdout_stderr_or_output(tmp_path: Path) -> None:
    root = tree(tmp_path / "data", 4)
    (root / "eicar.com").write_bytes(eicar())
    (root / "bad.bin").write_bytes(b"MD-RESULT-3")
    async with simulator(throttle_limit=2, throttle_window=0.3, fail_uploads=1) as sim:
        cfg = write_config(tmp_path, sim.url)
        proc = await run_scanner(["scan", str(root), "--engine", "metadefender", "--config", str(cfg), "-vv"])
    assert proc.returncode in (1, 2), proc.stderr
    assert sim.state.throttle_429 + sim.state.failed_uploads >= 2  # retries happened and were logged
    for stream in (proc.stdout, proc.stderr):
        assert KEY.encode() not in stream
    assert len(proc.stdout.splitlines()) == 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_simulate_command_serves_the_simulator() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scanner",
            "simulate",
            "metadefender",
            "--port",
            str(port),
            "--set",
            "api_keys=k123",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v4/apikey", headers={"apikey": "k123"})
            try:
                with urllib.request.urlopen(req, timeout=2) as resp:  # noqa: S310 - fixed local URL
                    body = orjson.loads(resp.read())
                    assert resp.headers["X-RateLimit-For"] == "reputation_api"
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert body["max_upload_file_size"] == 140
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()
