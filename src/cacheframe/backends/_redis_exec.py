"""How a Redis backend's commands reach the server: one seam, two executors, picked once.

The backends build commands as plain tuples, the shape redis-py's ``commands/core.py``
hands to ``execute_command`` (``("SET", key, value, "PX", 1500)``), and send them
through an :class:`Executor`:

- :class:`LaneExecutor`: over a :class:`~._redis_lane.Lane` per event loop, redis-py's
  connections without the client's per-command work. For one fixed server without
  health checks (a URL-built ``RedisBackend``).
- :class:`ClientExecutor`: through the loop's redis-py client (``execute_command``),
  for everything else: a master found through Sentinel (it moves on failover), idle
  health checks, a cluster (the client routes by slot), a client passed in.

Both bound each call by the backend's ``timeout``, connecting included, and raise
cacheframe's errors (``from`` the driver's). Both re-send an ``EVALSHA`` answered
``NOSCRIPT`` as ``EVAL`` of its script. A hit is :meth:`Executor.read`: each executor
specialises it so that a hit runs in one coroutine of its own over the I/O, and so
does :meth:`Executor.read_many` (``MGET``), a stamped hit's one command; over a RESP2
lane both are packed and their replies read by :mod:`._redis_reply`, in one pass.

Calls of several round trips that need the client's reply parsing or cluster routing
(SCAN, INFO) take :meth:`Executor.client` inside :func:`whole_call`, whose deadline
:func:`answered` moves on after each round trip.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from contextvars import ContextVar, Token
from typing import Any, Protocol, TypeVar

from ..exceptions import BackendError
from ._deadline import Deadline
from ._loops import Closer, PerLoop
from ._redis_client import DRIVER_ERRORS, driver_error, rex
from ._redis_lane import BULKS, PIPELINE, SINGLE, Lane
from ._redis_reply import pack

__all__ = [
    "ClientExecutor",
    "Command",
    "Executor",
    "LaneExecutor",
    "answered",
    "lanes_like",
    "stored",
    "stored_many",
    "whole_call",
]

Command = tuple[Any, ...]
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
_RUNNING: ContextVar[tuple[Deadline, float] | None] = ContextVar("cacheframe_redis_call", default=None)


class Executor(Protocol):
    """Sends a backend's commands; ``action`` names the call in errors (``"GET"``, ``"lock"``)."""

    where: str
    timeout: float | None

    def read(self, key: str) -> Coroutine[Any, Any, bytes | None]:
        """``GET key``: the stored bytes or ``None``."""
        ...

    def read_many(self, keys: Sequence[str]) -> Coroutine[Any, Any, list[bytes | None]]:
        """``MGET key...`` (keys of one slot on a cluster): the stored bytes or ``None`` each."""
        ...

    async def call(self, action: str, *command: Any) -> Any:
        """One command; its reply (an error reply raises)."""
        ...

    async def pipeline(self, action: str, commands: Sequence[Command]) -> list[Any]:
        """Several commands under one deadline (one round trip on a lane); their replies."""
        ...

    async def client(self) -> Any:
        """The running loop's redis-py client, for what needs its parsing or routing."""
        ...

    async def close(self) -> None:
        """Close the running loop's connections (a client passed in is left open)."""
        ...

    def error(self, exc: BaseException, action: str) -> BackendError:
        """The cacheframe error for a driver exception (raise it ``from exc``)."""
        ...


def stored(value: Any, where: str, action: str = "GET") -> bytes | None:
    """A GET reply as ``get`` returns it: bytes or ``None`` (anything else is an error)."""
    if value is None or isinstance(value, bytes):
        return value
    raise BackendError(f"redis {action} on {where} returned {type(value).__name__}, not bytes")


def stored_many(values: Any, where: str) -> list[bytes | None]:
    """An MGET reply as ``read_stamped`` returns it: a list of bytes or ``None``."""
    if not isinstance(values, list):
        raise BackendError(f"redis MGET on {where} returned {type(values).__name__}, not a list")
    for value in values:
        if value is not None and not isinstance(value, bytes):
            stored(value, where, "MGET")  # raises, naming the type
    return values


