"""Fault injection helpers: a proxy in front of a vendor simulator, and the plumbing the fault,
shutdown and crash tests share.

:class:`FaultProxy` is an aiohttp app that forwards every request to an upstream (the MetaDefender
simulator) and, on the requests a plan names, misbehaves instead:

=============  ====================================================================================
``reset``      the connection is reset (RST) before anything reaches the upstream
``500``        ``HTTP 500`` with an error body, before anything reaches the upstream
``stall``      nothing is sent for ``stall`` seconds (longer than the client's read timeout), then
               the connection is dropped; nothing reaches the upstream
``malformed``  the upstream's answer, with its body replaced by JSON cut short (Content-Length true)
``truncated``  the upstream's answer promising its full length, half of it sent, connection closed
``oversized``  the upstream's answer, followed on the same connection by bytes Content-Length did
               not promise (they poison whatever the client reads next on that connection)
=============  ====================================================================================

The first three happen after the proxy has read the whole request, unless the rule says ``early``:
then the proxy misbehaves as soon as the request line arrives, while the client is still sending its
body. Routes are the MetaDefender families of request: ``apikey``, ``hash``, ``upload``, ``poll``
(``*`` matches any). Each rule fires ``times`` times (``None``: every time). The proxy counts what
it forwarded and what it injected, so a test can prove the fault happened.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import psutil
from aiohttp import web
from aiohttp.test_utils import TestServer

KINDS = ("reset", "500", "stall", "malformed", "truncated", "oversized")
_BEFORE = frozenset({"reset", "500", "stall"})
_HOP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"})


def route_of(method: str, path: str) -> str:
    if path == "/v4/apikey":
        return "apikey"
    if path == "/v4/hash" or path.startswith("/v4/hash/"):
        return "hash"
    if path == "/v4/file" and method == "POST":
        return "upload"
    if path.startswith("/v4/file/"):
        return "poll"
    return "other"


@dataclass
class Rule:
    kind: str
    route: str = "*"
    times: int | None = 1
    stall: float = 30.0
    early: bool = False


class FaultProxy:
    """Forwards to ``upstream``, injecting the faults of :meth:`inject`. Serve it with :func:`serve`."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules: list[Rule] = []
        self.forwarded: Counter[str] = Counter()
        self.injected: Counter[tuple[str, str]] = Counter()
        self.hooks: dict[str, Callable[[], None]] = {}
        self._closing = anyio.Event()
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"<FaultProxy -> {self.upstream} injected={dict(self.injected)}>"

    def inject(
        self, kind: str, route: str = "*", *, times: int | None = 1, stall: float = 30.0, early: bool = False
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown fault {kind!r}")
        if early and kind not in _BEFORE:
            raise ValueError(f"{kind!r} needs the upstream's answer, so it cannot come early")
        self.rules.append(Rule(kind, route, times, stall, early))

    def on(self, route: str, hook: Callable[[], None]) -> None:
        """Call ``hook`` once, when the next request of ``route`` arrives (before it is forwarded)."""
        self.hooks[route] = hook

    def injected_total(self, kind: str | None = None) -> int:
        return sum(n for (_, k), n in self.injected.items() if kind is None or k == kind)

    def _take(self, route: str) -> Rule | None:
        for rule in self.rules:
            if rule.route in ("*", route) and (rule.times is None or rule.times > 0):
                if rule.times is not None:
                    rule.times -= 1
                self.injected[(route, rule.kind)] += 1
                return rule
        return None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.on_shutdown.append(self._release)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _release(self, _: web.Application) -> None:
        self._closing.set()  # stalled handlers end now, so the server can shut down

    async def _cleanup(self, _: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        route = route_of(request.method, request.path)
        hook = self.hooks.pop(route, None)
        if hook is not None:
            hook()
        rule = self._take(route)
        if rule is not None and rule.early:
            return await self._misbehave_before(request, rule)
        body = await request.read()
        if rule is not None and rule.kind in _BEFORE:
            return await self._misbehave_before(request, rule)
        self.forwarded[route] += 1
        status, headers, payload = await self._forward(request, body)
        if rule is None:
            return web.Response(status=status, headers=headers, body=payload)
        return await self._misbehave_after(request, rule, status, headers, payload)

    async def _forward(self, request: web.Request, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP and k.lower() != "host"}
        # a BytesIO, not raw bytes: aiohttp warns (ResourceWarning) about raw bodies over 1 MiB
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=io.BytesIO(body)
        ) as resp:
            payload = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP}
            return resp.status, out, payload

    async def _misbehave_before(self, request: web.Request, rule: Rule) -> web.StreamResponse:
        if rule.kind == "500":
            body = orjson.dumps({"error": {"code": 500000, "messages": ["injected fault"]}})
            return web.Response(status=500, body=body, content_type="application/json")
        if rule.kind == "stall":
            with anyio.move_on_after(rule.stall):
                await self._closing.wait()
        _reset(request)
        return web.Response()

    async def _misbehave_after(
        self, request: web.Request, rule: Rule, status: int, headers: dict[str, str], payload: bytes
    ) -> web.StreamResponse:
        if rule.kind == "malformed":
            cut = payload[: max(1, len(payload) // 2)] if payload.startswith(b"{") else b'{"data_id": "'
            return web.Response(status=status, headers=headers, body=cut)
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(payload)
        await resp.prepare(request)
        if rule.kind == "truncated":
            await resp.write(payload[: len(payload) // 2])
            _reset(request)
            return resp
        # oversized: the promised bytes, then more on the same connection
        await resp.write(payload)
        await resp.write_eof()
        transport = request.transport
        if transport is not None and not transport.is_closing():
            transport.write(b'{"extra": "' + b"x" * 4096 + b'"}\r\n')
        return resp


def _reset(request: web.Request) -> None:
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port) for the block; yields its base URL."""
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        yield str(server.make_url("")).rstrip("/")


# Subprocess plumbing: the scanner command as a user runs it.

KEY = "md-test-SECRET-0123456789abcdef"


def write_config(directory: Path, url: str, **extra: Any) -> Path:
    """A [engines.metadefender] config pointing at ``url`` with fast polls and short backoff."""
    values: dict[str, Any] = {
        "poll_initial": 0.05,
        "poll_max": 0.3,
        "hash_linger": 0.01,
        "retry_base": 0.05,
        "retry_cap": 0.3,
        **extra,
    }
    lines = ["[engines.metadefender]", f'base_url = "{url}"', 'api_key = "${METADEFENDER_API_KEY}"']
    lines += [f"{k} = {orjson.dumps(v).decode()}" for k, v in values.items()]
    path = directory / "scanner.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def scanner_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "scanner", *args]


def scanner_env() -> dict[str, str]:
    return {**os.environ, "METADEFENDER_API_KEY": KEY}


def spawn(args: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``scanner ARGS`` in the background (its stderr captured unless told otherwise)."""
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("stdout", subprocess.DEVNULL)
    return subprocess.Popen(scanner_argv(*args), env=scanner_env(), **kwargs)


async def wait_for(check: Callable[[], bool], timeout: float) -> None:
    """Poll ``check`` every 20 ms (the event loop keeps serving the simulator meanwhile)."""
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.02)


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, float]:
    """Wait (without blocking the loop) for ``proc`` to end; returns its status and how long it took."""
    start = time.monotonic()
    with anyio.fail_after(timeout):
        while proc.poll() is None:
            await anyio.sleep(0.02)
    return proc.returncode, time.monotonic() - start


def kill_quietly(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


def whole_lines(path: Path) -> list[dict[str, Any]]:
    """The verdict lines of an output file, asserting none is torn and each is a JSON object."""
    data = path.read_bytes() if path.exists() else b""
    assert data == b"" or data.endswith(b"\n"), f"a torn last line: {data[-80:]!r}"
    lines = [orjson.loads(x) for x in data.splitlines()]
    assert all(isinstance(x, dict) and {"target", "verdict", "engine"} <= x.keys() for x in lines)
    return lines


def no_privileges_over_files() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes root obey file permissions (drops CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH from the bounding set, so they are gone after exec); None when not root."""
    if os.geteuid() != 0:
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def drop() -> None:
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return drop


class WhileRead(threading.Thread):
    """Runs ``action`` once, at the moment one of ``processes()`` has ``path`` open with its offset
    part-way through the file: a deterministic "the file changed while it was being read".

    Reads each process's open files and offsets from /proc (psutil) every 5 ms or so.
    ``fired_at`` is the offset the reader had reached, or None if it never caught one mid-read.
    """

    def __init__(
        self, path: Path, processes: Callable[[], list[psutil.Process]], action: Callable[[], None]
    ) -> None:
        super().__init__(daemon=True)
        self.path = str(path)
        self.size = path.stat().st_size
        self.processes = processes
        self.action = action
        self.fired_at: int | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for proc in self.processes():
                try:
                    files = proc.open_files()
                except psutil.Error:
                    continue
                for f in files:
                    if f.path == self.path and 0 < f.position < self.size:
                        self.action()
                        self.fired_at = f.position
                        self.done.set()
                        return
            time.sleep(0.005)

    def stop(self) -> None:
        self.done.set()
        self.join()


def descendants(pid: int) -> Callable[[], list[psutil.Process]]:
    """The descendants of ``pid`` (the scanner's worker processes). Finding them walks every process
    on the machine, so the list is refreshed at most every 100 ms."""
    found: list[psutil.Process] = []
    last = 0.0

    def find() -> list[psutil.Process]:
        nonlocal found, last
        if time.monotonic() - last > 0.1:
            last = time.monotonic()
            try:
                found = list(psutil.Process(pid).children(recursive=True))
            except psutil.Error:
                found = []
        return found

    return find
