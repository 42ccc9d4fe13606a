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
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from .types import SupportsLock

if TYPE_CHECKING:
    from .cache import Cache

__all__ = ["Flights", "store_lock"]

LOCK_SUFFIX = ":lock"
_POLL = 0.025


class Flights:
    """In-flight computations by key, one table per running event loop."""

    def __init__(self) -> None:
        self._tables: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Future[Any]]] = (
            weakref.WeakKeyDictionary()
        )

    def _table(self) -> dict[str, asyncio.Future[Any]]:
        loop = asyncio.get_running_loop()
        table = self._tables.get(loop)
        if table is None:
            table = self._tables[loop] = {}
        return table

    def pending(self, key: str) -> asyncio.Future[Any] | None:
        """The future of a computation already running for ``key`` in this loop."""
        return self._table().get(key)

    @asynccontextmanager
    async def lead(self, key: str) -> AsyncIterator[asyncio.Future[Any]]:
        """Register as the computation for ``key``; followers get what is set on the future.

        If the block exits without a result (an exception, a cancellation), followers
        receive ``None`` and compute for themselves.
        """
        table = self._table()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        table[key] = future
        try:
            yield future
        finally:
            if not future.done():
                future.set_result(None)
            if table.get(key) is future:
                del table[key]


async def follow(future: asyncio.Future[Any], wait: float) -> Any:
    """The leader's result, or ``None`` after ``wait`` seconds (then compute yourself)."""
    try:
        return await asyncio.wait_for(asyncio.shield(future), wait)
    except TimeoutError:
        return None


@asynccontextmanager
async def store_lock(cache: Cache, key: str) -> AsyncIterator[bool]:
    """Hold the store lock for ``key`` when the backend has one; yield whether we hold it.

    Yields ``True`` also when the backend has no lock or the lock call fails
    (fail open: compute rather than wait for nobody).
    """
    backend = cache.backend
    if not cache.settings.stampede_lock or not isinstance(backend, SupportsLock):
        yield True
        return
    token = secrets.token_hex(16)
    lease = cache.settings.lock_lease
    held = await cache.guarded("lock", backend.acquire_lock(key + LOCK_SUFFIX, token, lease), True)
    try:
        yield held
    finally:
        if held:
            await cache.guarded("unlock", backend.release_lock(key + LOCK_SUFFIX, token), False)


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
