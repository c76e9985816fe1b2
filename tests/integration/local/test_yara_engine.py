"""The embedded YARA engine in process: rules from config, verdict mapping, limits, spooling, workers."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from scanner.engines.yara import Config, YaraEngine
from scanner.errors import ConfigError
from scanner.model import Kind, Status, Target
from scanner.pipeline import Pipeline
from scanner.sources.local import LocalSource
from scanner.testing import MemorySink, MemorySource, eicar

pytestmark = pytest.mark.anyio

RULE = """
rule Marker_Suspicious { meta: verdict = "suspicious" threat = "Test.Marker"
  strings: $m = "SCANNER-TEST-MARKER" condition: $m }
"""


async def scan_tree(root: Path, config: Config) -> dict[str, tuple[Status, list[str], str | None]]:
    sink = MemorySink()
    async with YaraEngine(config) as engine:
        await Pipeline([LocalSource(str(root))], engine, sink, max_at_once=engine.default_jobs).run()
    return {
        os.path.basename(v.target.target): (
            v.status,
            [f.name for f in v.findings],
            v.error.code if v.error else None,
        )
        for v in sink.verdicts
    }


async def test_user_rules_suspicious_meta_and_size_limit(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "marker.yar").write_text(RULE)
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "marked.txt").write_bytes(b"xx SCANNER-TEST-MARKER yy")
    (tree / "both.txt").write_bytes(b"SCANNER-TEST-MARKER " + eicar())
    (tree / "big.bin").write_bytes(b"\0" * 2048)
    (tree / "clean.txt").write_bytes(b"hello")
    got = await scan_tree(tree, Config(rules=(str(rules),), max_file_size=1024))
    assert got["marked.txt"] == (Status.SUSPICIOUS, ["Test.Marker"], None)
    assert got["both.txt"][0] is Status.INFECTED  # any infected rule wins over suspicious ones
    assert sorted(got["both.txt"][1]) == ["EICAR-Test-File", "Test.Marker"]
    assert got["big.bin"] == (Status.UNSCANNABLE, [], "too_large")
    assert got["clean.txt"] == (Status.CLEAN, [], None)


async def test_rule_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yar"
    bad.write_text("rule broken { condition: nonsense_identifier }")
    with pytest.raises(ConfigError, match=r"bad\.yar: error\[E009\]: unknown identifier"):
        async with YaraEngine(Config(rules=(str(bad),))):
            pass
    with pytest.raises(ConfigError, match="no such file or folder"):
        async with YaraEngine(Config(rules=(str(tmp_path / "missing.yar"),))):
            pass


async def test_non_local_bodies_are_spooled_and_hashed(tmp_path: Path) -> None:
    bodies = {"s3://b/eicar": eicar(), "s3://b/clean": b"fine", "s3://b/empty": b""}
    targets = [Target(Kind.S3, k, size=len(v), bucket="b", key=k[7:]) for k, v in bodies.items()]
    sink = MemorySink()
    async with YaraEngine(Config(spool_dir=str(tmp_path))) as engine:
        await Pipeline([MemorySource(targets, bodies=bodies)], engine, sink, max_at_once=4).run()
    got = {v.target.target: v for v in sink.verdicts}
    assert got["s3://b/eicar"].status is Status.INFECTED
    assert got["s3://b/clean"].status is Status.CLEAN
    assert got["s3://b/empty"].sha256 == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert list(tmp_path.iterdir()) == []  # spool files are removed


async def test_a_dead_worker_costs_its_batch_and_is_replaced(tmp_path: Path) -> None:
    for i in range(50):
        (tmp_path / f"f{i}").write_bytes(b"x")
    async with YaraEngine(Config(processes=1)) as engine:
        pool = engine._pool
        assert pool is not None
        os.kill(pool._workers[0].process.pid, signal.SIGKILL)
        sink = MemorySink()
        await Pipeline([LocalSource(str(tmp_path))], engine, sink, max_at_once=8).run()
        codes = {v.error.code for v in sink.verdicts if v.error}
        assert codes <= {"worker_died"}
        assert len(sink.verdicts) == 50
        assert pool.restarts == 1
        sink = MemorySink()
        await Pipeline([LocalSource(str(tmp_path))], engine, sink, max_at_once=8).run()
        assert {v.status for v in sink.verdicts} == {Status.CLEAN}  # the replacement scans


async def test_big_files_are_hashed_and_scanned_whole_and_the_hash_is_right(tmp_path: Path) -> None:
    # 5 MB: read whole, hashed in a thread while scanned; 70 MB (sparse): hashed by streaming,
    # then scanned through yara-x's map. The marker sits at the very end: a short scan would miss it.
    import hashlib

    rules = tmp_path / "marker.yar"
    rules.write_text(RULE)
    tree = tmp_path / "t"
    tree.mkdir()
    marker = b"SCANNER-TEST-MARKER"
    (tree / "mid.bin").write_bytes(os.urandom(5 << 20) + marker)
    with open(tree / "huge.bin", "wb") as f:
        f.truncate(70 << 20)
        f.seek((70 << 20) - len(marker))
        f.write(marker)
    sink = MemorySink()
    async with YaraEngine(Config(rules=(str(rules),))) as engine:
        await Pipeline([LocalSource(str(tree))], engine, sink, max_at_once=4).run()
    by = {os.path.basename(v.target.target): v for v in sink.verdicts}
    for name in ("mid.bin", "huge.bin"):
        data = (tree / name).read_bytes()
        assert by[name].status is Status.SUSPICIOUS, by[name]
        assert by[name].size == len(data)
        assert by[name].sha256 == hashlib.sha256(data).hexdigest()
