"""Redis backends on redis-py's asyncio client: single node, Redis Cluster, Sentinel.

URLs (query parameters carry the options of :class:`RedisOptions` and friends)::

    redis://[[user]:password@]host[:port][/db]?timeout=0.25&max_connections=50
    rediss://host:6380/0?ssl_ca_certs=/etc/ca.pem       (TLS)
    unix://[[user]:password@]/run/redis.sock?db=0
    redis+cluster://host:port[,host:port...]
    redis+sentinel://host:26379[,host:26379...]/mymaster?db=0

Every call is one command under one deadline (``timeout``, by default the settings'
timeout) that covers all of it, connecting and finding the master or the cluster's
nodes included, and no retry after a timeout. ``clear`` and ``stats`` walk several
round trips: each gets ``timeout`` (the deadline moves on after each answer).
Driver errors are re-raised as :class:`~cacheframe.exceptions.BackendError` /
``BackendTimeoutError``.

On a cluster, a key is stored as ``{tag}key`` where ``tag`` is the CRC-32 (8 hex
digits) of the key without its trailing ``:lock`` suffixes, so an entry and its
lock share a slot, and ``clear`` matches ``{????????}<namespace>*`` on every primary.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import zlib
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from ..exceptions import BackendError, ConfigurationError
from ._deadline import Deadline
from ._options import _redact, parse_options
from ._redis_client import (
    DRIVER_ERRORS,
    ClusterOptions,
    LoopClients,
    Redis,
    RedisCluster,
    RedisOptions,
    SentinelOptions,
    build_cluster,
    build_redis,
    build_sentinel,
    clone_redis,
    driver_error,
    parse_target,
    prepare_cluster,
    rex,
)
from ._redis_lane import Lane

if TYPE_CHECKING:
    from ..settings import CacheSettings

__all__ = [
    "ClusterOptions",
    "RedisBackend",
    "RedisClusterBackend",
    "RedisOptions",
    "RedisSentinelBackend",
    "SentinelOptions",
]

SCAN_COUNT = 1000
_RELEASE_LOCK = """\
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
_RELEASE_LOCK_SHA = hashlib.sha1(_RELEASE_LOCK.encode(), usedforsecurity=False).hexdigest()
_GLOB = str.maketrans({c: "\\" + c for c in "\\*?[]"})


def glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis MATCH pattern."""
    return text.translate(_GLOB)


def _expiry(ttl: float | None) -> tuple[int | None, int | None]:
    """``(ex, px)`` for SET: whole seconds as EX, fractions as PX (at least 1 ms), None = never."""
    if ttl is None or math.isinf(ttl):
        return None, None
    if ttl >= 1 and float(ttl).is_integer():
        return int(ttl), None
    return None, max(1, round(ttl * 1000))


def _defaults(settings: CacheSettings | None) -> dict[str, Any]:
    return {} if settings is None else {"timeout": settings.timeout}


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
_RUNNING: ContextVar[tuple[Deadline, float] | None] = ContextVar("cacheframe_redis_call", default=None)


def _whole_call(action: str) -> Callable[[F], F]:
    """Bound the whole method, connecting included, by the backend's ``timeout``.

    redis-py's socket timeouts bound each read and each connect separately, so one call
    through Sentinel (ask a sentinel, then connect to the master, then the command) could
    take several of them. A backend built around a client passed in (``timeout`` None)
    keeps that client's own timeouts.
    """

    def wrap(method: F) -> F:
        @functools.wraps(method)
        async def bounded(self: _RedisBase, *args: Any, **kwargs: Any) -> Any:
            timeout = self._timeout
            if timeout is None or _RUNNING.get() is not None:  # no deadline, or inside one already
                return await method(self, *args, **kwargs)
            deadline = Deadline(timeout)
            token = _RUNNING.set((deadline, timeout))
            try:
                return await method(self, *args, **kwargs)
            except asyncio.CancelledError:
                if deadline.expired():
                    raise self._error(rex.TimeoutError(f"no reply within {timeout:g}s"), action) from None
                raise
            finally:
                deadline.cancel()
                _RUNNING.reset(token)

        return bounded  # type: ignore[return-value]

    return wrap


def _answered() -> None:
    """A round trip of a many-step call (``clear``, ``stats``) was answered: the next gets ``timeout``."""
    running = _RUNNING.get()
    if running is not None:
        deadline, timeout = running
        deadline.extend_to(asyncio.get_running_loop().time() + timeout)


class _RedisBase:
    """The store operations shared by the three deployments."""

    name = "redis"

    def __init__(self, clients: LoopClients[Any], where: str, timeout: float | None) -> None:
        self._clients = clients
        self._where = where
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._where!r})"

    def _key(self, key: str) -> str:
        return key

    def _error(self, exc: BaseException, action: str) -> BackendError:
        return driver_error(exc, action, self._where, self._timeout)

    def _stored(self, value: Any) -> bytes | None:
        """A GET reply as what ``get`` returns: bytes or ``None`` (anything else is an error)."""
        if value is None or isinstance(value, bytes):
            return value
        raise BackendError(f"redis GET on {self._where} returned {type(value).__name__}, not bytes")

    @_whole_call("GET")
    async def get(self, key: str) -> bytes | None:
        """GET: the stored bytes or ``None``."""
        try:
            client = await self._clients.get()
            value = await client.get(self._key(key))
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "GET") from exc
        return self._stored(value)

    @_whole_call("SET")
    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        """SET with EX (whole seconds) or PX (fractions), none when ``ttl`` is None."""
        ex, px = _expiry(ttl)
        try:
            client = await self._clients.get()
            await client.set(self._key(key), value, ex=ex, px=px)
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "SET") from exc

    @_whole_call("UNLINK")
    async def delete(self, key: str) -> bool:
        """UNLINK; whether a key was removed."""
        try:
            client = await self._clients.get()
            return bool(await client.unlink(self._key(key)))
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "UNLINK") from exc

    @_whole_call("clear")
    async def clear(self, namespace: str) -> None:
        """SCAN MATCH ``<namespace>*`` (glob-escaped) and UNLINK each batch; never KEYS."""
        try:
            client = await self._clients.get()
            await self._clear(client, glob_escape(namespace) + "*")
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "clear") from exc

    async def _clear(self, client: Any, pattern: str) -> None:
        cursor = 0
        while True:
            cursor, keys = await client.scan(cursor, match=pattern, count=SCAN_COUNT)
            _answered()
            if keys:
                await client.unlink(*keys)
                _answered()
            if not cursor:
                return

    async def close(self) -> None:
        """Disconnect the pool of this loop's client (a client passed in is left open)."""
        try:
            await self._clients.close()
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "close") from exc

    @_whole_call("PTTL")
    async def ttl(self, key: str) -> float | None:
        """PTTL in seconds; ``inf`` without expiry, ``None`` when absent."""
        try:
            client = await self._clients.get()
            ms = await client.pttl(self._key(key))
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "PTTL") from exc
        if ms == -2:
            return None
        return math.inf if ms == -1 else ms / 1000

    @_whole_call("SET NX")
    async def add(self, key: str, value: bytes, ttl: float | None) -> bool:
        """SET NX (with PX/EX); whether it was stored."""
        ex, px = _expiry(ttl)
        try:
            client = await self._clients.get()
            return bool(await client.set(self._key(key), value, ex=ex, px=px, nx=True))
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "SET NX") from exc

    @_whole_call("lock")
    async def acquire_lock(self, key: str, token: str, lease: float) -> bool:
        """SET key token NX PX lease."""
        try:
            client = await self._clients.get()
            stored = await client.set(self._key(key), token, px=max(1, round(lease * 1000)), nx=True)
            return bool(stored)
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "lock") from exc

    @_whole_call("unlock")
    async def release_lock(self, key: str, token: str) -> bool:
        """Compare-and-delete in a constant Lua script (EVALSHA, EVAL when not cached)."""
        stored = self._key(key)
        try:
            client = await self._clients.get()
            try:
                done = await client.evalsha(_RELEASE_LOCK_SHA, 1, stored, token)
            except rex.NoScriptError:
                done = await client.eval(_RELEASE_LOCK, 1, stored, token)
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "unlock") from exc
        return bool(done)

    @_whole_call("INFO")
    async def stats(self) -> Mapping[str, Any]:
        """INFO and DBSIZE figures (for the whole database, not only cacheframe's keys)."""
        try:
            client = await self._clients.get()
            infos = await self._infos(client)
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "INFO") from exc

        def total(field: str) -> int:
            return sum(int(info.get(field, 0)) for info, _ in infos)

        first = infos[0][0]
        return {
            "backend": self.name,
            "nodes": len(infos),
            "entries": sum(size for _, size in infos),
            "bytes": total("used_memory"),
            "hits": total("keyspace_hits"),
            "misses": total("keyspace_misses"),
            "evicted": total("evicted_keys"),
            "expired": total("expired_keys"),
            "connected_clients": total("connected_clients"),
            "maxmemory_policy": first.get("maxmemory_policy"),
            "server_version": first.get("redis_version"),
        }

    async def _infos(self, client: Any) -> list[tuple[dict[str, Any], int]]:
        info = await client.info()
        _answered()
        return [(info, int(await client.dbsize()))]


