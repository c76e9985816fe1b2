"""A vendor that resets, answers 500, hangs, sends malformed or truncated JSON, or more than it
promised: every target still ends, in bounded time, with the right kind of line.

The MetaDefender engine runs in this process through the real pipeline and NDJSON sink; between it
and the simulator sits :class:`FaultProxy`, so the faults come over a real socket.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from scanner.config import validate_section
from scanner.engines.metadefender import Config, create
from scanner.model import Kind, Target
from scanner.pipeline import Pipeline
from scanner.simulators.metadefender import STATE, SimState, make_app
from scanner.sinks.ndjson import NdjsonSink
from scanner.sources.local import LocalSource
from scanner.testing import MemorySource, eicar

from .conftest import KEY, KINDS, FaultProxy, scanner_argv, scanner_env, serve, whole_lines, write_config

pytestmark = pytest.mark.anyio

READ_TIMEOUT = 0.3
ATTEMPTS = 2
#: the engine tuned so a persistent fault gives up quickly: two tries, tiny backoff, fast polls
ENGINE: dict[str, Any] = {
    "api_key": KEY,
    "read_timeout": READ_TIMEOUT,
    "connect_timeout": 1.0,
    "retry_attempts": ATTEMPTS,
    "retry_base": 0.02,
    "retry_cap": 0.05,
    "poll_initial": 0.02,
    "poll_max": 0.1,
    "hash_linger": 0.01,
}


def engine_config(url: str, **overrides: Any) -> Config:
    return validate_section(Config, {"base_url": url, **ENGINE, **overrides}, "engines.metadefender")


#: long enough for a few retries of every target; a hang shows up as a failure, not a stuck CI job
BOUND = 10.0

BODIES = {
    "mem://alpha": b"alpha " * 100,
    "mem://beta": b"beta " * 1000,
    "mem://gamma": b"gamma",
    "mem://eicar.com": eicar(),
}
EXPECTED = {
    "mem://alpha": "clean",
    "mem://beta": "clean",
    "mem://gamma": "clean",
    "mem://eicar.com": "infected",
}

#: what a fault that never stops leaves on every line it touches
PERSISTENT_CODE = {
    "reset": "transport",
    "500": "server",
    "stall": "transport",
    "malformed": "protocol",
    "truncated": "transport",
    "oversized": "transport",
}


async def scan_through_proxy(
    tmp_path: Path, proxy: FaultProxy, url: str, bodies: dict[str, bytes] = BODIES
) -> tuple[dict[str, dict[str, Any]], float]:
    """Every body through pipeline -> engine -> proxy -> simulator; the lines by target, and the time."""
    out = tmp_path / "out.ndjson"
    sink = NdjsonSink(str(out))
    sink.open()
    source = MemorySource([Target(Kind.FILE, name) for name in bodies], bodies=bodies)
    started = time.monotonic()
    with anyio.fail_after(BOUND):
        async with create(engine_config(url)) as engine:
            await Pipeline([source], engine, sink, max_at_once=len(bodies)).run()
    await sink.aclose()
    lines = whole_lines(out)
    by_target = {str(x["target"]): x for x in lines}
    assert len(by_target) == len(lines) == len(bodies), "one line per target"
    return by_target, time.monotonic() - started


def served_sim(**options: Any) -> Any:
    options.setdefault("api_keys", KEY)
    options.setdefault("scan_seconds", 0.05)
    return make_app(**options)


def sim_state(app: Any) -> SimState:
    state: SimState = app[STATE]
    return state


@pytest.mark.parametrize("route", ["hash", "upload", "poll"])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_fault_once_is_retried_or_ends_one_line_in_error(
    tmp_path: Path, kind: str, route: str
) -> None:
    app = served_sim()
    async with serve(app) as upstream:
        proxy = FaultProxy(upstream)
        async with serve(proxy.app()) as url:
            proxy.inject(kind, route, times=1)
            lines, elapsed = await scan_through_proxy(tmp_path, proxy, url)
    assert proxy.injected[(route, kind)] == 1, "the fault never fired"
    verdicts = {t: x["verdict"] for t, x in lines.items()}
    if kind == "malformed":
        # garbage in a 200 answer is not retried (the request may have taken effect): the targets
        # that shared that answer get an error line saying so, the others their verdict
        failed = {t for t, x in lines.items() if x["verdict"] == "error"}
        assert failed, verdicts
        for t in failed:
            assert lines[t]["error"]["code"] == "protocol"
            assert lines[t]["error"]["message"]
        assert {t: v for t, v in verdicts.items() if t not in failed} == {
            t: v for t, v in EXPECTED.items() if t not in failed
        }
        if route != "hash":  # one answer concerns one target, except the shared bulk lookup
            assert len(failed) == 1
    else:
        assert verdicts == EXPECTED, [x["error"] for x in lines.values() if x["error"]]
    assert elapsed < BOUND


@pytest.mark.parametrize("kind", KINDS)
async def test_a_fault_that_never_stops_ends_every_line_in_error_in_bounded_time(
    tmp_path: Path, kind: str
) -> None:
    # on the poll route: the upload has happened, so the job has the most state to lose there
    app = served_sim()
    async with serve(app) as upstream:
        proxy = FaultProxy(upstream)
        async with serve(proxy.app()) as url:
            proxy.inject(kind, "poll", times=None, stall=30)
            lines, elapsed = await scan_through_proxy(tmp_path, proxy, url)
    for x in lines.values():
        assert x["verdict"] == "error", x
        assert x["error"]["code"] == PERSISTENT_CODE[kind], x["error"]
        assert "Traceback" not in x["error"]["message"]
    tries = 1 if kind == "malformed" else ATTEMPTS
    # aiohttp itself retries an idempotent GET once when a kept-alive connection turns out dead
    assert tries * len(BODIES) <= proxy.injected_total(kind) <= 2 * tries * len(BODIES)
    assert sim_state(app).uploads == len(BODIES)  # a failing poll never re-uploads
    # each job: at most ATTEMPTS reads that time out, plus backoff and polling slack
    assert elapsed < ATTEMPTS * READ_TIMEOUT + 3.0


async def test_a_stall_longer_than_the_read_timeout_is_cut_at_the_read_timeout(tmp_path: Path) -> None:
    app = served_sim()
    async with serve(app) as upstream:
        proxy = FaultProxy(upstream)
        async with serve(proxy.app()) as url:
            proxy.inject("stall", "upload", times=len(BODIES), stall=60)
            lines, elapsed = await scan_through_proxy(tmp_path, proxy, url)
    assert {t: x["verdict"] for t, x in lines.items()} == EXPECTED
    assert proxy.injected_total("stall") == len(BODIES)
    assert elapsed < 2 * READ_TIMEOUT + 3.0  # not the 60 s the server would have stalled


async def test_a_file_that_shrinks_between_hashing_and_upload_is_reported_changed_at_once(
    tmp_path: Path,
) -> None:
    """The engine hashes a local file, looks the hash up, then re-reads the file to upload it. If the
    file shrank in between, the upload promises more bytes than it sends."""
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"A" * 100_000)
    app = served_sim()
    async with serve(app) as upstream:
        proxy = FaultProxy(upstream)
        proxy.on("hash", lambda: os.truncate(victim, 50_000))  # after staging, before the upload
        async with serve(proxy.app()) as url:
            config = engine_config(url, read_timeout=1.0)
            source = LocalSource(str(victim))
            target = Target(Kind.FILE, str(victim), size=100_000)
            started = time.monotonic()
            with anyio.fail_after(30):
                async with create(config) as engine:
                    try:
                        outcome: Any = await engine.scan(target, source)
                    except Exception as exc:
                        outcome = exc
            elapsed = time.monotonic() - started
    assert victim.stat().st_size == 50_000, "the hook never ran"
    assert getattr(outcome, "code", None) == "changed", outcome
    assert elapsed < 1.0, f"{elapsed:.1f} s: waited for the read timeout instead of noticing"


async def test_a_reset_in_the_middle_of_an_upload_is_retried(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(4 << 20))  # several 1 MiB chunks: the reset lands mid-stream
    out = tmp_path / "out.ndjson"
    sink = NdjsonSink(str(out))
    sink.open()
    app = served_sim()
    async with serve(app) as upstream:
        proxy = FaultProxy(upstream)
        proxy.inject("reset", "upload", times=1, early=True)
        async with serve(proxy.app()) as url:
            with anyio.fail_after(BOUND):
                async with create(engine_config(url)) as engine:
                    await Pipeline([LocalSource(str(big))], engine, sink, max_at_once=1).run()
    await sink.aclose()
    assert proxy.injected[("upload", "reset")] == 1
    [line] = whole_lines(out)
    assert line["verdict"] == "clean", line["error"]
    assert sim_state(app).uploads == 1


async def test_the_command_ends_with_one_line_per_file_through_a_mix_of_faults(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    for i in range(24):
        (root / f"f{i:02}.txt").write_bytes(f"file {i} ".encode() * (i + 1))
    (root / "eicar.com").write_bytes(eicar())
    out = tmp_path / "out.ndjson"
    app = served_sim()
    async with serve(app) as upstream:
        proxy = FaultProxy(upstream)
        # one bulk lookup serves every file: two faults, then it gets through
        proxy.inject("reset", "hash", times=1)
        proxy.inject("truncated", "hash", times=1)
        for kind in ("reset", "500", "stall", "truncated", "oversized"):
            proxy.inject(kind, "poll", times=2, stall=30)
        for kind in ("500", "stall"):  # resets mid-upload: see test_a_reset_in_the_middle_of_an_upload
            proxy.inject(kind, "upload", times=2, stall=30)
        async with serve(proxy.app()) as url:
            cfg = write_config(tmp_path, url, read_timeout=READ_TIMEOUT, retry_attempts=6)
            argv = scanner_argv("scan", str(root), "--engine", "metadefender", "--config", str(cfg))
            with anyio.fail_after(60):
                proc = await anyio.run_process([*argv, "-o", str(out), "-q"], env=scanner_env(), check=False)
    assert proxy.injected_total() == 16
    assert proc.returncode == 1, proc.stderr  # EICAR found, and every fault retried away
    assert proc.stderr == b""
    lines = whole_lines(out)
    assert sorted(Path(str(x["target"])).name for x in lines) == sorted(p.name for p in root.iterdir())
    assert {x["verdict"] for x in lines} == {"clean", "infected"}


async def test_an_engine_that_cannot_start_exits_2_with_one_line(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.txt").write_bytes(b"a")
    app = served_sim()
    async with serve(app) as upstream:
        proxy = FaultProxy(upstream)
        proxy.inject("500", "apikey", times=None)
        async with serve(proxy.app()) as url:
            cfg = write_config(tmp_path, url, read_timeout=READ_TIMEOUT, retry_attempts=2)
            with anyio.fail_after(60):
                proc = await anyio.run_process(
                    scanner_argv("scan", str(root), "--engine", "metadefender", "--config", str(cfg)),
                    env=scanner_env(),
                    check=False,
                )
    assert proxy.injected[("apikey", "500")] == 2
    assert proc.returncode == 2
    assert proc.stdout == b""
    err = proc.stderr.decode().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("scanner: error: ") and "HTTP 500" in err[0]
    assert KEY not in proc.stderr.decode()
