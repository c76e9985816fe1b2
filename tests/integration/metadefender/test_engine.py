"""The MetaDefender engine against the simulator over 127.0.0.1: verdicts, hash-first, dedupe, limits."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from scanner.engines._staging import FileChunks
from scanner.errors import ServerError, TargetError
from scanner.model import Kind, Status, Target
from scanner.sources.local import LocalSource
from scanner.testing import eicar

from .conftest import create, memory, scan_all, simulator

pytestmark = pytest.mark.anyio

EXPECTED = {
    0: Status.CLEAN, 7: Status.CLEAN,
    1: Status.INFECTED, 4: Status.INFECTED, 6: Status.INFECTED, 8: Status.INFECTED,
    2: Status.SUSPICIOUS,
    9: Status.UNSCANNABLE, 10: Status.UNSCANNABLE, 12: Status.UNSCANNABLE, 13: Status.UNSCANNABLE,
    14: Status.UNSCANNABLE, 15: Status.UNSCANNABLE,
    3: Status.ERROR, 11: Status.ERROR,
}  # fmt: skip


async def test_every_result_code_maps_as_the_issue_says() -> None:
    bodies = {f"code-{code}": f"MD-RESULT-{code} sample".encode() for code in EXPECTED}
    bodies["eicar.com"] = eicar()
    bodies["plain.txt"] = b"nothing to see"
    async with simulator(scan_seconds=0.15) as sim:
        source, targets = memory(bodies)
        async with create(sim.config()) as engine:
            out = await scan_all(engine, source, targets)
    for code, status in EXPECTED.items():
        got = out[f"code-{code}"]
        assert got.status is status, code
        assert got.vendor is not None
        assert got.vendor["scan_all_result_i"] == code
        assert got.vendor["data_id"]
        assert got.vendor["sha256"] == got.sha256
    assert out["code-11"].error is not None
    assert out["code-11"].error.retryable
    assert out["code-3"].error is not None
    assert not out["code-3"].error.retryable
    infected = out["eicar.com"]
    assert infected.status is Status.INFECTED
    assert [f.name for f in infected.findings] == ["EICAR-Test-File (not a virus)"]
    assert out["plain.txt"].status is Status.CLEAN
    # 255 (still running) is never a verdict: the engine kept polling until the scan was done
    assert sim.state.polls > sim.state.uploads


async def test_known_hashes_are_answered_without_an_upload() -> None:
    async with simulator() as sim:
        sim.state.preload(eicar())
        sim.state.preload(b"old clean file")
        source, targets = memory({"a": eicar(), "b": b"old clean file", "c": b"brand new"})
        async with create(sim.config()) as engine:
            out = await scan_all(engine, source, targets)
            assert engine.statistics()["hash_batches"] == 1  # three jobs, one bulk lookup
    assert out["a"].status is Status.INFECTED
    assert out["a"].findings[0].name == "EICAR-Test-File (not a virus)"
    assert out["a"].vendor is not None
    assert out["a"].vendor["via"] == "hash"
    assert out["b"].status is Status.CLEAN
    assert sim.state.uploads == 1
    assert sim.state.hash_requests == 1


async def test_duplicates_are_uploaded_once_and_share_the_verdict() -> None:
    contents = [b"alpha", b"beta", eicar()]
    bodies = {f"copy-{i}": contents[i % 3] for i in range(12)}
    async with simulator(scan_seconds=0.05) as sim:
        source, targets = memory(bodies)
        async with create(sim.config()) as engine:
            out = await scan_all(engine, source, targets)
            again = await engine.scan(targets[0], source)  # later in the run: no request at all
    assert sim.state.uploads == 3
    assert sum(1 for o in out.values() if o.status is Status.INFECTED) == 4
    assert len({o.vendor["data_id"] for o in out.values() if o.vendor}) == 3
    assert sum(1 for o in out.values() if o.vendor and o.vendor.get("deduplicated")) == 9
    assert again.status is Status.CLEAN


async def test_local_files_are_hashed_by_path_and_streamed(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"x" * (3 * 1024 * 1024 + 7))
    (tmp_path / "eicar.com").write_bytes(eicar())
    source = LocalSource(str(tmp_path))
    targets = [t async for t in source.targets()]
    async with simulator() as sim, create(sim.config()) as engine:
        out = {t.target: await engine.scan(t, source) for t in targets}
    assert out[str(tmp_path / "eicar.com")].status is Status.INFECTED
    big = out[str(tmp_path / "big.bin")]
    assert big.status is Status.CLEAN
    assert big.size == 3 * 1024 * 1024 + 7
    assert sim.state.upload_bytes == 3 * 1024 * 1024 + 7 + len(eicar())


async def test_over_the_keys_upload_limit_is_unscannable_without_an_upload() -> None:
    async with simulator(max_upload_mb=1) as sim:
        source, targets = memory({"huge": b"y" * (1024 * 1024 + 1)})
        async with create(sim.config()) as engine:
            assert engine.max_size == 1024 * 1024
            out = await engine.scan(targets[0], source)
    assert out.status is Status.UNSCANNABLE
    assert out.error is not None
    assert out.error.code == "too_large"
    assert sim.state.uploads == 0


async def test_a_server_error_is_retried() -> None:
    async with simulator(fail_uploads=2) as sim:
        source, targets = memory({"a": b"retry me"})
        async with create(sim.config()) as engine:
            out = await engine.scan(targets[0], source)
            assert engine.http.statistics().retries == 2
    assert out.status is Status.CLEAN
    assert out.attempts == 3  # the verdict line says what it took
    assert sim.state.uploads == 1


async def test_a_failure_after_retries_counts_its_tries() -> None:
    async with simulator(fail_uploads=3) as sim:
        source, targets = memory({"a": b"never lands", "b": b"lands at once"})
        async with create(sim.config(retry_attempts=3)) as engine:
            with pytest.raises(ServerError) as failed:
                await engine.scan(targets[0], source)
            assert failed.value.attempts == 3
            # the simulator's failures are spent: the next target's count starts afresh
            assert (await engine.scan(targets[1], source)).attempts == 1


async def test_s3_kind_bodies_are_spooled(tmp_path: Path) -> None:
    source, _ = memory({"s3://bucket/key.exe": eicar()})
    target = Target(Kind.S3, "s3://bucket/key.exe", bucket="bucket", key="key.exe")
    async with simulator() as sim, create(sim.config(spool_dir=str(tmp_path))) as engine:
        out = await engine.scan(target, source)
    assert out.status is Status.INFECTED
    assert list(tmp_path.iterdir()) == []  # the spool file is gone
    assert sim.state.reports[out.vendor["data_id"]].name == "key.exe"  # type: ignore[index]


async def test_large_non_local_bodies_are_spooled_to_disk_and_removed(tmp_path: Path) -> None:
    big = b"z" * (2 * 1024 * 1024 + 3) + eicar()
    source, _ = memory({"s3://bucket/big.bin": big})
    target = Target(Kind.S3, "s3://bucket/big.bin", bucket="bucket", key="big.bin")
    seen: list[str] = []
    async with simulator() as sim, create(sim.config(spool_dir=str(tmp_path))) as engine:
        real = engine.http.request

        async def spy(method: str, path: str, **kw: object) -> object:
            seen.extend(p.name for p in tmp_path.iterdir())
            return await real(method, path, **kw)  # type: ignore[arg-type]

        engine.http.request = spy  # type: ignore[method-assign]
        out = await engine.scan(target, source)
    assert out.status is Status.INFECTED
    assert any(name.startswith("scanner-spool-") for name in seen)  # on disk while uploading
    assert list(tmp_path.iterdir()) == []  # and gone afterwards
    assert sim.state.upload_bytes == len(big)


async def test_cancelling_a_scan_mid_poll_leaves_nothing_held_and_a_twin_takes_over() -> None:
    async with simulator(scan_seconds=0.5) as sim:
        source, targets = memory({"first": b"same bytes", "second": b"same bytes"})
        async with create(sim.config()) as engine:
            with anyio.move_on_after(0.2):
                await engine.scan(targets[0], source)
                pytest.fail("the scan should still be polling")
            assert engine.limits.statistics().in_flight == 0
            assert engine.http.statistics().in_flight == 0
            out = await engine.scan(targets[1], source)  # the same content, after its owner was cancelled
    assert out.status is Status.CLEAN
    assert sim.state.hash_requests == 2
    assert sim.state.uploads == 1  # the second lookup found the first upload, still running, and polled it


async def test_an_upload_whose_answer_is_lost_is_checked_before_it_is_sent_again() -> None:
    async with simulator(drop_uploads=1) as sim:
        source, targets = memory({"a": eicar()})
        async with create(sim.config()) as engine:
            out = await engine.scan(targets[0], source)
    assert out.status is Status.INFECTED
    assert sim.state.dropped_uploads == 1
    assert sim.state.uploads == 1  # the lost answer's upload counted, and no second upload was sent
    assert sim.state.hash_requests == 2  # the first lookup, then the check after the lost answer


async def test_a_lost_answer_for_an_upload_that_did_not_land_uploads_once_more() -> None:
    async with simulator(fail_uploads=0) as sim:
        source, targets = memory({"a": b"never arrived"})
        async with create(sim.config()) as engine:
            real = engine.http.request
            lost = 0

            async def flaky(method: str, path: str, **kw: object) -> object:
                nonlocal lost
                if path == "/v4/file" and not lost:
                    lost += 1
                    from scanner.errors import TransportError

                    raise TransportError("simulated reset", code="transport_unconfirmed")
                return await real(method, path, **kw)  # type: ignore[arg-type]

            engine.http.request = flaky  # type: ignore[method-assign]
            out = await engine.scan(targets[0], source)
    assert out.status is Status.CLEAN
    assert sim.state.uploads == 1


async def test_a_file_that_changes_after_hashing_is_a_changed_error_at_once(tmp_path: Path) -> None:
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"A" * 200_000)
    source = LocalSource(str(victim))
    [target] = [t async for t in source.targets()]
    async with simulator() as sim, create(sim.config(read_timeout=30)) as engine:
        real = engine.http.request

        async def shrink_first(method: str, path: str, **kw: object) -> object:
            if path == "/v4/file":
                os.truncate(victim, 100_000)  # after hashing, before the upload reads it
            return await real(method, path, **kw)  # type: ignore[arg-type]

        engine.http.request = shrink_first  # type: ignore[method-assign]
        with anyio.fail_after(5), pytest.raises(TargetError) as info:
            await engine.scan(target, source)
    assert info.value.code == "changed"
    assert sim.state.uploads == 0


async def test_file_chunks_close_safely_while_a_read_is_in_flight(tmp_path: Path) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(b"x" * (3 << 20))
    chunks = FileChunks(str(f), 3 << 20)
    assert len(await chunks.__anext__()) == 1 << 20
    ended: list[bool] = []

    async def reader() -> None:
        try:
            await chunks.__anext__()
        except StopAsyncIteration:
            ended.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)  # a read in flight on another task, as aiohttp's writer does
        await anyio.sleep(0)
        await chunks.aclose()  # must not raise, and must not close the file under the reader
    assert ended == [True]  # the read in flight finished, saw the close, and ended the stream
    with pytest.raises(StopAsyncIteration):
        await chunks.__anext__()
