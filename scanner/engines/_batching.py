"""Two coordination helpers for vendor engines: a lingering batcher and a single-flight map.

Neither starts a task: the caller that opens a batch flushes it, and the caller that starts a flight
runs it, so every piece of work has a parent (the job that needed it) and cancellation is local.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Generic, TypeVar

import anyio

from ..ratelimit import Clock, MonotonicClock

__all__ = ("Batcher", "Singleflight")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Abandoned(Exception):
    """The caller doing the work was cancelled; a waiter takes over."""


class _Batch(Generic[K, V]):
    __slots__ = ("done", "error", "full", "keys", "results")

    def __init__(self) -> None:
        self.keys: list[K] = []
        self.full = anyio.Event()
        self.done = anyio.Event()
        self.results: Mapping[K, V] | None = None
        self.error: BaseException | None = None


class Batcher(Generic[K, V]):
    """Collects keys for ``linger`` seconds (or until ``max_size()``), then resolves them in one call.

    :meth:`get` waits for its batch's answer and returns this key's value. The caller that opened the
    batch sleeps the linger and calls ``flush``; if ``flush`` raises, every caller of that batch gets
    the same exception. If that caller is cancelled, the others put their keys in a new batch.
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
        self.batches = 0

    async def get(self, key: K) -> V:
        while True:
            batch = self._open
            owner = batch is None
            if batch is None:
                batch = self._open = _Batch()
            if key not in batch.keys:
                batch.keys.append(key)
            if len(batch.keys) >= max(1, self._max_size()):
                self._open = None
                batch.full.set()
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
            await _race(self._clock, batch.full, self._linger)
            if self._open is batch:
                self._open = None
            self.batches += 1
            batch.results = await self._flush(list(batch.keys))
        except Exception as exc:
            batch.error = exc
        except BaseException:
            batch.error = _Abandoned()
            raise
        finally:
            batch.done.set()


async def _race(clock: Clock, event: anyio.Event, seconds: float) -> None:
    """Return when ``event`` is set or ``seconds`` have passed on ``clock``."""
    if event.is_set() or seconds <= 0:
        return
    async with anyio.create_task_group() as tg:

        async def alarm() -> None:
            await clock.sleep(seconds)
            tg.cancel_scope.cancel()

        tg.start_soon(alarm)
        await event.wait()
        tg.cancel_scope.cancel()


class _Flight(Generic[V]):
    __slots__ = ("done", "error", "ok", "value")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.ok = False
        self.value: V | None = None
        self.error: BaseException | None = None


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
                    flight.done.set()
            await flight.done.wait()
            if flight.ok:
                self.shared += 1
                return flight.value, True  # type: ignore[return-value]
            if flight.error is not None:
                raise flight.error
