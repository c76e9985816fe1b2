"""The directory source: filters, special files, symlinks. Real files in a temp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scanner.errors import SourceError
from scanner.sources.filters import TargetFilter
from scanner.sources.local import LocalSource

pytestmark = pytest.mark.anyio


async def listed(source: LocalSource) -> dict[str, str | None]:
    return {t.target: (t.error.code if t.error else None) async for t in source.targets()}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "keep.txt").write_bytes(b"x" * 10)
    (tmp_path / "a" / "drop.log").write_bytes(b"x" * 10)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "big.bin").write_bytes(b"x" * 5000)
    (tmp_path / "top.txt").write_bytes(b"")
    os.mkfifo(tmp_path / "a" / "fifo")
    return tmp_path


async def test_regular_files_only_fifo_never_opened(tree: Path) -> None:
    source = LocalSource(str(tree))
    got = await listed(source)
    assert set(got) == {str(tree / p) for p in ("a/keep.txt", "a/drop.log", "cache/big.bin", "top.txt")}
    assert source.skipped_special == 1


async def test_globs(tree: Path) -> None:
    got = await listed(LocalSource(str(tree), filters=TargetFilter(exclude=("*.log", "cache"))))
    assert set(got) == {str(tree / "a/keep.txt"), str(tree / "top.txt")}
    got = await listed(LocalSource(str(tree), filters=TargetFilter(include=("a/*",))))
    assert set(got) == {str(tree / "a/keep.txt"), str(tree / "a/drop.log")}


async def test_size_filters_stat_only_when_asked(tree: Path) -> None:
    got = await listed(LocalSource(str(tree), filters=TargetFilter(min_size=1, max_size=100)))
    assert set(got) == {str(tree / "a/keep.txt"), str(tree / "a/drop.log")}
    plain = [t async for t in LocalSource(str(tree)).targets()]
    assert all(t.size is None for t in plain)


async def test_symlinks_not_followed_by_default_and_loops_stopped(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_text("hi")
    (tmp_path / "d" / "loop").symlink_to(tmp_path)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "link.txt").symlink_to(tmp_path / "d" / "f.txt")
    assert set(await listed(LocalSource(str(tmp_path)))) == {str(tmp_path / "d/f.txt")}
    followed = await listed(LocalSource(str(tmp_path), follow_symlinks=True))
    # every directory entered once: the loop back to the root adds nothing, the file link is a file
    assert set(followed) == {str(tmp_path / "d/f.txt"), str(tmp_path / "link.txt")}


async def test_unreadable_directory_is_an_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root reads every directory, so the refusal is injected at the syscall wrapper the walk uses.
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "inside.txt").write_text("x")
    (tmp_path / "ok.txt").write_text("x")
    real = os.scandir

    def scandir(path: str) -> object:
        if path == str(locked):
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    got = await listed(LocalSource(str(tmp_path)))
    assert got == {str(locked): "unreadable_dir", str(tmp_path / "ok.txt"): None}


async def test_single_file_and_special_file(tmp_path: Path) -> None:
    f = tmp_path / "one.bin"
    f.write_bytes(b"1")
    assert await listed(LocalSource(str(f))) == {str(f): None}
    os.mkfifo(tmp_path / "p")
    assert await listed(LocalSource(str(tmp_path / "p"))) == {str(tmp_path / "p"): "not_regular"}


def test_missing_root_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file or directory"):
        LocalSource(str(tmp_path / "missing")).check()


async def test_walk_is_pulled_not_drained(tmp_path: Path) -> None:
    for i in range(5000):
        (tmp_path / f"f{i}").write_bytes(b"")
    source = LocalSource(str(tmp_path))
    it = source.targets()
    first = await it.__anext__()
    assert first.target.startswith(str(tmp_path))
    await it.aclose()  # abandoning the walk part-way must not hang or leak the thread


async def test_batches_hold_the_same_targets_as_targets_in_bounded_lists(tmp_path: Path) -> None:
    for d in range(3):
        (tmp_path / f"d{d}").mkdir()
        for i in range(1500):
            (tmp_path / f"d{d}" / f"f{i}").write_bytes(b"")
    one_by_one = [t.target async for t in LocalSource(str(tmp_path)).targets()]
    sizes: list[int] = []
    in_lists: list[str] = []
    async for batch in LocalSource(str(tmp_path)).batches():
        sizes.append(len(batch))
        in_lists.extend(t.target for t in batch)
    assert in_lists == one_by_one and len(set(one_by_one)) == 4500
    assert max(sizes) <= 1024 and len(sizes) >= 5