def _client_checked(client: Any, kind: type[Any], name: str) -> Any:
    if not isinstance(client, kind):
        raise ConfigurationError(f"{name}(client=...) needs a {kind.__module__}.{kind.__name__}")
    pool = getattr(client, "connection_pool", None)
    kwargs: Mapping[str, Any] = client.get_connection_kwargs() if pool is None else pool.connection_kwargs
    if kwargs.get("decode_responses"):
        raise ConfigurationError(f"{name}(client=...) needs decode_responses=False: values are bytes")
    return client


class RedisBackend(_RedisBase):
    """One Redis server (``redis://``, ``rediss://``, ``unix://``) or a client you pass in.

    Built from a URL, GET, SET, UNLINK and the lock's SET NX go through a
    :class:`Lane` (redis-py connections without the client's per-command overhead,
    one timer per call); everything else through the loop's ``redis.asyncio.Redis``.
    With ``health_check_interval`` set, every command takes the client, which PINGs
    idle connections; so does a client passed in (its pool, timeouts and retries are
    the caller's choice).
    """

    schemes: tuple[str, ...] = ("redis", "rediss", "unix")

    def __init__(
        self, client: Redis | None = None, *, url: str | None = None, settings: CacheSettings | None = None
    ) -> None:
        if (client is None) == (url is None):
            raise ConfigurationError(f"{type(self).__name__} needs either client= or url=")
        self._lanes: LoopClients[Lane] | None = None
        if client is not None:  # the caller's client, with its pool, timeouts and retries, for everything
            checked = _client_checked(client, Redis, type(self).__name__)
            super().__init__(LoopClients(clone_redis(checked), checked), repr(checked), None)
            return
        assert url is not None
        options, factory = self._configure(url, settings)
        super().__init__(LoopClients(factory), _redact(url), options.timeout)
        if self._uses_lane(options):
            probe, _ = factory()  # connects nowhere: its pool only knows the connection settings
            self._lanes = LoopClients(_lane_factory(probe.connection_pool, options.timeout, options.retries))

    def _uses_lane(self, options: Any) -> bool:
        return not options.health_check_interval

    def _configure(self, url: str, settings: CacheSettings | None) -> tuple[Any, Any]:
        target = parse_target(url, self.schemes)
        options = parse_options(url, RedisOptions, _defaults(settings))
        return options, build_redis(url, target, options)

    @classmethod
    def from_url(cls, url: str, settings: CacheSettings | None = None) -> RedisBackend:
        """Build from a URL; its query options override the settings' timeout."""
        return cls(url=url, settings=settings)

    async def _lane_call(self, action: str, *args: Any) -> Any:
        assert self._lanes is not None
        try:
            lane = self._lanes.current() or await self._lanes.get()
            return await lane.call(*args)
        except DRIVER_ERRORS as exc:
            raise self._error(exc, action) from exc

    async def get(self, key: str) -> bytes | None:
        """GET: the stored bytes or ``None``."""
        lanes = self._lanes
        if lanes is None:
            return await super().get(key)
        try:  # _lane_call, inlined: this is every hit's one round trip
            lane = lanes.current() or await lanes.get()
            value = await lane.round_trip((("GET", key),), single=True)
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "GET") from exc
        return self._stored(value)

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        """SET with EX (whole seconds) or PX (fractions), none when ``ttl`` is None."""
        if self._lanes is None:
            return await super().set(key, value, ttl)
        await self._lane_call("SET", "SET", key, value, *_expiry_args(ttl))
        return None

    async def delete(self, key: str) -> bool:
        """UNLINK; whether a key was removed."""
        if self._lanes is None:
            return await super().delete(key)
        return bool(await self._lane_call("UNLINK", "UNLINK", key))

    async def acquire_lock(self, key: str, token: str, lease: float) -> bool:
        """SET key token NX PX lease."""
        if self._lanes is None:
            return await super().acquire_lock(key, token, lease)
        return bool(await self._lane_call("lock", "SET", key, token, "PX", max(1, round(lease * 1000)), "NX"))

    async def acquire_lock_and_get(
        self, lock_key: str, token: str, lease: float, key: str
    ) -> tuple[bool, bytes | None]:
        """SET lock NX PX and GET key, pipelined (``SupportsLockRoundTrips``)."""
        if self._lanes is None:
            return await self._acquire_lock_and_get(lock_key, token, lease, key)
        lock = ("SET", lock_key, token, "PX", max(1, round(lease * 1000)), "NX")
        taken, value = await self._lane_pipeline("lock", lock, ("GET", key))
        return bool(taken), self._stored(value)

    async def set_and_release_lock(
        self, key: str, value: bytes, ttl: float | None, lock_key: str, token: str
    ) -> bool:
        """SET key and the lock's compare-and-delete (EVALSHA), pipelined."""
        if self._lanes is None:
            return await self._set_and_release_lock(key, value, ttl, lock_key, token)
        store = ("SET", key, value, *_expiry_args(ttl))
        _, released = await self._lane_pipeline(
            "SET + unlock", store, ("EVALSHA", _RELEASE_LOCK_SHA, 1, lock_key, token), unscripted=1
        )
        if isinstance(released, rex.NoScriptError):  # the first release since the server started
            released = await self._lane_call("unlock", "EVAL", _RELEASE_LOCK, 1, lock_key, token)
        return bool(released)

    @_whole_call("lock + GET")
    async def _acquire_lock_and_get(
        self, lock_key: str, token: str, lease: float, key: str
    ) -> tuple[bool, bytes | None]:
        """The two calls, under one deadline (without lanes)."""
        return await self.acquire_lock(lock_key, token, lease), await self.get(key)

    @_whole_call("SET + unlock")
    async def _set_and_release_lock(
        self, key: str, value: bytes, ttl: float | None, lock_key: str, token: str
    ) -> bool:
        """The two calls, under one deadline (without lanes)."""
        await self.set(key, value, ttl)
        return await self.release_lock(lock_key, token)

    async def _lane_pipeline(
        self, action: str, *commands: tuple[Any, ...], unscripted: int = -1
    ) -> list[Any]:
        """Commands in one round trip; an error reply raises, except NOSCRIPT at ``unscripted``."""
        assert self._lanes is not None
        try:
            lane = self._lanes.current() or await self._lanes.get()
            replies: list[Any] = await lane.pipeline(*commands)
        except DRIVER_ERRORS as exc:
            raise self._error(exc, action) from exc
        for i, reply in enumerate(replies):
            if isinstance(reply, rex.ResponseError) and not (
                i == unscripted and isinstance(reply, rex.NoScriptError)
            ):
                raise self._error(reply, action) from reply
        return replies

    async def close(self) -> None:
        """Disconnect this loop's connections (a client passed in is left open)."""
        try:
            if self._lanes is not None:
                await self._lanes.close()
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "close") from exc
        await super().close()


