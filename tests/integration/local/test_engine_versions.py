"""Engines that read a local file report the version they read (from the fstat of what they read), so
a state store whose walk did not stat the file still records the version of the content scanned."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest
from aiohttp.test_utils import TestServer

from scanner._versions import file_version
from scanner.config import validate_section
from scanner.engines.metadefender import Config, MetaDefenderEngine
from scanner.model import Kind, Outcome, Status, Target
from scanner.simulators.metadefender import make_app
from scanner.sources.local import LocalSource
from scanner.state import content_version
from scanner.testing import eicar

pytestmark = pytest.mark.anyio

KEY = "md-test-SECRET-0123456789abcdef"


async def test_metadefender_outcomes_carry_each_files_own_version(tmp_path: Path) -> None:
    # two files of the same content share one lookup, not one version: each keeps its own mtime
    (tmp_path / "a").write_bytes(eicar())
    (tmp_path / "b").write_bytes(eicar())
    (tmp_path / "c").write_bytes(b"clean bytes")
    for i, name in enumerate("abc"):
        os.utime(tmp_path / name, (1.0, 1_600_000_000.25 + i))
    source = LocalSource(str(tmp_path))  # no stat_files: targets come without size or mtime
    targets = [t async for t in source.targets()]
    assert all(t.size is None and t.mtime is None for t in targets)
    app = make_app(api_keys=KEY)
    out: dict[str, Outcome] = {}
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        values = {"base_url": str(server.make_url("")).rstrip("/"), "api_key": KEY, "poll_initial": 0.02}
        config = validate_section(Config, values, "engines.metadefender")
        async with MetaDefenderEngine(config) as engine:

            async def one(t: Target) -> None:
                out[t.target] = await engine.scan(t, source)

            async with anyio.create_task_group() as tg:
                for t in targets:
                    tg.start_soon(one, t)
    for t in targets:
        st = os.stat(t.target)
        got = out[t.target]
        walked = Target(Kind.FILE, t.target, size=st.st_size, version=file_version(st))
        assert (got.size, got.version) == (st.st_size, content_version(walked)), t.target
    assert out[str(tmp_path / "a")].status is Status.INFECTED
