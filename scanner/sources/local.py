"""Local paths: a directory walk or a single file.

The walk runs synchronously in a worker thread (``os.scandir``, which learns file types from the
directory entry without a stat) and hands targets to the event loop a batch at a time: one thread hop
per 1,024 entries instead of one await per entry, which measured 500x slower. It is pull-driven, so a
slow pipeline stops the walk rather than letting it run ahead.

* Every directory below the root is entered by name from its parent's descriptor, opened no-follow
  (unless ``follow_symlinks``): a directory swapped for a link after it was listed leads nowhere,
  and a tree deeper than the kernel's path limit (PATH_MAX) is walked to the bottom. See
  :class:`_Chain` for how the descriptors held stay few on a deep tree.
* The root is followed if it is a link: it is what the user named (as ``find -H`` and ``rsync`` do).
* Only regular files become targets. Fifos, sockets and devices are never opened (a fifo would hang
  the run); they are counted in ``skipped_special``.
* Symbolic links are not followed unless ``follow_symlinks``; then each directory is entered at most
  once, by (device, inode), which stops loops and double visits. Dangling links are skipped.
* The run's own files (``avoid``: its output, its state store) are never listed, whatever the
  names they are reached by: they are known by their directory's (device, inode) and their name.
* A directory that cannot be listed becomes a target carrying an error, so the report shows it.
* Size and time filters cost a stat per file and are applied only when set; otherwise the walk does
  no per-file syscall and size is learnt when the file is opened.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice

import anyio

from .._content import CHUNK, LocalBody, open_local, open_regular_fd
from .._versions import file_version
from ..errors import SourceError, TargetError
from ..model import ErrorInfo, Kind, Target
from ._base import Body, LocalPath
from .filters import TargetFilter

__all__ = ("LocalSource",)

log = logging.getLogger("scanner.sources.local")

_BATCH = 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
#: directory descriptors the walk holds at once (the deepest ones), whatever the tree's depth
_OPEN_DIRS = 32
#: the longest path the kernel takes, in bytes with its NUL (Linux PATH_MAX); longer ones are opened
#: a directory at a time
_PATH_MAX = 4096
#: an entry listed as a directory that is no longer one when opened (a link or a file swapped in)
_NOT_A_DIR = frozenset({errno.ENOTDIR, errno.ELOOP})

Key = tuple[int, int]


class LocalSource:
    """Targets under one local path (a directory, walked, or a single regular file).

    ``avoid`` holds paths that are never targets: the run's own output and state files.
    """

    kinds = frozenset({Kind.FILE})

    def __init__(
        self,
        root: str,
        *,
        filters: TargetFilter | None = None,
        follow_symlinks: bool = False,
        stat_files: bool = False,
        avoid: Iterable[str] = (),
    ) -> None:
        self.root = os.path.abspath(root)
        self.filters = filters or TargetFilter()
        self.follow_symlinks = follow_symlinks
        self.stat_files = stat_files
        self.avoid = frozenset(avoid)
        self.skipped_special = 0
        # set by the walk when the root is a link to a file: that one target's link is followed
        self._root_link = False

    def __repr__(self) -> str:
        return f"<LocalSource {self.root!r} follow_symlinks={self.follow_symlinks}>"

    def check(self) -> None:
        """Raise SourceError if the root does not exist or is not readable at all."""
        try:
            st = os.lstat(self.root)
        except FileNotFoundError:
            raise SourceError(f"{self.root}: no such file or directory") from None
        except OSError as exc:
            raise SourceError(f"{self.root}: {exc.strerror}") from None
        if stat.S_ISLNK(st.st_mode):
            # A link named on the command line is what the user asked for: follow that one.
            try:
                st = os.stat(self.root)
            except FileNotFoundError:
                raise SourceError(
                    f"{self.root}: a symbolic link to {_link(self.root)}, which does not exist"
                ) from None
            except OSError as exc:
                raise SourceError(
                    f"{self.root}: a symbolic link that cannot be followed: {exc.strerror}"
                ) from None
        if stat.S_ISDIR(st.st_mode) and not os.access(self.root, os.R_OK | os.X_OK):
            raise SourceError(f"{self.root}: permission denied")

    async def targets(self) -> AsyncIterator[Target]:
        async for batch in self.batches():
            for target in batch:
                yield target

    async def batches(self) -> AsyncIterator[list[Target]]:
        """The same targets as :meth:`targets`, a thread hop's worth (up to 1,024) at a time.

        What the pipeline pulls: one await per batch instead of one async-generator step per file.
        """
        walk = self._walk()
        try:
            while True:
                batch = await anyio.to_thread.run_sync(_take, walk)
                if not batch:
                    return
                yield batch
        finally:
            walk.close()

    def open(self, target: Target, /) -> AbstractAsyncContextManager[Body]:
        """Open a target's file; one whose path is over PATH_MAX is opened a directory at a time
        from the root, and comes without a ``path`` (no engine could open it by name)."""
        path = target.target
        follow = self._follows(path)
        if _fits(path):
            return open_local(path, follow_symlinks=follow)
        return self._open_deep(path, follow)

    def local_path(self, target: Target, /) -> LocalPath | None:
        """The target's path, or None when it is over PATH_MAX (then engines read :meth:`open`)."""
        path = target.target
        return LocalPath(path, self._follows(path)) if _fits(path) else None

    async def aclose(self) -> None:
        return None

    def _follows(self, path: str) -> bool:
        return self.follow_symlinks or (self._root_link and path == self.root)

    @asynccontextmanager
    async def _open_deep(self, path: str, follow: bool) -> AsyncIterator[Body]:
        fd, st = await anyio.to_thread.run_sync(self._open_by_steps, path, follow)
        try:
            yield _Unnamed(LocalBody(fd, path, st.st_size, file_version(st)))
        finally:
            os.close(fd)

    def _open_by_steps(self, path: str, follow: bool) -> tuple[int, os.stat_result]:
        prefix = _prefix(self.root)
        if not path.startswith(prefix):
            raise TargetError("a path over PATH_MAX, outside the source's directory", code="unreadable")
        *dirs, name = path[len(prefix) :].split(os.sep)
        flags = _DIR_FLAGS if follow else _DIR_FLAGS | os.O_NOFOLLOW
        try:
            fd = os.open(self.root, _DIR_FLAGS)  # the root is followed, as the walk did
        except OSError as exc:
            raise _on_the_way(exc) from None
        try:
            for part in dirs:
                down = os.open(part, flags, dir_fd=fd)
                os.close(fd)
                fd = down
            return open_regular_fd(name, follow_symlinks=follow, dir_fd=fd)
        except OSError as exc:
            raise _on_the_way(exc) from None
        finally:
            os.close(fd)

    # The walk proper: synchronous, runs in a worker thread.

    def _walk(self) -> Generator[Target, None, None]:
        root = self.root
        try:
            st = os.stat(root)
        except OSError as exc:
            yield _broken(root, f"cannot stat: {exc.strerror}", "unreadable")
            return
        own = _own_files(self.avoid)
        if not stat.S_ISDIR(st.st_mode):
            if own and _is_own(root, own):
                log.debug("not scanning %s: this run's own output or state", root)
            elif stat.S_ISREG(st.st_mode):
                self._root_link = os.path.islink(root)
                if self._wanted_file(os.path.basename(root), st):
                    yield _file(root, st)
            else:
                yield _broken(root, "not a regular file or directory", "not_regular")
            return
        try:
            chain = _Chain(root, os.open(root, _DIR_FLAGS), follow=self.follow_symlinks)
        except OSError as exc:
            yield _broken(root, f"cannot list directory: {exc.strerror}", "unreadable_dir")
            return
        try:
            yield from self._list(chain, own)
        finally:
            chain.close()

    def _list(self, chain: _Chain, own: dict[Key, frozenset[str]]) -> Generator[Target, None, None]:
        follow = self.follow_symlinks
        filters = self.filters
        needs_stat = filters.needs_stat or self.stat_files
        # Without globs or a stat (the common case) a file needs no relative path and no filter call;
        # with a stat for its content version only (--skip-unchanged), it needs the stat and no more.
        plain = not (filters.include or filters.exclude or needs_stat)
        stat_only = not (filters.include or filters.exclude or filters.needs_stat) and self.stat_files
        file_kind = Kind.FILE
        here = chain.dirs[0]
        seen: set[Key] = {here.key}
        # (parent, name) of the directories still to enter; their parents are all on the chain
        pending: list[tuple[_Dir, str]] = []
        while True:
            prefix, relp = here.prefix, here.rel
            try:
                entries = os.scandir(here.fd)
            except OSError as exc:
                yield _broken(here.path, f"cannot list directory: {exc.strerror}", "unreadable_dir")
                entries = None
            subdirs: list[str] = []
            if entries is not None:
                with entries:
                    names = own.get(here.key)
                    listing = entries if names is None else _without(entries, names, prefix)
                    for entry in listing:
                        try:
                            if plain and entry.is_file(follow_symlinks=follow):
                                yield Target(file_kind, prefix + entry.name)
                                continue
                            if stat_only and entry.is_file(follow_symlinks=follow):
                                fst = entry.stat(follow_symlinks=follow)
                                yield Target(
                                    file_kind,
                                    prefix + entry.name,
                                    size=fst.st_size,
                                    mtime=fst.st_mtime,
                                    version=file_version(fst),
                                )
                                continue
                            rel = relp + entry.name
                            if entry.is_dir(follow_symlinks=follow):
                                if not filters.excludes_dir(rel):
                                    subdirs.append(entry.name)
                            elif entry.is_file(follow_symlinks=follow):
                                if not filters.matches_name(rel):
                                    continue
                                if needs_stat:
                                    fst = entry.stat(follow_symlinks=follow)
                                    if not self._wanted_file(rel, fst):
                                        continue
                                    yield _file(prefix + entry.name, fst)
                                else:
                                    yield Target(file_kind, prefix + entry.name)
                            elif not entry.is_symlink():
                                self.skipped_special += 1
                        except OSError as exc:
                            yield _broken(prefix + entry.name, f"cannot stat: {exc.strerror}", "unreadable")
            # Depth-first, in listing order: keeps the stack (and memory) proportional to depth.
            pending.extend([(here, name) for name in reversed(subdirs)])
            while pending:
                parent, name = pending.pop()
                try:
                    here = chain.enter(parent, name)
                except OSError as exc:
                    if exc.errno not in _NOT_A_DIR:
                        path = parent.prefix + name
                        yield _broken(path, f"cannot list directory: {exc.strerror}", "unreadable_dir")
                    # else a link or file now: not entered, as a link listed as one would not be
                    continue
                if follow:
                    if here.key in seen:
                        continue
                    seen.add(here.key)
                break
            else:
                return

    def _wanted_file(self, rel: str, st: os.stat_result) -> bool:
        f = self.filters
        if not f.matches_name(rel) or not f.matches_size(st.st_size):
            return False
        if f.modified_since or f.modified_before:
            return f.matches_time(datetime.fromtimestamp(st.st_mtime, UTC))
        return True


