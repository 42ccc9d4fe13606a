"""A connection pool for aiomcache's ``Client`` that never hands out a connection out of step.

aiomcache 0.8 speaks the protocol well but its pool has three traps this replaces:

* a call interrupted by ``CancelledError`` (a timeout, a cancelled task) returns its
  connection to the pool with the reply still unread, so a later call reads it
  (aio-libs/aiomcache#489: wrong values, ``None``, ``IndexError``). Here a connection
  released while a ``BaseException`` that is not an ``Exception`` propagates, or by a
  task being cancelled, is closed instead of reused (other exceptions already close it);
* a server closing the socket mid-reply makes ``readline()`` return ``b""`` forever,
  and aiomcache's simple-command loop spins without yielding, freezing the event loop.
  Connections here use a reader that raises ``ConnectionResetError`` instead;
* the pool only grows to ``pool_minsize`` (which defaults to opening ``pool_size``
  connections one after another on first use). Here it grows lazily to ``maxsize``,
  a semaphore bounds it, and a discarded connection frees its slot for a waiter.

Opening a connection is bounded by ``connect_timeout``, inside the calling store call's
deadline: connecting is part of the call, never extra time on top of ``timeout``.
"""

from __future__ import annotations

import asyncio
import sys

from aiomcache.pool import Connection, MemcachePool

__all__ = ["SafePool"]


class _StrictReader(asyncio.StreamReader):
    """A stream reader whose ``readline`` fails on a truncated line instead of returning it."""

    async def readline(self) -> bytes:
        line = await super().readline()
        if not line.endswith(b"\n"):
            raise ConnectionResetError("memcached closed the connection in the middle of a reply")
        return line


async def _open(host: str, port: int) -> Connection:
    loop = asyncio.get_running_loop()
    reader = _StrictReader(limit=2**16, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.create_connection(lambda: protocol, host, port)
    return Connection(reader, asyncio.StreamWriter(transport, protocol, reader, loop))


def _usable(conn: Connection) -> bool:
    return not (conn.reader.at_eof() or conn.reader.exception() is not None or conn.writer.is_closing())


def _interrupted() -> bool:
    """Whether the current release happens while a call is being torn down mid-reply."""
    exc = sys.exc_info()[1]
    if exc is not None and not isinstance(exc, Exception):
        return True  # CancelledError, KeyboardInterrupt, ... propagating through aiomcache
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class SafePool(MemcachePool):
    """Drop-in for ``aiomcache.pool.MemcachePool`` (``acquire``/``release``/``clear``)."""

    def __init__(self, host: str, port: int, *, maxsize: int, connect_timeout: float) -> None:
        super().__init__(host, port, minsize=1, maxsize=maxsize)
        self._connect_timeout = connect_timeout
        self._slots = asyncio.Semaphore(maxsize)
        self._idle: list[Connection] = []
        self._retired = False

    async def acquire(self) -> Connection:
        """An idle healthy connection, or a new one when none is idle."""
        await self._slots.acquire()
        try:
            while self._idle:
                conn = self._idle.pop()
                if _usable(conn):
                    break
                self._do_close(conn)
            else:
                conn = await self._connect()
        except BaseException:
            self._slots.release()
            raise
        self._in_use.add(conn)
        return conn

    def release(self, conn: Connection) -> None:
        """Back to the pool if the exchange completed cleanly; closed otherwise."""
        self._in_use.discard(conn)
        if self._retired or not _usable(conn) or _interrupted():
            self._do_close(conn)
        else:
            self._idle.append(conn)
        self._slots.release()

    async def clear(self) -> None:
        """Close the idle connections (aiomcache's ``Client.close``)."""
        self.retire(keep_open=True)

    def retire(self, keep_open: bool = False) -> None:
        """Close idle connections; unless ``keep_open``, close in-use ones when released."""
        self._retired = self._retired or not keep_open
        idle, self._idle = self._idle, []
        for conn in idle:
            self._do_close(conn)

    async def _connect(self) -> Connection:
        async with asyncio.timeout(self._connect_timeout):
            return await _open(self._host, self._port)