def _unscripted(command: Command, scripts: Mapping[str, str]) -> Command | None:
    """The ``EVAL`` to send for an ``EVALSHA`` answered NOSCRIPT (``None``: not ours to re-send)."""
    if command[0] != "EVALSHA" or command[1] not in scripts:
        return None
    return ("EVAL", scripts[command[1]], *command[2:])


# -- deadlines of whole calls ---------------------------------------------------------------


def _begin(timeout: float | None) -> tuple[Deadline, Token[tuple[Deadline, float] | None]] | None:
    """Start a whole call's deadline, unless there is no timeout or a call is running already."""
    if timeout is None or _RUNNING.get() is not None:
        return None
    deadline = Deadline(timeout)
    return deadline, _RUNNING.set((deadline, timeout))


def _end(scope: tuple[Deadline, Token[tuple[Deadline, float] | None]] | None) -> None:
    if scope is not None:
        scope[0].cancel()
        _RUNNING.reset(scope[1])


def _timeout_error(executor: Executor, action: str) -> BackendError:
    return executor.error(rex.TimeoutError(f"no reply within {executor.timeout:g}s"), action)


def whole_call(action: str) -> Callable[[F], F]:
    """Bound a backend method, connecting and every round trip included, by its ``timeout``.

    redis-py's socket timeouts bound each read and each connect separately, so one call
    through Sentinel (ask a sentinel, then connect to the master, then the command) could
    take several of them. A backend built around a client passed in (``timeout`` None)
    keeps that client's own timeouts. The method's ``self._exec`` is its executor.
    """

    def wrap(method: F) -> F:
        @functools.wraps(method)
        async def bounded(self: Any, *args: Any, **kwargs: Any) -> Any:
            executor: Executor = self._exec
            scope = _begin(executor.timeout)
            try:
                return await method(self, *args, **kwargs)
            except asyncio.CancelledError:
                if scope is not None and scope[0].expired():
                    raise _timeout_error(executor, action) from None
                raise
            finally:
                _end(scope)

        return bounded  # type: ignore[return-value]

    return wrap


def answered() -> None:
    """A round trip of a many-step call (``clear``, ``stats``) was answered: the next gets ``timeout``."""
    running = _RUNNING.get()
    if running is not None:
        deadline, timeout = running
        deadline.extend_to(asyncio.get_running_loop().time() + timeout)


# -- the two executors ----------------------------------------------------------------------


class ClientExecutor:
    """Commands through the running loop's redis-py client (``execute_command``)."""

    def __init__(
        self, clients: PerLoop[Any], where: str, timeout: float | None, scripts: Mapping[str, str]
    ) -> None:
        self.clients = clients
        self.where = where
        self.timeout = timeout
        self._scripts = scripts

    def error(self, exc: BaseException, action: str) -> BackendError:
        """The cacheframe error for a driver exception (raise it ``from exc``)."""
        return driver_error(exc, action, self.where, self.timeout)

    async def read(self, key: str) -> bytes | None:
        """``GET key``: the stored bytes or ``None``."""
        return stored((await self._run("GET", (("GET", key),)))[0], self.where)

    async def read_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """``MGET key...``: the stored bytes or ``None`` each."""
        return stored_many((await self._run("MGET", (("MGET", *keys),)))[0], self.where)

    async def call(self, action: str, *command: Any) -> Any:
        """One command; its reply (an error reply raises)."""
        return (await self._run(action, (command,)))[0]

    async def pipeline(self, action: str, commands: Sequence[Command]) -> list[Any]:
        """The commands one after another, under one deadline; their replies."""
        return await self._run(action, commands)

    async def _run(self, action: str, commands: Sequence[Command]) -> list[Any]:
        scope = _begin(self.timeout)
        try:
            client = self.clients.current() or await self.clients.get()
            return [await self._execute(client, command) for command in commands]
        except asyncio.CancelledError:
            if scope is not None and scope[0].expired():
                raise _timeout_error(self, action) from None
            raise
        except DRIVER_ERRORS as exc:
            raise self.error(exc, action) from exc
        finally:
            _end(scope)

    async def _execute(self, client: Any, command: Command) -> Any:
        try:
            return await client.execute_command(*command)
        except rex.NoScriptError:
            fallback = _unscripted(command, self._scripts)
            if fallback is None:
                raise
            return await client.execute_command(*fallback)

    async def client(self) -> Any:
        """The running loop's redis-py client."""
        return self.clients.current() or await self.clients.get()

    async def close(self) -> None:
        """Close the running loop's client (a client passed in is left open)."""
        await self.clients.close()


