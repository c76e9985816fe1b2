"""Two coordination helpers for vendor engines: a lingering batcher and a single-flight map.

Neither starts a task: the caller that opens a batch flushes it, and the caller that starts a flight
runs it, so every piece of work has a parent (the job that needed it) and cancellation is local.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel

from ..ratelimit import Clock, MonotonicClock, wait_until

__all__ = ("Batcher", "Member", "Singleflight")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Abandoned(Exception):
    """The caller doing the work was cancelled; a waiter takes over."""


class _Batch(Generic[K, V]):
    __slots__ = ("deadline", "done", "error", "keys", "results", "sealed", "wake")

    def __init__(self, deadline: float) -> None:
        #: the keys in order, as a dict for O(1) membership (up to 1000 keys a batch)
        self.keys: dict[K, None] = {}
        self.deadline = deadline
        self.sealed = False
        #: set when the batch may go before its deadline (full, or every member is in it)
        self.wake = anyio.Event()
        self.done = anyio.Event()
        self.results: Mapping[K, V] | None = None
        self.error: BaseException | None = None


class Member:
    """A caller counted by :meth:`Batcher.member` until it :meth:`leave` s (idempotent)."""

    __slots__ = ("_batcher", "_in")

    def __init__(self, batcher: Batcher[Any, Any]) -> None:
        self._batcher = batcher
        self._in = True
        batcher._members += 1

    def leave(self) -> None:
        if self._in:
            self._in = False
            self._batcher._members -= 1
            self._batcher._check()


class Batcher(Generic[K, V]):
    """Collects keys into one call: a batch goes when it is full (``max_size()``), when it cannot grow
    (every :meth:`member` is in it), or ``linger`` seconds after it opened, whichever comes first.

    :meth:`get` waits for its batch's answer and returns this key's value. The caller that opened the
    batch first lets the callers already scheduled run (jobs woken together join the same batch),
    then waits as above and calls ``flush``; if ``flush`` raises, every caller of that batch gets the
    same exception. If that caller is cancelled, the others put their keys in a new batch. The linger
    counts from the batch's opening, so time the event loop spent on other callers is not added to it.
    Several batches may be in flight at once: a new one opens as soon as the last one was sealed.
    """

    def __init__(
        self,
        flush: Callable[[Sequence[K]], Awaitable[Mapping[K, V]]],
        *,
        linger: float,
        max_size: Callable[[], int],
        clock: Clock | None = None,
    ) -> None:
        self._flush = flush
        self._linger = linger
        self._max_size = max_size
        self._clock = clock or MonotonicClock()
        self._open: _Batch[K, V] | None = None
        self._members = 0
        self.batches = 0

    def member(self) -> Member:
        """Count a caller that may still call :meth:`get` (a job before its lookup, or one that comes
        back for more): while a member is outside the open batch, the batch may still grow, so it
        waits out its linger. Members that never call :meth:`get` must :meth:`Member.leave`."""
        return Member(self)

    def _complete(self, batch: _Batch[K, V]) -> bool:
        # with no member counted, nothing is known about who else may come: the linger decides
        return 0 < self._members <= len(batch.keys)

    def _check(self) -> None:
        batch = self._open
        if batch is not None and self._complete(batch):
            batch.wake.set()

    async def get(self, key: K) -> V:
        while True:
            batch = self._open
            owner = batch is None
            if batch is None:
                batch = self._open = _Batch(self._clock.now() + self._linger)
            batch.keys[key] = None
            if len(batch.keys) >= max(1, self._max_size()):
                self._open = None
                batch.sealed = True
                batch.wake.set()
            elif self._complete(batch):
                batch.wake.set()
            if owner:
                await self._run(batch)
            else:
                await batch.done.wait()
            if batch.error is not None:
                if isinstance(batch.error, _Abandoned):
                    continue
                raise batch.error
            assert batch.results is not None
            return batch.results[key]

    async def _run(self, batch: _Batch[K, V]) -> None:
        try:
            # callers already scheduled (woken by the same answer as this one) join before the check
            await anyio.lowlevel.checkpoint()
            while not batch.sealed and not self._complete(batch):
                if self._clock.now() >= batch.deadline:
                    break
                batch.wake = anyio.Event()
                await wait_until(self._clock, batch.wake, batch.deadline)
            if self._open is batch:
                self._open = None
            batch.sealed = True
            self.batches += 1
            batch.results = await self._flush(list(batch.keys))
        except Exception as exc:
            batch.error = exc
        except BaseException:
            batch.error = _Abandoned()
            raise
        finally:
            if self._open is batch:
                self._open = None  # cancelled while lingering: the others start a new batch
            batch.done.set()


class _Flight(Generic[V]):
    __slots__ = ("_done", "error", "finished", "ok", "value")

    def __init__(self) -> None:
        # the event only when a twin waits: most contents have none, and an Event costs ~4 us
        self._done: anyio.Event | None = None
        self.finished = False
        self.ok = False
        self.value: V | None = None
        self.error: BaseException | None = None

    def finish(self) -> None:
        self.finished = True
        if self._done is not None:
            self._done.set()

    async def wait(self) -> None:
        if not self.finished:
            if self._done is None:
                self._done = anyio.Event()
            await self._done.wait()


class Singleflight(Generic[K, V]):
    """Runs the work for one key once, shares its value with concurrent and later callers.

    :meth:`run` returns ``(value, shared)``. Values are kept for the ``cache_size`` most recent keys.
    When the work raises an error whose ``halts_run`` is true (bad key, spent quota), every waiter
    gets it too; for any other failure (or a cancelled owner) one waiter takes over and tries itself.
    """

    def __init__(self, cache_size: int = 100_000) -> None:
        self._cache: OrderedDict[K, V] = OrderedDict()
        self._cache_size = cache_size
        self._flights: dict[K, _Flight[V]] = {}
        self.shared = 0

    def __len__(self) -> int:
        return len(self._cache)

    def running(self, key: K) -> bool:
        """Whether :meth:`run` for ``key`` would now wait for another caller's work."""
        return key in self._flights and key not in self._cache

    async def run(self, key: K, work: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        while True:
            if key in self._cache:
                self._cache.move_to_end(key)
                self.shared += 1
                return self._cache[key], True
            flight = self._flights.get(key)
            if flight is None:
                flight = self._flights[key] = _Flight()
                try:
                    value = await work()
                except Exception as exc:
                    if getattr(exc, "halts_run", False):
                        flight.error = exc
                    raise
                else:
                    flight.ok, flight.value = True, value
                    self._cache[key] = value
                    if len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
                    return value, False
                finally:
                    del self._flights[key]
                    flight.finish()
            await flight.wait()
            if flight.ok:
                self.shared += 1
                return flight.value, True  # type: ignore[return-value]
            if flight.error is not None:
                raise flight.error
