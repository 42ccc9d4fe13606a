"""Stampede protection: one computation per key in a process, and across processes.

In a process, concurrent misses on one key share the first caller's result
(per event loop, bounded wait). Across processes, a backend with
``SupportsLock`` holds a lease lock named ``<entry key>:lock``; the others poll
the store for the entry until the lease runs out, then compute themselves, so a
crashed or cancelled holder strands nobody beyond the lease.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cache import Cache
    from .envelope import ResponseEntry, ValueEntry

__all__ = ["Flights", "StoreLock", "follow", "wait_for_entry"]

LOCK_SUFFIX = ":lock"
_POLL = 0.025


class Flights:
    """In-flight computations by key; a future only counts within the loop that made it."""

    def __init__(self) -> None:
        self._table: dict[str, asyncio.Future[Any]] = {}

    def pending(self, key: str) -> asyncio.Future[Any] | None:
        """The future of a computation already running for ``key`` in the running loop."""
        future = self._table.get(key)
        if future is None or future.get_loop() is not asyncio.get_running_loop():
            return None
        return future

    def start(self, key: str) -> asyncio.Future[Any] | None:
        """Register as the computation for ``key``; ``None`` when another loop already is."""
        current = self._table.get(key)
        if current is not None and not current.done():
            return None  # another loop (a sync function's portal, say) leads: do not share across loops
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._table[key] = future
        return future

    def finish(self, key: str, future: asyncio.Future[Any] | None, result: Any = None) -> None:
        """Publish ``result`` (if not already) and unregister."""
        if future is None:
            return
        if not future.done():
            future.set_result(result)
        if self._table.get(key) is future:
            del self._table[key]

    @asynccontextmanager
    async def lead(self, key: str) -> AsyncIterator[asyncio.Future[Any]]:
        """Lead the computation for ``key``; followers get what is set on the future.

        If the block exits without a result (an exception, a cancellation), followers
        receive ``None`` and compute for themselves.
        """
        future = self.start(key)
        placeholder = future or asyncio.get_running_loop().create_future()
        try:
            yield placeholder
        finally:
            self.finish(key, future, placeholder.result() if placeholder.done() else None)


async def follow(future: asyncio.Future[Any], wait: float) -> Any:
    """The leader's result, or ``None`` after ``wait`` seconds (then compute yourself)."""
    try:
        return await asyncio.wait_for(asyncio.shield(future), wait)
    except TimeoutError:
        return None


class StoreLock:
    """The store lock of one miss, for backends with ``SupportsLock``.

    Taken together with a re-read of the entry and released together with its
    write when the backend offers ``SupportsLockRoundTrips`` (two round trips for
    a locked miss instead of four). Every step fails open: a lock that cannot be
    taken counts as held, so the caller computes rather than waits for nobody.
    """

    def __init__(self, cache: Cache, key: str) -> None:
        self.cache = cache
        self.key = key
        self.lock_key = key + LOCK_SUFFIX
        self.token = secrets.token_hex(16)
        self.held = False

    async def acquire(self, reread: bool) -> tuple[bool, Any]:
        """Take the lock; ``(held, entry)``, the entry re-read with it when ``reread``."""
        cache, lock = self.cache, self.cache.lock
        assert lock is not None
        lease = cache.settings.lock_lease
        if reread and cache.lock_round_trips is not None:
            call = cache.lock_round_trips.acquire_lock_and_get(self.lock_key, self.token, lease, self.key)
            held, raw = await cache.guarded("lock", call, (True, None))
            self.held = held
            return held, cache.decode_entry(self.key, raw)
        self.held = await cache.guarded("lock", lock.acquire_lock(self.lock_key, self.token, lease), True)
        entry = await cache.read_entry(self.key) if self.held and reread else None
        return self.held, entry

    async def write(self, entry: ResponseEntry | ValueEntry) -> None:
        """Store ``entry``; release the lock in the same round trip when the backend can."""
        cache = self.cache
        if self.held and cache.lock_round_trips is not None:
            if await cache.write_entry(self.key, entry, unlock=(self.lock_key, self.token)):
                self.held = False  # released with the write; otherwise release() tries again
            return
        await cache.write_entry(self.key, entry)

    async def release(self) -> None:
        """Release the lock if still held (always tried, never raises when failing open)."""
        if self.held and self.cache.lock is not None:
            self.held = False
            await self.cache.guarded("unlock", self.cache.lock.release_lock(self.lock_key, self.token), False)


async def wait_for_entry(cache: Cache, key: str, fresh: Any) -> Any:
    """Poll the store for ``key`` until ``fresh(entry)`` or the lock lease has passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cache.settings.lock_lease
    while loop.time() < deadline:
        await asyncio.sleep(_POLL)
        entry = await cache.read_entry(key)
        if entry is not None and fresh(entry):
            return entry
    return None