class LaneExecutor:
    """Commands over the running loop's :class:`~._redis_lane.Lane`; ``clients`` for the rest."""

    def __init__(
        self,
        lanes: PerLoop[Lane],
        clients: PerLoop[Any],
        where: str,
        timeout: float,
        scripts: Mapping[str, str],
    ) -> None:
        self.lanes = lanes
        self.clients = clients
        self.where = where
        self.timeout: float | None = timeout
        self._scripts = scripts

    def error(self, exc: BaseException, action: str) -> BackendError:
        """The cacheframe error for a driver exception (raise it ``from exc``)."""
        return driver_error(exc, action, self.where, self.timeout)

    async def read(self, key: str) -> bytes | None:
        """``GET key``: every hit's one round trip, in this one coroutine over the lane's."""
        lanes = self.lanes
        try:
            lane = lanes.current() or await lanes.get()
            if lane.resp2:
                value = await lane.round_trip(pack(b"GET", (key,)), BULKS)
            else:
                value = await lane.round_trip((("GET", key),), SINGLE)
        except DRIVER_ERRORS as exc:
            raise self.error(exc, "GET") from exc
        return stored(value, self.where)

    async def read_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """``MGET key...``: a stamped hit's one round trip, like :meth:`read`."""
        lanes = self.lanes
        try:
            lane = lanes.current() or await lanes.get()
            if lane.resp2:
                values = await lane.round_trip(pack(b"MGET", keys), BULKS)
            else:
                values = await lane.round_trip((("MGET", *keys),), SINGLE)
        except DRIVER_ERRORS as exc:
            raise self.error(exc, "MGET") from exc
        return stored_many(values, self.where)

    async def call(self, action: str, *command: Any) -> Any:
        """One command in one round trip (bytes undecoded); an error reply raises."""
        try:
            lane = self.lanes.current() or await self.lanes.get()
            try:
                return await lane.round_trip((command,), SINGLE)
            except rex.NoScriptError:
                fallback = _unscripted(command, self._scripts)
                if fallback is None:
                    raise
                return await lane.round_trip((fallback,), SINGLE)
        except DRIVER_ERRORS as exc:
            raise self.error(exc, action) from exc

    async def pipeline(self, action: str, commands: Sequence[Command]) -> list[Any]:
        """The commands in one write, their replies read: one round trip (plus an ``EVAL``
        after NOSCRIPT); the first error reply raises."""
        try:
            lane = self.lanes.current() or await self.lanes.get()
            replies: list[Any] = await lane.round_trip(tuple(commands), PIPELINE)
            for i, reply in enumerate(replies):
                if not isinstance(reply, rex.ResponseError):
                    continue
                fallback = _unscripted(commands[i], self._scripts)
                if fallback is None or not isinstance(reply, rex.NoScriptError):
                    raise reply
                replies[i] = await lane.round_trip((fallback,), SINGLE)
        except DRIVER_ERRORS as exc:
            raise self.error(exc, action) from exc
        return replies

    async def client(self) -> Any:
        """The running loop's redis-py client."""
        return self.clients.current() or await self.clients.get()

    async def close(self) -> None:
        """Close the running loop's lane, then its client."""
        await self.lanes.close()
        await self.clients.close()


def lanes_like(client: Any, timeout: float, retries: int) -> PerLoop[Lane]:
    """Lanes, one per event loop, with ``client``'s connection class and settings."""
    pool = client.connection_pool
    connection_class, kwargs = pool.connection_class, dict(pool.connection_kwargs)
    limit = pool.max_connections

    def make() -> tuple[Lane, Closer]:
        lane = Lane(connection_class, kwargs, timeout=timeout, retries=retries, max_connections=limit)
        return lane, lane.close

    return PerLoop(make)
