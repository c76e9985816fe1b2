"""The YARA workers against a file system that moves under them: a big file renamed over while it is
scanned, a regular file swapped for a fifo between the listing and the scan.

Each verdict must describe the bytes whose sha256 and size it reports; nothing may block past the
scan timeout.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import anyio
import pytest

from scanner.engines.yara import Config, YaraEngine
from scanner.errors import TargetError
from scanner.model import Kind, Outcome, Status, Target
from scanner.sources.local import LocalSource
from scanner.testing import eicar

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

#: over the worker's read-whole limit (64 MiB): the path where it hashed one open file and scanned
#: whatever the path named next
BIG = (64 << 20) + 4096


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sparse(path: Path, size: int, tail: bytes = b"") -> Path:
    """A sparse file of ``size`` bytes ending in ``tail``: made in a moment, whatever its size."""
    with path.open("wb") as f:
        f.truncate(size)
        if tail:
            f.seek(size - len(tail))
            f.write(tail)
    return path


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Swapper(threading.Thread):
    """While :attr:`storm` is set, renames a fresh file over ``target`` every millisecond or so, the
    infected and the clean one in turn."""

    def __init__(self, target: Path) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.swaps = 0
        self.storm = threading.Event()
        self.done = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        while not self.done.is_set():
            if not self.storm.wait(0.01):
                continue
            for size, tail in ((BIG + 1, eicar()), (BIG, b"")):
                with self._lock:
                    if not self.storm.is_set():
                        break
                    put(self.target, size, tail, spare=".storm")
                    self.swaps += 1
                time.sleep(0.001)

    def calm(self) -> None:
        """End the storm; returns once no swap is under way (and none will start)."""
        self.storm.clear()
        with self._lock:
            pass

    def stop(self) -> None:
        self.done.set()
        self.join()


def put(path: Path, size: int, tail: bytes, spare: str = ".swap") -> None:
    """Rename a fresh file over ``path``, as an atomic save does."""
    os.replace(sparse(path.with_name(path.name + spare), size, tail), path)


async def test_a_big_file_renamed_over_during_scans_is_judged_by_the_bytes_it_reports(tmp_path: Path) -> None:
    # different sizes too, so the reported size is checked against the same bytes
    clean = (sha256_of(sparse(tmp_path / "clean.bin", BIG)), BIG)
    infected = (sha256_of(sparse(tmp_path / "infected.bin", BIG + 1, eicar())), BIG + 1)
    tree = tmp_path / "t"
    tree.mkdir()
    path = tree / "target.bin"
    source = LocalSource(str(tree))
    target = Target(Kind.FILE, str(path))
    stormy: list[Outcome | TargetError] = []
    swapper = Swapper(path)

    async def scan() -> Outcome | TargetError:
        try:
            return await engine.scan(target, source)
        except TargetError as exc:
            return exc

    def consistent(o: Outcome) -> bool:
        return (o.sha256, o.size) == (clean if o.status is Status.CLEAN else infected)

    async def storm_scan() -> None:
        stormy.append(await scan())

    swapper.start()
    try:
        with anyio.fail_after(60):
            async with YaraEngine(Config(processes=2, timeout=30)) as engine:
                for _ in range(2):
                    for size, tail, status in ((BIG, b"", Status.CLEAN), (BIG + 1, eicar(), Status.INFECTED)):
                        put(path, size, tail)
                        quiet = await scan()  # undisturbed: the file's own verdict
                        assert isinstance(quiet, Outcome), quiet
                        assert quiet.status is status and consistent(quiet), quiet
                    swapper.storm.set()
                    async with anyio.create_task_group() as tg:
                        for _ in range(2):  # one in each worker
                            tg.start_soon(storm_scan)
                    swapper.calm()
    finally:
        swapper.stop()
    assert swapper.swaps > 20
    for x in stormy:
        if isinstance(x, TargetError):
            # renamed over mid-scan: the open file lost its name, which moved its ctime
            assert x.code == "changed", x
        else:
            assert x.status in (Status.CLEAN, Status.INFECTED) and consistent(x), x
