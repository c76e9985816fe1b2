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

from .conftest import WhileRead, descendants

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


def fifo_over(path: Path) -> None:
    """Rename a fifo over ``path``: nothing ever writes to it, so a blocking open of it never returns."""
    spare = path.with_name(path.name + ".fifo")
    os.mkfifo(spare)
    os.replace(spare, path)


@pytest.mark.parametrize("follow", [False, True], ids=["no-follow", "follow-symlinks"])
async def test_a_path_swapped_for_a_fifo_after_listing_is_not_regular_at_once(
    tmp_path: Path, follow: bool
) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "small.txt").write_bytes(b"hello\n")
    (tree / "link.txt").symlink_to(tree / "small.txt")
    source = LocalSource(str(tree), follow_symlinks=follow)
    listed = {os.path.basename(t.target): t async for t in source.targets()}
    assert set(listed) == ({"small.txt", "link.txt"} if follow else {"small.txt"})
    with anyio.fail_after(20):
        async with YaraEngine(Config(processes=1, timeout=5)) as engine:
            for target in listed.values():  # a link the walk was told to follow is scanned
                assert (await engine.scan(target, source)).status is Status.CLEAN
            fifo_over(tree / "small.txt")  # the link, when followed, now leads to the fifo too
            for target in listed.values():
                with pytest.raises(TargetError) as caught:
                    await engine.scan(target, source)
                assert caught.value.code == "not_regular", target


async def test_a_big_file_swapped_for_a_fifo_while_read_is_changed_not_a_hang(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    path = sparse(tree / "big.bin", 4 * BIG)  # a few hundred ms of reading: time to swap mid-way
    source = LocalSource(str(tree))
    target = Target(Kind.FILE, str(path))
    swap = WhileRead(path, descendants(os.getpid()), lambda: fifo_over(path))
    swap.start()
    try:
        with anyio.fail_after(30):
            async with YaraEngine(Config(processes=1, timeout=5)) as engine:
                with pytest.raises(TargetError) as caught:
                    await engine.scan(target, source)
    finally:
        swap.stop()
    assert swap.fired_at is not None, "no read was caught mid-file"
    assert caught.value.code == "changed"
