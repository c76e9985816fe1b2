"""Runs inside the YARA engine's worker processes (``python -m scanner.engines._yara_worker``):
import-light: yara_x, hashlib, json, math, os, signal and ctypes only (not even typing; orjson alone
would double a worker's start-up imports).

yara-x holds the GIL for the whole of a scan, so scanning in a thread would freeze the event loop;
scanning in separate processes does not. The parent sends a batch of paths per round trip (a
batch amortises the inter-process overhead over many small files) and gets one list per path back.

Frames (see :mod:`scanner.engines._workers`): init is the serialized rules, then a JSON object with
``timeout`` and ``max_size``; the worker answers ``{"pid": N}`` when ready. A request, built by
:func:`encode_request`, is the number of files (4 bytes, big-endian), one byte per file saying
whether a symlink may be followed, then the paths' raw bytes joined by NUL (which no POSIX path
holds): any file name round-trips, UTF-8 or not, and a batch costs one C call each way, not one per
path. The answer is a JSON list of results, one per path, in order.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import signal
import stat
import sys
import time

import yara_x

from .._versions import file_version
from ._frames import LEN, read_frame, write_frame

TYPE_CHECKING = False  # what typing.TYPE_CHECKING is, without importing typing
if TYPE_CHECKING:
    from typing import Any

    # A result is ("ok", size, sha256, matches, version) with matches = [(identifier, namespace,
    # meta dict)] and size and version (file_version of the stat) from the fstat of the
    # descriptor read: the content version of what was scanned, made here rather than in the run's
    # own process, which is the busier one. Or ("err", code, message, size_or_None).
    Result = tuple[Any, ...]

__all__ = ("decode_request", "encode_request", "init", "main", "scan_batch")

#: files up to this size are read once into memory, hashed and scanned from the same buffer;
#: larger ones are hashed by streaming and scanned through yara-x's own memory map
_READ_WHOLE = 64 << 20
_CHUNK = 1 << 20
#: from this size the sha256 runs in a thread while yara-x scans: one hashlib call over the whole
#: buffer, which lets go of the GIL (yara-x keeps it for the whole scan), so both use a core
_PARALLEL = 4 << 20

#: where an open descriptor has a name yara-x can open that reaches the open file itself, not
#: whatever its path names now (Linux's /dev/fd links here; on BSDs /dev/fd/N dups the descriptor)
_FD_DIR = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"

_scanner: Any = None
_max_size = 0


def init(serialized: bytes, timeout: float, max_size: int) -> None:
    """Process initializer: deserialize the rules once per process. ``timeout`` is in seconds, 0 for
    none; yara-x counts whole seconds, so a fraction rounds up (0.5 gives 1 s, never no limit)."""
    global _scanner, _max_size
    rules = yara_x.Rules.deserialize_from(io.BytesIO(serialized))
    _scanner = yara_x.Scanner(rules)
    if timeout > 0:
        _scanner.set_timeout(math.ceil(timeout))
    _max_size = max_size


def scan_batch(jobs: list[tuple[str, bool]]) -> list[Result]:
    return [_scan_one(path, follow) for path, follow in jobs]


_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()


def encode_request(paths: list[str], follow: list[bool]) -> bytes:
    """One request frame for ``paths`` (parent side); ``follow[i]`` applies to ``paths[i]``."""
    blob = "\0".join(paths).encode(_FS_ENCODING, _FS_ERRORS)
    return LEN.pack(len(paths)) + bytes(follow) + blob


def decode_request(frame: bytes) -> list[tuple[str, bool]]:
    """The inverse of :func:`encode_request`."""
    (count,) = LEN.unpack_from(frame)
    if count == 0:
        return []
    flags = frame[4 : 4 + count]
    paths = frame[4 + count :].decode(_FS_ENCODING, _FS_ERRORS).split("\0")
    if len(paths) != count or len(flags) != count:
        raise ValueError(f"malformed request frame: {len(paths)} paths, {len(flags)} flags, {count} said")
    return list(zip(paths, map(bool, flags), strict=True))


#: the parent reads answers with orjson; the standard encoder writes the same JSON for these values
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _jsonable(value: Any) -> Any:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def main() -> None:
    """Serve frames on stdin/stdout until stdin closes (or the parent dies: see :func:`_obey_parent_only`)."""
    _obey_parent_only()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames may reach the parent's pipe
    rules = read_frame(stdin)
    options = read_frame(stdin)
    if rules is None or options is None:
        return
    opts = json.loads(options)
    init(rules, float(opts["timeout"]), int(opts["max_size"]))
    write_frame(stdout, json.dumps({"pid": os.getpid()}).encode())
    while (frame := read_frame(stdin)) is not None:
        results = scan_batch(decode_request(frame))
        for r in results:
            if r[0] == "ok":
                for match in r[3]:
                    match[2] = {k: _jsonable(v) for k, v in match[2].items()}
        write_frame(stdout, _dumps(results).encode())


def _obey_parent_only() -> None:
    """Ignore SIGINT and SIGTERM, and die with the parent.

    A terminal's Ctrl-C, ``kill -- -PGID`` and systemd's ``KillMode=control-group`` signal every
    process of the run: a worker that died of it would cost its requests in flight ``worker_died``
    lines. So only the parent takes those signals; it decides whether jobs drain, then closes our
    stdin (we exit at end of input) or kills us. Kept in the run's process group, not a session of
    our own, so job control (Ctrl-Z, ``kill -KILL -PGID``) still takes the workers with the run.

    Since nothing polite reaches us, a parent killed outright must take us along: on Linux the kernel
    sends SIGKILL when it dies (PR_SET_PDEATHSIG; set before the first frame is read, so a parent
    that died earlier leaves us an end of input); elsewhere a thread notices the parent is gone, at
    most a second late, even in the middle of a scan (yara-x holds the GIL, but for at most a scan's
    timeout). Between requests, the end of input on stdin says the same.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid()
    if sys.platform == "linux":
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            return
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _scan_one(path: str, follow: bool) -> Result:
    # Non-blocking, so a fifo or a device put in the file's place (or a followed link to one) is
    # opened at once and refused by the fstat below, never waited on; left set for the reads, which
    # it does not change for a regular file. No-follow unless the walk was told to follow links.
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if not follow:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return ("err", "vanished", "file vanished before it could be read", None)
    except PermissionError:
        return ("err", "unreadable", "permission denied", None)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return ("err", "not_regular", "is a symbolic link (not followed)", None)
        return ("err", "unreadable", f"cannot open: {exc.strerror}", None)
    except ValueError:
        # a NUL byte, or a name the file system encoding cannot spell: this path's error, not the
        # worker's death (which would cost the rest of its batch a restart)
        return ("err", "bad_target", "not a usable path (a NUL byte, or a name that cannot be encoded)", None)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return ("err", "not_regular", "not a regular file", None)
        size = st.st_size
        if size > _max_size:
            return ("err", "too_large", f"{size} bytes is over the limit of {_max_size} bytes", size)
        if size <= _READ_WHOLE:
            data = _read_all(fd, size)
            if len(data) != size:
                return ("err", "changed", f"file changed while read ({len(data)} of {size} bytes)", size)
            if size < _PARALLEL:
                digest = hashlib.sha256(data).hexdigest()
                results = _scanner.scan(data)
            else:
                hashing = _Hashing(data)
                results = _scanner.scan(data)
                digest = hashing.result()
        else:
            # Too big to hold: hashed by reading the open descriptor, then scanned by yara-x through
            # the same open file (its /proc/self/fd name), never by reopening the path, which may
            # name another file (or a fifo, which would block) by now. Not hashed through a map of
            # our own alongside the scan: a file cut short while mapped would kill this worker with
            # SIGBUS (and its whole batch with it), where a read just comes up short.
            h = hashlib.sha256()
            n = 0
            while chunk := os.read(fd, _CHUNK):
                h.update(chunk)
                n += len(chunk)
            if n != size:
                return ("err", "changed", f"file changed while read ({n} of {size} bytes)", size)
            digest = h.hexdigest()
            os.lseek(fd, 0, os.SEEK_SET)  # where /dev/fd/N is a dup (BSDs), yara-x reads from here
            results = _scanner.scan_file(f"{_FD_DIR}/{fd}")
            if _identity(os.fstat(fd)) != _identity(st):
                # written to, cut, or unlinked or renamed over (both change the ctime) meanwhile
                return ("err", "changed", "file changed while scanned", size)
    except yara_x.TimeoutError:
        return ("err", "scan_timeout", "the YARA scan timed out", None)
    except yara_x.ScanError as exc:
        return ("err", "scan_failed", f"YARA scan failed: {exc}", None)
    except OSError as exc:
        return ("err", "unreadable", f"read failed: {exc.strerror}", None)
    finally:
        os.close(fd)
    matches = [[r.identifier, r.namespace, dict(r.metadata)] for r in results.matching_rules]
    return ("ok", size, digest, matches, file_version(st))


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    """What moves when an open file's bytes or its name change: a write moves the mtime and the
    ctime (the ctime even when the mtime is set back), an unlink or a rename over it the ctime.
    (Its inode cannot change: it is the one the descriptor holds.)"""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class _Hashing:
    """sha256 of a buffer in a thread, started at once; :meth:`result` waits for the hex digest."""

    def __init__(self, data: bytes) -> None:
        import threading

        self._data = data
        self._digest = ""
        self._error: BaseException | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        # Let the thread reach the hashlib call (where it lets go of the GIL) before the caller
        # starts a scan that keeps the GIL until it ends; else the two would run one after the other.
        self._started.wait()

    def _run(self) -> None:
        self._started.set()
        try:
            self._digest = hashlib.sha256(self._data).hexdigest()
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def result(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._digest


def _read_all(fd: int, size: int) -> bytes:
    # Asks for one byte more than the size, so a file that grew is noticed without reading an
    # unbounded amount; loops only for short reads.
    want = size + 1
    data = os.read(fd, want)
    if len(data) >= size:
        return data
    parts = [data]
    got = len(data)
    while got < want:
        chunk = os.read(fd, want - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


if __name__ == "__main__":
    main()
    # The parent waits for this exit at the end of every run: skip the interpreter's teardown.
    sys.stderr.flush()
    os._exit(0)