class _Dir:
    """One directory on the walk's chain: its descriptor (-1 while closed), identity and spellings."""

    __slots__ = ("depth", "fd", "key", "name", "path", "prefix", "rel")

    def __init__(self, depth: int, fd: int, key: Key, name: str, path: str, rel: str) -> None:
        self.depth = depth
        self.fd = fd
        self.key = key
        self.name = name
        self.path = path
        self.prefix = _prefix(path)
        self.rel = rel  # relative to the root, with a trailing separator (empty for the root)


class _Chain:
    """The directories from the root down to the one being listed, each opened by name from its
    parent's descriptor: no-follow unless following links, so no name swapped after it was listed
    can lead out of the tree, and no path is ever longer than one name.

    At most ``_OPEN_DIRS`` descriptors are held, the deepest, so a tree of any depth stays far below
    RLIMIT_NOFILE. A shallower directory whose descriptor was let go is reached again when the walk
    climbs back to it: by ``..`` from the shallowest one still held, else (it was moved) by names
    from the root. Either way it must have the (device, inode) first seen, or its remaining
    subdirectories are reported as unreadable (moved during the walk) instead of listed.
    """

    def __init__(self, root: str, fd: int, *, follow: bool) -> None:
        self._root = root
        self._flags = _DIR_FLAGS if follow else _DIR_FLAGS | os.O_NOFOLLOW
        try:
            key = _fd_key(fd)
        except OSError:
            os.close(fd)
            raise
        self.dirs = [_Dir(0, fd, key, "", root, "")]

    def enter(self, parent: _Dir, name: str) -> _Dir:
        """Open ``parent``'s subdirectory ``name`` and make it the deepest on the chain, closing
        everything below ``parent`` (all listed by now: the walk is depth-first). Raises OSError."""
        dirs = self.dirs
        below = dirs[parent.depth + 1 :]
        del dirs[parent.depth + 1 :]
        try:
            if parent.fd < 0:
                parent.fd = self._reach(parent, below)
        finally:
            for d in below:
                if d.fd >= 0:
                    os.close(d.fd)
                    d.fd = -1
        fd = os.open(name, self._flags, dir_fd=parent.fd)
        try:
            key = _fd_key(fd)
        except OSError:
            os.close(fd)
            raise
        here = _Dir(parent.depth + 1, fd, key, name, parent.prefix + name, parent.rel + name + os.sep)
        dirs.append(here)
        if len(dirs) > _OPEN_DIRS:
            old = dirs[-_OPEN_DIRS - 1]
            if old.fd >= 0:
                os.close(old.fd)
                old.fd = -1
        return here

    def close(self) -> None:
        for d in self.dirs:
            if d.fd >= 0:
                os.close(d.fd)
                d.fd = -1

    def _reach(self, parent: _Dir, below: list[_Dir]) -> int:
        """A new descriptor for ``parent``, which is on the chain with its own closed."""
        start = next((d for d in below if d.fd >= 0), None)
        if start is not None:
            fd = start.fd
            try:
                for _ in range(start.depth - parent.depth):
                    up = os.open("..", _DIR_FLAGS, dir_fd=fd)
                    if fd != start.fd:
                        os.close(fd)
                    fd = up
                if fd != start.fd and _fd_key(fd) == parent.key:
                    return fd
            except OSError:
                pass
            if fd != start.fd:
                os.close(fd)  # a directory between was moved: '..' leads elsewhere now
        return self._descend(parent)

    def _descend(self, parent: _Dir) -> int:
        """Reopen ``parent`` by names from its deepest held ancestor (or the root's own path),
        checking the (device, inode) of each directory reopened on the way."""
        dirs = self.dirs
        i = parent.depth - 1
        while i >= 0 and dirs[i].fd < 0:
            i -= 1
        if i >= 0:
            fd, owned = dirs[i].fd, False
        else:
            fd, owned, i = os.open(self._root, _DIR_FLAGS), True, 0
        try:
            if owned and _fd_key(fd) != dirs[0].key:
                raise OSError(errno.ESTALE, "moved during the walk")
            for d in dirs[i + 1 : parent.depth + 1]:
                down = os.open(d.name, self._flags, dir_fd=fd)
                if owned:
                    os.close(fd)
                fd, owned = down, True
                if _fd_key(fd) != d.key:
                    raise OSError(errno.ESTALE, "moved during the walk")
        except BaseException:
            if owned:
                os.close(fd)
            raise
        return fd


