"""The invalidation channel of the Redis backends: one connection of its own, subscribed.

redis-py's ``PubSub`` reconnects and resubscribes by itself, so a subscriber could
silently miss messages; this connection never does. It is a redis-py connection
(so TLS, AUTH, ``db`` and Sentinel's master discovery come from the client's
settings), opened, checked to be a master, subscribed, and then read here by one
task: messages go to ``on_message`` in the order the server sent them, and each
pong answers the oldest ping waiting. The first error ends it for good and calls
``on_lost``; the caller opens a new one.

A pong proves that the messages published on *this* server before the ping were read.
Behind Sentinel that is not enough: after ``SENTINEL FAILOVER`` the old master stays a
master (answering pings, taking writes from connections still open to it) for about
10 s, until the sentinel reconfigures it and closes its clients, while the new master
takes every new connection's writes. So a ping is answered only once ``check`` (the
backend's: the sentinels still name this server) has passed too, asked after the ping
was sent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

from ..exceptions import BackendError

__all__ = ["RedisSubscription"]


class _Error(bytes):
    """A RESP error reply."""


def _command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


async def _read(reader: asyncio.StreamReader) -> Any:
    """One RESP2 (or RESP3) reply."""
    line = await reader.readuntil(b"\r\n")
    kind, rest = line[:1], line[1:-2]
    if kind in (b"*", b">", b"~"):
        count = int(rest)
        return None if count < 0 else [await _read(reader) for _ in range(count)]
    if kind in (b"$", b"="):
        size = int(rest)
        if size < 0:
            return None
        return (await reader.readexactly(size + 2))[:-2]
    if kind == b":":
        return int(rest)
    if kind == b"+":
        return rest
    if kind == b"-":
        return _Error(rest)
    if kind == b"_":
        return None
    if kind == b"%":  # a RESP3 map: its pairs, flattened
        return [await _read(reader) for _ in range(2 * int(rest))]
    return rest  # a RESP3 boolean, double or big number: not expected here


class RedisSubscription:
    """A subscribed connection (``SupportsBroadcast.subscribe``'s answer)."""

    def __init__(
        self,
        connection: Any,
        on_message: Callable[[bytes], None],
        on_lost: Callable[[], None],
        where: str,
        check: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._connection = connection
        self._on_message = on_message
        self._on_lost = on_lost
        self._where = where
        self._check = check
        self._pings: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        connection: Any,
        channel: str,
        *,
        sharded: bool,
        on_message: Callable[[bytes], None],
        on_lost: Callable[[], None],
        timeout: float,  # noqa: ASYNC109 - the whole opening's bound, applied inside
        where: str,
        check: Callable[[], Awaitable[None]] | None = None,
    ) -> RedisSubscription:
        """Connect ``connection`` (a redis-py asyncio connection, not connected yet), check its
        server is a master, subscribe it to ``channel``; raises ``BackendError``. ``check``
        runs after each pong (it raises ``BackendError`` when this server is no longer the
        store's master)."""
        sub = cls(connection, on_message, on_lost, where, check)
        try:
            async with asyncio.timeout(timeout):
                await connection.connect()
                reader: asyncio.StreamReader = connection._reader
                writer: asyncio.StreamWriter = connection._writer
                writer.write(_command(b"ROLE"))
                role = await _read(reader)
                if isinstance(role, _Error) or not role or role[0] != b"master":
                    raise BackendError(f"{where}: the channel's server is not a master ({role!r})")
                writer.write(_command(b"SSUBSCRIBE" if sharded else b"SUBSCRIBE", channel.encode()))
                reply = await _read(reader)
                if isinstance(reply, _Error) or not reply or reply[0] not in (b"subscribe", b"ssubscribe"):
                    raise BackendError(f"{where}: subscribing to the channel failed: {reply!r}")
        except BaseException as exc:
            await sub._disconnect()
            if isinstance(exc, BackendError):
                raise
            if isinstance(exc, (OSError, TimeoutError, EOFError, asyncio.IncompleteReadError, ValueError)):
                raise BackendError(f"{where}: subscribing failed: {type(exc).__name__}: {exc}") from exc
            if isinstance(exc, Exception):  # redis-py's own errors (ConnectionError, AuthenticationError...)
                raise BackendError(f"{where}: subscribing failed: {type(exc).__name__}: {exc}") from exc
            raise
        sub._task = asyncio.get_running_loop().create_task(sub._run(reader), context=contextvars.Context())
        return sub

    async def _run(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                reply = await _read(reader)
                if isinstance(reply, list) and reply:
                    kind = reply[0]
                    if kind in (b"message", b"smessage") and len(reply) >= 3:
                        self._on_message(reply[2])
                    elif kind == b"pong":
                        self._answered()
                    elif kind in (b"unsubscribe", b"sunsubscribe"):  # a slot moved away: resubscribe
                        return
                elif reply == b"PONG":  # RESP3 answers a ping in subscribed mode plainly
                    self._answered()
                elif isinstance(reply, _Error):
                    return
        except asyncio.CancelledError:
            raise
        except Exception:  # the connection failed: the subscription is dead
            return
        finally:
            self._end()

    def _answered(self) -> None:
        while self._pings:
            waiter = self._pings.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _end(self) -> None:
        lost = not self._closed
        self._closed = True
        for waiter in self._pings:
            if not waiter.done():
                waiter.set_exception(BackendError(f"{self._where}: the channel's connection was lost"))
        self._pings.clear()
        writer = self._connection._writer
        if writer is not None:
            writer.close()
        if lost:
            self._on_lost()

    async def ping(self) -> None:
        """PING on the subscribed connection; return when its pong was read (and ``check``
        passed, asked after the ping was sent)."""
        if self._closed:
            raise BackendError(f"{self._where}: the channel's connection was lost")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings.append(waiter)
        try:
            self._connection._writer.write(b"*1\r\n$4\r\nPING\r\n")
        except Exception as exc:
            raise BackendError(f"{self._where}: the channel's connection was lost: {exc}") from exc
        await waiter
        if self._check is not None:
            await self._check()

    async def close(self) -> None:
        """Unsubscribe by closing the connection; ``on_lost`` is not called."""
        self._closed = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):  # closing: whatever it died of does not matter
                await task
        await self._disconnect()

    async def _disconnect(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection
            await self._connection.disconnect()
