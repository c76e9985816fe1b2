"""The engine with the run's state store: the content cache, and uploads picked up by data_id."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner.engines.metadefender import MetaDefenderEngine
from scanner.model import Status, Verdict
from scanner.state import StateStore
from scanner.testing import eicar

from .conftest import memory, scan_all, simulator

pytestmark = pytest.mark.anyio


async def test_cached_content_is_not_asked_again(tmp_path: Path) -> None:
    store = await StateStore.open(str(tmp_path / "s.db"))
    run = await store.begin_run(None, "metadefender")
    bodies = {"/a": eicar(), "/b": b"clean bytes"}
    async with simulator() as sim:
        async with MetaDefenderEngine(sim.config()) as engine:
            engine.attach_state(store, cache_age=3600)
            source, targets = memory(bodies)
            first = await scan_all(engine, source, targets)
        store.record([Verdict.of(t, "metadefender", first[t.target]) for t in targets], run.run_id)
        await store.commit()
        requests_before = sim.state.uploads, engine.counts["hash_misses"]
        async with MetaDefenderEngine(sim.config()) as engine:
            engine.attach_state(store, cache_age=3600)
            source, targets = memory({"/c": eicar(), "/d": b"clean bytes"})  # same content, new names
            again = await scan_all(engine, source, targets)
            assert engine.counts["cached"] == 2
            assert engine.counts["hash_misses"] == 0 and engine.counts["hash_hits"] == 0
        assert sim.state.uploads == requests_before[0]
    assert again["/c"].status is Status.INFECTED and again["/c"].cached
    assert again["/d"].status is Status.CLEAN and again["/d"].cached
    assert [f.name for f in again["/c"].findings] == [f.name for f in first["/a"].findings]
    await store.aclose()


async def test_an_upload_left_in_flight_is_polled_not_sent_again(tmp_path: Path) -> None:
    store = await StateStore.open(str(tmp_path / "s.db"))
    bodies = {"/x": b"content uploaded by a run that was then killed"}
    async with simulator(scan_seconds=0.2) as sim:
        async with MetaDefenderEngine(sim.config(hash_lookup=False)) as engine:
            engine.attach_state(store, cache_age=0)
            source, targets = memory(bodies)
            await scan_all(engine, source, targets)
        await store.commit()  # the reference was recorded; no verdict line was (the run "died")
        assert (await store.pending("metadefender", targets[0]))["data_id"]  # type: ignore[index]
        uploads = sim.state.uploads
        async with MetaDefenderEngine(sim.config(hash_lookup=False)) as engine:
            engine.attach_state(store, cache_age=0)
            source, targets = memory(bodies)
            resumed = await scan_all(engine, source, targets)
            assert engine.counts["resumed"] == 1
        assert sim.state.uploads == uploads
    assert resumed["/x"].status is Status.CLEAN
    assert resumed["/x"].vendor is not None and resumed["/x"].vendor["via"] == "resumed"
    await store.aclose()