@dataclass(frozen=True, slots=True)
class _Unnamed:
    """A local file no engine can open by name (its path is over PATH_MAX): read by descriptor."""

    body: LocalBody
    path: None = None

    @property
    def size(self) -> int:
        return self.body.size

    def chunks(self, chunk_size: int = CHUNK, /) -> AsyncIterator[bytes]:
        return self.body.chunks(chunk_size)


def _without(
    entries: Iterator[os.DirEntry[str]], names: frozenset[str], prefix: str
) -> Iterator[os.DirEntry[str]]:
    for entry in entries:
        if entry.name in names:
            log.debug("not scanning %s%s: this run's own output or state", prefix, entry.name)
        else:
            yield entry


def _on_the_way(exc: OSError) -> TargetError:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
        return TargetError("a directory on its path vanished or was replaced", code="vanished")
    return TargetError(f"cannot open a directory on its path: {exc.strerror}", code="unreadable")


def _own_files(paths: frozenset[str]) -> dict[Key, frozenset[str]]:
    """The files never to list, by their directory's (device, inode): names it by any spelling,
    and holds for a file not created yet (a state store's -wal)."""
    own: dict[Key, set[str]] = {}
    for path in paths:
        head, name = os.path.split(os.path.abspath(path))
        key = _dir_key(head)
        if key is not None:
            own.setdefault(key, set()).add(name)
    return {key: frozenset(names) for key, names in own.items()}


def _is_own(path: str, own: dict[Key, frozenset[str]]) -> bool:
    head, name = os.path.split(path)
    key = _dir_key(head)
    return key is not None and name in own.get(key, ())


def _dir_key(path: str) -> Key | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None  # no such directory: nothing of ours lies in the tree there
    return (st.st_dev, st.st_ino)


def _fd_key(fd: int) -> Key:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


def _prefix(path: str) -> str:
    return path.rstrip(os.sep) + os.sep


def _fits(path: str) -> bool:
    """True when the kernel takes ``path`` whole (UTF-8 spends at most 4 bytes a character)."""
    return len(path) < _PATH_MAX // 4 or len(os.fsencode(path)) < _PATH_MAX


def _link(path: str) -> str:
    try:
        return repr(os.readlink(path))
    except OSError:
        return "a path"


def _take(it: Generator[Target, None, None]) -> list[Target]:
    return list(islice(it, _BATCH))


def _file(path: str, st: os.stat_result) -> Target:
    return Target(Kind.FILE, path, size=st.st_size, mtime=st.st_mtime, version=file_version(st))


def _broken(path: str, message: str, code: str) -> Target:
    return Target(Kind.FILE, path, error=ErrorInfo(message, code))
