"""Single commands to one Redis server on redis-py connections, without the client's per-command work.

``redis.asyncio.Redis.execute_command`` takes each command through the pool's
``asyncio.Lock`` twice, a retry wrapper, instrumentation hooks, a new task for the
send timeout (``asyncio.wait_for`` on Python 3.11) and a timer for the read: about
35 µs of CPU for a 10 kB GET on the benchmark machine. A :class:`Lane` keeps the
same redis-py connections (handshake, AUTH, SELECT, TLS, RESP parsing all stay
redis-py's) on a plain free list and bounds the whole call with one loop timer:
about 17 µs (``benchmarks/`` measures both through the app). The replies of a hit's
``GET``/``MGET`` are read in one pass instead (:mod:`._redis_reply`, RESP2).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ._deadline import Deadline
from ._redis_client import DRIVER_ERRORS, rex
from ._redis_reply import read_bulks

__all__ = ["BULKS", "Lane", "PIPELINE", "SINGLE"]

SINGLE, PIPELINE, BULKS = 0, 1, 2
"""How :meth:`Lane.round_trip` sends and reads: one command, several, or one packed ``GET``/``MGET``."""


async def _reply(conn: Any) -> Any:
    """One reply; an error reply (read in full, the connection still in step) is returned."""
    try:
        return await conn.read_response(disable_decoding=True)
    except rex.ResponseError as exc:
        return exc


class Lane:
    """One event loop's connections to one server, for one command at a time each.

    A call takes an idle connection (or opens one, up to ``max_connections``),
    writes the packed command, reads the reply with redis-py's parser and puts the
    connection back. The deadline covers the whole call, connecting included: when
    it passes, the call is cancelled, the connection (now out of step) is dropped
    and ``redis.exceptions.TimeoutError`` is raised. A refused or reset connection
    is retried on a fresh one up to ``retries`` times; a timeout never is.
    """

    def __init__(
        self,
        connection_class: Any,
        connection_kwargs: dict[str, Any],
        *,
        timeout: float,
        retries: int,
        max_connections: int,
    ) -> None:
        # The lane's own deadline replaces redis-py's per-read timer and per-send task.
        self._kwargs = {**connection_kwargs, "socket_timeout": None}
        self._connection_class = connection_class
        self._timeout = timeout
        self._retries = retries
        self._max = max_connections
        self.resp2 = str(connection_kwargs.get("protocol") or 2) == "2"
        """Whether :data:`BULKS` may be used: replies read beside redis-py's parser are RESP2."""
        self._idle: list[Any] = []
        self._open = 0
        self._closed = False

    async def call(self, *args: Any) -> Any:
        """Send one command and return its reply (bytes undecoded); raise redis-py's errors."""
        return await self.round_trip((args,), SINGLE)

    async def pipeline(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Send several commands in one write and read their replies: one round trip.

        An error reply comes back in the list as a ``redis.exceptions.ResponseError``
        (the other replies are still read, keeping the connection in step).
        """
        replies: list[Any] = await self.round_trip(commands, PIPELINE)
        return replies

    async def round_trip(self, commands: Any, how: int) -> Any:
        """``commands`` in one write, their replies read: ``call`` (:data:`SINGLE`, one command in
        a tuple), ``pipeline`` (:data:`PIPELINE`), or :data:`BULKS`: ``commands`` is a ``GET`` or
        ``MGET`` packed by :func:`~._redis_reply.pack`, its reply read by
        :func:`~._redis_reply.read_bulks` (only when :attr:`resp2`)."""
        deadline = Deadline(self._timeout)
        retries = self._retries
        try:
            while True:
                conn = self._idle.pop() if self._idle else self._connection()
                try:
                    writer = conn._writer
                    if writer is not None and writer.transport.is_closing():
                        # reset while idle: uvloop would refuse the write (RuntimeError); reconnect
                        await conn.disconnect(nowait=True)
                        writer = None
                    if how == BULKS:
                        if writer is None:  # new or dropped: redis-py connects it first
                            await conn.send_packed_command(commands, check_health=False)
                        else:
                            writer.write(commands)
                        reply: Any = await read_bulks(conn)
                    elif how == SINGLE:
                        await conn.send_packed_command(conn.pack_command(*commands[0]), check_health=False)
                        reply = await conn.read_response(disable_decoding=True)
                    else:
                        await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
                        reply = [await _reply(conn) for _ in commands]
                except rex.ResponseError:  # an error reply, read in full: the connection is in step
                    await self._put_back(conn)
                    raise
                except rex.ConnectionError:  # refused or reset (redis-py has disconnected it)
                    self._open -= 1
                    if retries <= 0 or self._closed:
                        raise
                    retries -= 1
                    continue
                except BaseException:  # timeout, cancellation, anything: out of step, dropped
                    self._open -= 1
                    with contextlib.suppress(*DRIVER_ERRORS):
                        await conn.disconnect(nowait=True)
                    raise
                await self._put_back(conn)
                return reply
        except asyncio.CancelledError:
            if deadline.expired():  # our deadline, not a cancellation from outside
                raise rex.TimeoutError(f"no reply within {self._timeout:g}s") from None
            raise
        finally:
            deadline.cancel()

    def _connection(self) -> Any:
        if self._open >= self._max:
            raise rex.ConnectionError(f"too many connections ({self._max}, max_connections)")
        self._open += 1
        return self._connection_class(**self._kwargs)

    async def _put_back(self, conn: Any) -> None:
        if self._closed:  # rare: the lane closed during the call
            self._open -= 1
            with contextlib.suppress(*DRIVER_ERRORS):
                await conn.disconnect()
            return
        self._idle.append(conn)

    async def close(self) -> None:
        """Disconnect the idle connections; those in use are closed when their call ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._open -= 1
            with contextlib.suppress(*DRIVER_ERRORS):
                await conn.disconnect()