def _expiry_args(ttl: float | None) -> tuple[Any, ...]:
    ex, px = _expiry(ttl)
    if ex is not None:
        return ("EX", ex)
    if px is not None:
        return ("PX", px)
    return ()


def _lane_factory(pool: Any, timeout: float, retries: int) -> Any:
    """Per-loop lanes with ``pool``'s connection class and settings."""
    connection_class, kwargs = pool.connection_class, dict(pool.connection_kwargs)
    limit = pool.max_connections

    def make() -> tuple[Lane, Any]:
        lane = Lane(connection_class, kwargs, timeout=timeout, retries=retries, max_connections=limit)
        return lane, lane.close

    return make


class RedisSentinelBackend(RedisBackend):
    """The master of a Sentinel-monitored service: ``redis+sentinel://h:p[,h:p]/service``.

    Every command takes the client: its connections follow the master across failovers.
    """

    name = "redis+sentinel"
    schemes = ("redis+sentinel",)

    def _uses_lane(self, options: Any) -> bool:
        return False

    def _configure(self, url: str, settings: CacheSettings | None) -> tuple[Any, Any]:
        target = parse_target(url, self.schemes)
        options = parse_options(url, SentinelOptions, _defaults(settings))
        return options, build_sentinel(url, target, options)


class RedisClusterBackend(_RedisBase):
    """A Redis Cluster: ``redis+cluster://h:p[,h:p...]``; keys are hash-tagged (see module doc)."""

    name = "redis+cluster"

    def __init__(
        self,
        client: RedisCluster | None = None,
        *,
        url: str | None = None,
        settings: CacheSettings | None = None,
    ) -> None:
        if (client is None) == (url is None):
            raise ConfigurationError("RedisClusterBackend needs either client= or url=")
        if client is not None:
            checked = _client_checked(client, RedisCluster, "RedisClusterBackend")
            super().__init__(LoopClients(None, checked), repr(checked), None)
            return
        assert url is not None
        target = parse_target(url, ("redis+cluster",))
        options = parse_options(url, ClusterOptions, _defaults(settings))
        clients = LoopClients(build_cluster(url, target, options), prepare=prepare_cluster)
        super().__init__(clients, _redact(url), options.timeout)

    @classmethod
    def from_url(cls, url: str, settings: CacheSettings | None = None) -> RedisClusterBackend:
        """Build from a ``redis+cluster://`` URL."""
        return cls(url=url, settings=settings)

    def _key(self, key: str) -> str:
        base = key
        while base.endswith(":lock"):  # k, k:lock, k:lock:lock... share one slot
            base = base[:-5]
        return f"{{{zlib.crc32(base.encode()):08x}}}{key}"

    @_whole_call("clear")
    async def clear(self, namespace: str) -> None:
        """SCAN every primary for ``{????????}<namespace>*`` and UNLINK per slot."""
        try:
            client = await self._clients.get()
            await client.initialize()
            pattern = "{????????}" + glob_escape(namespace) + "*"
            await asyncio.gather(*(self._clear_node(client, n, pattern) for n in client.get_primaries()))
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "clear") from exc

    async def _clear_node(self, client: Any, node: Any, pattern: str) -> None:
        cursor = 0
        while True:
            cursors, keys = await client.scan(cursor, match=pattern, count=SCAN_COUNT, target_nodes=node)
            _answered()
            cursor = cursors[node.name]
            if keys:
                await client.unlink(*keys)  # redis-py pipelines one UNLINK per slot
                _answered()
            if not cursor:
                return

    async def _infos(self, client: Any) -> list[tuple[dict[str, Any], int]]:
        await client.initialize()
        out = []
        for node in client.get_primaries():
            info = await client.info(target_nodes=node)
            size = await client.dbsize(target_nodes=node)
            _answered()
            out.append((info.get(node.name, info), int(size)))
        return out
