"""The MetaDefender simulator served on 127.0.0.1 over a real socket, and an engine pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from aiohttp.test_utils import TestServer

from scanner.config import validate_section
from scanner.engines.metadefender import Config, MetaDefenderEngine, create
from scanner.model import Kind, Outcome, Target
from scanner.simulators.metadefender import STATE, SimState, make_app
from scanner.testing import MemorySource

KEY = "md-test-SECRET-0123456789abcdef"

#: engine settings that keep integration tests fast: short polls, short backoff
FAST: dict[str, Any] = {
    "poll_initial": 0.02,
    "poll_factor": 1.5,
    "poll_max": 0.2,
    "hash_linger": 0.01,
    "retry_base": 0.05,
    "retry_cap": 0.5,
}


@dataclass
class Sim:
    url: str
    state: SimState

    def config(self, **overrides: Any) -> Config:
        values: dict[str, Any] = {"base_url": self.url, "api_key": KEY, **FAST, **overrides}
        return validate_section(Config, values, "engines.metadefender")


@asynccontextmanager
async def simulator(**options: Any) -> AsyncIterator[Sim]:
    options.setdefault("api_keys", KEY)
    app = make_app(**options)
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        yield Sim(str(server.make_url("")).rstrip("/"), app[STATE])


def memory(bodies: Mapping[str, bytes]) -> tuple[MemorySource, list[Target]]:
    targets = [Target(Kind.FILE, name) for name in bodies]
    return MemorySource(targets, bodies=dict(bodies)), targets


async def scan_all(
    engine: MetaDefenderEngine, source: MemorySource, targets: list[Target]
) -> dict[str, Outcome]:
    """Scan every target concurrently (one task each, as the pipeline's jobs would)."""
    out: dict[str, Outcome] = {}

    async def one(t: Target) -> None:
        out[t.target] = await engine.scan(t, source)

    async with anyio.create_task_group() as tg:
        for t in targets:
            tg.start_soon(one, t)
    return out


async def scan_each(
    engine: MetaDefenderEngine, source: MemorySource, targets: list[Target]
) -> dict[str, Outcome | Exception]:
    """Like :func:`scan_all`, but a target's exception is its result (as the pipeline records it)."""
    out: dict[str, Outcome | Exception] = {}

    async def one(t: Target) -> None:
        try:
            out[t.target] = await engine.scan(t, source)
        except Exception as exc:
            out[t.target] = exc

    async with anyio.create_task_group() as tg:
        for t in targets:
            tg.start_soon(one, t)
    return out


__all__ = ("FAST", "KEY", "Sim", "create", "memory", "scan_all", "scan_each", "simulator")
