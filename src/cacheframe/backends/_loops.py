"""One value per running event loop and process: the home of loop-bound driver clients.

asyncio drivers (redis-py, aiomcache) bind their connections to the event loop that
opened them, and a backend may be used from several loops (a TestClient's loop per
request, the sync portal, a thread's ``asyncio.run``) and, after ``os.fork``, from
another process. :class:`PerLoop` keeps one value per loop, built by a factory
with its async closer:

- **per loop**: each running loop gets its own value on first use;
- **loop shutdown**: a small async generator, started in the loop, runs the closer
  when the loop shuts down (``asyncio.run`` finalises async generators before
  closing), and values of closed loops are dropped;
- **fork**: in a new process the inherited values are dropped, never closed (see
  :meth:`PerLoop.get`), and the child builds its own;
- :meth:`PerLoop.close` closes the running loop's value at once and drops the others,
  which their own loops then close.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Closer", "Factory", "PerLoop"]

T = TypeVar("T")
Closer = Callable[[], Awaitable[None]]
Factory = Callable[[], tuple[T, Closer]]


async def _closing(close: Closer, pid: int) -> AsyncGenerator[None, None]:
    """Suspended in its loop until closed; closing it (or the loop's shutdown) runs ``close``."""
    try:
        yield
    finally:
        if os.getpid() == pid:  # a forked child must not close its parent's connections
            with contextlib.suppress(Exception):  # a broken connection needs no goodbye
                await close()


@dataclass
class _Entry(Generic[T]):
    value: T
    closing: AsyncGenerator[None, None]
    ready: asyncio.Future[None] | None = None  # set while ``prepare`` runs


class PerLoop(Generic[T]):
    """One value per running event loop and process, made by ``factory`` on first use.

    ``prepare`` (awaited once per new value, before any other task may use it) lets
    a cluster client discover its topology before concurrent traffic.
    """

    def __init__(self, factory: Factory[T], prepare: Callable[[T], Awaitable[None]] | None = None) -> None:
        self.factory = factory
        self._prepare = prepare
        self._pid = os.getpid()
        self._entries: dict[asyncio.AbstractEventLoop, _Entry[T]] = {}
        self._inherited: list[dict[asyncio.AbstractEventLoop, _Entry[T]]] = []

    def __len__(self) -> int:
        """How many loops of this process hold a value."""
        return len(self._entries) if self._pid == os.getpid() else 0

    def current(self) -> T | None:
        """The running loop's ready value, if there is one (no ``await``: for hot paths)."""
        if self._pid != os.getpid():
            return None
        entry = self._entries.get(asyncio.get_running_loop())
        return entry.value if entry is not None and entry.ready is None else None

    async def get(self) -> T:
        """The running loop's value, made on first use."""
        if self._pid != os.getpid():  # forked: the parent's sockets are not ours
            # Keep the parent's values referenced, never closed here: closing them would
            # also unregister their sockets from the epoll instance parent and child share.
            self._inherited.append(self._entries)
            self._pid, self._entries = os.getpid(), {}
        loop = asyncio.get_running_loop()
        entry = self._entries.get(loop)
        if entry is not None and entry.ready is None:
            return entry.value
        if entry is not None and entry.ready is not None:  # another task is preparing it
            await asyncio.shield(entry.ready)
            if self._entries.get(loop) is entry:
                return entry.value
        return await self._open(loop)  # first use, or that preparation failed

    async def _open(self, loop: asyncio.AbstractEventLoop) -> T:
        for old in [lp for lp in self._entries if lp.is_closed()]:
            del self._entries[old]
        value, close = self.factory()
        closing = _closing(close, self._pid)
        await closing.__anext__()  # its first step registers it with this loop (no suspension)
        entry = self._entries[loop] = _Entry(value, closing)
        if self._prepare is None:
            return value
        entry.ready = ready = loop.create_future()
        try:
            await self._prepare(value)
        except BaseException:
            if self._entries.get(loop) is entry:
                del self._entries[loop]  # the dropped generator closes the value on this loop
            raise
        finally:
            entry.ready = None
            if not ready.done():
                ready.set_result(None)
        return value

    async def close(self) -> None:
        """Close the running loop's value now; drop the others, which their loops close."""
        entries, self._entries = self._entries, {}
        try:
            entry = entries.pop(asyncio.get_running_loop(), None)
        except RuntimeError:
            entry = None
        if entry is not None:
            await entry.closing.aclose()
        # Dropped generators of other loops are finalised by their loop (asyncgen finaliser hook).
