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

Commands are plain tuples sent through one executor per backend, picked when it is
built (:mod:`._redis_exec`): a lane for one fixed server, redis-py's client otherwise.
Sentinel is not a kind of backend of its own: ``RedisSentinelBackend`` is
``RedisBackend`` configured to find the master through the sentinels (``_SENTINEL``).

On a cluster, a key is stored as ``{tag}key`` where ``tag`` is the CRC-32 (8 hex
digits) of the key without its trailing ``:lock`` suffixes, so an entry and its
lock share a slot, and ``clear`` matches ``{????????}<namespace>*`` on every primary.

Stamps (``SupportsStamps``) are plain string keys. On one server (single, Sentinel) a
stamped read is one ``MGET`` of the entry and its stamps, and ``write_stamps`` one
``SET ... PX`` per stamp, pipelined. A cluster keeps its stamps in buckets
(``SupportsStampBuckets``): 32 hash tags (``{s07~003a}``, 8 characters like the CRC
tags, so ``clear``'s pattern matches both), each picked so that its slot lies in the
middle of its 32nd of the slot range, so they spread evenly over the primaries of any
even split (11, 11 and 10 buckets over 3 primaries). The core puts each entry in one
bucket (its key starts with the tag, which ``_key`` then keeps) and reads the copies of
its stamps in that bucket: a stamped hit is one ``MGET`` on one node. An invalidation
replaces the copies that exist (``SET ... XX`` in a script, one command per bucket).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..exceptions import BackendError, ConfigurationError
from ._loops import Factory, PerLoop
from ._redis_channel import RedisSubscription
from ._redis_client import (
    DRIVER_ERRORS,
    ClusterOptions,
    Redis,
    RedisCluster,
    RedisOptions,
    SentinelOptions,
    Target,
    build_cluster,
    build_redis,
    build_sentinel,
    clone_redis,
    key_slot,
    parse_target,
    prepare_cluster,
    serve_client,
)
from ._redis_exec import (
    ClientExecutor,
    Executor,
    LaneExecutor,
    answered,
    lanes_like,
    stored,
    stored_many,
    whole_call,
)
from .options import _redact, parse_options

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
# Replaces the stamps (KEYS, all in one slot) that exist with their tokens (ARGV, then the ttl
# in ms, "" for none); absent ones stay absent.
_REPLACE_STAMPS = """\
local ttl = ARGV[#ARGV]
for i, key in ipairs(KEYS) do
    if ttl == '' then
        redis.call('SET', key, ARGV[i], 'XX')
    else
        redis.call('SET', key, ARGV[i], 'XX', 'PX', ttl)
    end
end
return #KEYS
"""
_REPLACE_STAMPS_SHA = hashlib.sha1(_REPLACE_STAMPS.encode(), usedforsecurity=False).hexdigest()
# What an executor re-sends as EVAL after NOSCRIPT.
_SCRIPTS = {_RELEASE_LOCK_SHA: _RELEASE_LOCK, _REPLACE_STAMPS_SHA: _REPLACE_STAMPS}
CLUSTER_BUCKETS = 32  # stamp buckets of a cluster: a hit's keys share one of these hash tags
_SLOTS = 16384
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


def _expiry_args(ttl: float | None) -> tuple[Any, ...]:
    """SET's expiry arguments: ``("EX", s)``, ``("PX", ms)`` or none."""
    ex, px = _expiry(ttl)
    if ex is not None:
        return ("EX", ex)
    if px is not None:
        return ("PX", px)
    return ()


def _lease_ms(lease: float) -> int:
    return max(1, round(lease * 1000))


def bucket_tags(count: int) -> tuple[str, ...]:
    """``count`` hash tags of 10 characters (8 inside the braces), the i-th one's slot in the
    middle half of the i-th ``count``-th of the slot range: spread evenly over the primaries
    of any even split of the slots, whatever their number. Deterministic (every process
    computes the same ones)."""
    tags = []
    for i in range(count):
        low, high = i * _SLOTS // count, (i + 1) * _SLOTS // count
        margin = (high - low) // 4
        for n in range(1 << 16):
            tag = f"{{s{i:02d}~{n:04x}}}"
            if low + margin <= key_slot(tag.encode()) < high - margin:
                tags.append(tag)
                break
        else:  # pragma: no cover - CRC16 spreads four hex digits over every quarter-stripe
            raise AssertionError(f"no hash tag for bucket {i} of {count}")
    return tuple(tags)


def _defaults(settings: CacheSettings | None) -> dict[str, Any]:
    return {} if settings is None else {"timeout": settings.timeout}


async def _all(calls: Iterable[Awaitable[Any]]) -> list[Any]:
    """Await concurrently (each call bounded by its own deadline); raise the first error
    only once every call has finished, so none is left running."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _channel_timeout(executor: Executor) -> float:
    """How long opening the channel may take: a few store deadlines (it connects afresh)."""
    timeout = getattr(executor, "timeout", None)
    return max(1.0, 4 * timeout) if timeout else 5.0


class _RedisBase:
    """The store operations shared by the three deployments, as commands sent through an executor."""

    name = "redis"

    def __init__(self, executor: Executor) -> None:
        self._exec = executor

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._exec.where!r})"

    def _key(self, key: str) -> str:
        return key

    def _error(self, exc: BaseException, action: str) -> BackendError:
        return self._exec.error(exc, action)

    def get(self, key: str) -> Coroutine[Any, Any, bytes | None]:
        """GET: the stored bytes or ``None``.

        Returns the executor's read itself (no coroutine of ours): every hit is this call.
        """
        return self._exec.read(self._key(key))

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        """SET with EX (whole seconds) or PX (fractions), none when ``ttl`` is None."""
        await self._exec.call("SET", "SET", self._key(key), value, *_expiry_args(ttl))

    async def delete(self, key: str) -> bool:
        """UNLINK; whether a key was removed."""
        return bool(await self._exec.call("UNLINK", "UNLINK", self._key(key)))

    async def ttl(self, key: str) -> float | None:
        """PTTL in seconds; ``inf`` without expiry, ``None`` when absent."""
        ms = await self._exec.call("PTTL", "PTTL", self._key(key))
        if ms == -2:
            return None
        return math.inf if ms == -1 else ms / 1000

    async def add(self, key: str, value: bytes, ttl: float | None) -> bool:
        """SET NX (with PX/EX); whether it was stored."""
        return bool(await self._exec.call("SET NX", "SET", self._key(key), value, *_expiry_args(ttl), "NX"))

    async def acquire_lock(self, key: str, token: str, lease: float) -> bool:
        """SET key token NX PX lease."""
        return bool(await self._exec.call("lock", "SET", self._key(key), token, "PX", _lease_ms(lease), "NX"))

    async def release_lock(self, key: str, token: str) -> bool:
        """Compare-and-delete in a constant Lua script (EVALSHA, EVAL when not cached)."""
        return bool(await self._exec.call("unlock", "EVALSHA", _RELEASE_LOCK_SHA, 1, self._key(key), token))

    @whole_call("clear")
    async def clear(self, namespace: str) -> None:
        """SCAN MATCH ``<namespace>*`` (glob-escaped) and UNLINK each batch; never KEYS."""
        try:
            client = await self._exec.client()
            await self._clear(client, glob_escape(namespace) + "*")
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "clear") from exc

    async def _clear(self, client: Any, pattern: str) -> None:
        cursor = 0
        while True:
            cursor, keys = await client.scan(cursor, match=pattern, count=SCAN_COUNT)
            answered()
            if keys:
                await client.unlink(*keys)
                answered()
            if not cursor:
                return

    async def close(self) -> None:
        """Disconnect this loop's connections (a client passed in is left open)."""
        try:
            await self._exec.close()
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "close") from exc

    @whole_call("INFO")
    async def stats(self) -> Mapping[str, Any]:
        """INFO and DBSIZE figures (for the whole database, not only cacheframe's keys)."""
        try:
            client = await self._exec.client()
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
        answered()
        return [(info, int(await client.dbsize()))]


def _client_checked(client: Any, kind: type[Any], name: str) -> Any:
    if not isinstance(client, kind):
        raise ConfigurationError(f"{name}(client=...) needs a {kind.__module__}.{kind.__name__}")
    pool = getattr(client, "connection_pool", None)
    kwargs: Mapping[str, Any] = client.get_connection_kwargs() if pool is None else pool.connection_kwargs
    if kwargs.get("decode_responses"):
        raise ConfigurationError(f"{name}(client=...) needs decode_responses=False: values are bytes")
    return client


@dataclass(frozen=True)
class _Deployment:
    """How a single-master backend reaches its server, from its URL."""

    name: str
    schemes: tuple[str, ...]
    options: type[RedisOptions] | type[SentinelOptions]
    build: Callable[[str, Target, Any], Factory[Redis]]
    fixed_server: bool  # the master never moves: a lane may serve it

    def executor(self, url: str, settings: CacheSettings | None) -> Executor:
        """The lane for a fixed server without health checks; the client otherwise."""
        options = parse_options(url, self.options, _defaults(settings))
        factory = self.build(url, parse_target(url, self.schemes), options)
        clients, where = PerLoop(factory), _redact(url)
        if not self.fixed_server or options.health_check_interval:
            return ClientExecutor(clients, where, options.timeout, _SCRIPTS)
        probe, _ = factory()  # connects nowhere: its pool only knows the connection settings
        lanes = lanes_like(probe, options.timeout, options.retries)
        return LaneExecutor(lanes, clients, where, options.timeout, _SCRIPTS)


_SINGLE = _Deployment("redis", ("redis", "rediss", "unix"), RedisOptions, build_redis, fixed_server=True)
_SENTINEL = _Deployment("redis+sentinel", ("redis+sentinel",), SentinelOptions, build_sentinel, False)


class RedisBackend(_RedisBase):
    """One Redis server (``redis://``, ``rediss://``, ``unix://``) or a client you pass in.

    Built from a URL, the commands go through a lane (redis-py connections without
    the client's per-command overhead, one timer per call), except ``clear`` and
    ``stats``, which need the client's reply parsing. With ``health_check_interval``
    set, every command takes the loop's ``redis.asyncio.Redis``, which PINGs idle
    connections; so does a client passed in (its pool, timeouts and retries are the
    caller's choice). See ``_redis_exec`` for the two executors.
    """

    _deployment = _SINGLE

    def __init__(
        self, client: Redis | None = None, *, url: str | None = None, settings: CacheSettings | None = None
    ) -> None:
        if (client is None) == (url is None):
            raise ConfigurationError(f"{type(self).__name__} needs either client= or url=")
        self.name = self._deployment.name
        if client is not None:  # the caller's client, with its pool, timeouts and retries, for everything
            checked = _client_checked(client, Redis, type(self).__name__)
            clients = PerLoop(serve_client(checked, clone_redis(checked)))
            super().__init__(ClientExecutor(clients, repr(checked), None, _SCRIPTS))
            return
        assert url is not None
        super().__init__(self._deployment.executor(url, settings))

    @classmethod
    def from_url(cls, url: str, settings: CacheSettings | None = None) -> RedisBackend:
        """Build from a URL; its query options override the settings' timeout."""
        return cls(url=url, settings=settings)

    def get(self, key: str) -> Coroutine[Any, Any, bytes | None]:
        """GET: the stored bytes or ``None`` (the executor's read itself: every hit is this call)."""
        return self._exec.read(key)

    async def acquire_lock_and_get(
        self, lock_key: str, token: str, lease: float, key: str
    ) -> tuple[bool, bytes | None]:
        """SET lock NX PX and GET key, pipelined (``SupportsLockRoundTrips``)."""
        lock = ("SET", lock_key, token, "PX", _lease_ms(lease), "NX")
        taken, value = await self._exec.pipeline("lock", (lock, ("GET", key)))
        return bool(taken), stored(value, self._exec.where)

    async def set_and_release_lock(
        self, key: str, value: bytes, ttl: float | None, lock_key: str, token: str
    ) -> bool:
        """SET key and the lock's compare-and-delete (EVALSHA), pipelined."""
        store = ("SET", key, value, *_expiry_args(ttl))
        release = ("EVALSHA", _RELEASE_LOCK_SHA, 1, lock_key, token)
        _, released = await self._exec.pipeline("SET + unlock", (store, release))
        return bool(released)

    def read_stamped(self, key: str, stamps: Sequence[str]) -> Coroutine[Any, Any, list[bytes | None]]:
        """``MGET key stamp...``: the entry and its stamps in one command (``SupportsStamps``)."""
        return self._exec.read_many((key, *stamps))

    async def write_stamps(self, stamps: Mapping[str, bytes], ttl: float | None) -> None:
        """``SET stamp token PX ms`` for each stamp, pipelined (one round trip over a lane);
        raises ``BackendError`` unless the server acknowledged them all."""
        expiry = _expiry_args(ttl)
        commands = [("SET", name, value, *expiry) for name, value in stamps.items()]
        if commands:
            await self._exec.pipeline("SET stamps", commands)

    async def create_stamps(self, stamps: Mapping[str, bytes], ttl: float | None) -> list[bytes | None]:
        """``SET stamp token NX`` then ``GET stamp`` for each, pipelined (one round trip over a
        lane): the token each stamp holds, ours or the one another process set first
        (``SupportsCreateStamps``)."""
        expiry = _expiry_args(ttl)
        commands: list[tuple[Any, ...]] = []
        for name, value in stamps.items():
            commands += [("SET", name, value, "NX", *expiry), ("GET", name)]
        if not commands:
            return []
        replies = await self._exec.pipeline("SET stamps", commands)
        return stored_many(replies[1::2], self._exec.where)

    async def publish(
        self,
        channel: str,
        message: bytes,
        stamps: Mapping[str, bytes] | None = None,
        ttl: float | None = None,
    ) -> None:
        """The stamps' ``SET``s and ``PUBLISH``, pipelined on one connection: the server runs them
        in order, so no subscriber hears of the change before the stamps hold it
        (``SupportsBroadcast``)."""
        expiry = _expiry_args(ttl)
        commands: list[tuple[Any, ...]] = [
            ("SET", name, value, *expiry) for name, value in (stamps or {}).items()
        ]
        commands.append(("PUBLISH", channel, message))
        await self._exec.pipeline("publish", commands)

    async def subscribe(
        self, channel: str, on_message: Callable[[bytes], None], on_lost: Callable[[], None]
    ) -> RedisSubscription:
        """A connection of its own, like the client's (its master, on Sentinel), ``SUBSCRIBE``d."""
        try:
            pool = (await self._exec.client()).connection_pool
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "subscribe") from exc
        connection = pool.connection_class(**pool.connection_kwargs)
        return await RedisSubscription.open(
            connection,
            channel,
            sharded=False,
            on_message=on_message,
            on_lost=on_lost,
            timeout=_channel_timeout(self._exec),
            where=self._exec.where,
            check=_named_master(pool, connection, self._exec.where),
        )


def _named_master(pool: Any, connection: Any, where: str) -> Callable[[], Awaitable[None]] | None:
    """Behind Sentinel (a pool that finds its master through the sentinels): a check that
    ``connection``'s server is still the master the sentinels name, for the channel to run
    after each pong; None for a fixed server.

    After ``SENTINEL FAILOVER`` the old master stays a master for about 10 s (until the
    sentinel reconfigures it and closes its clients): a channel left on it keeps getting
    pongs while invalidations go to the new master, and so would the pool's connections
    still open to it (redis-py asks the sentinels only when it opens one). When the
    check finds the master moved it closes them all, so this process's store calls
    follow too. One sentinel query per lease renewal."""
    if not getattr(pool, "is_master", False) or not callable(getattr(pool, "get_master_address", None)):
        return None

    async def check() -> None:
        try:
            host, port = await pool.get_master_address()
        except DRIVER_ERRORS as exc:
            raise BackendError(f"{where}: asking the sentinels for the master failed: {exc}") from exc
        if (host, int(port)) != (connection.host, int(connection.port)):
            with contextlib.suppress(*DRIVER_ERRORS):  # closing: nothing better to do
                await pool.disconnect()  # in-use ones too: their calls fail (open), the next reconnect
            raise BackendError(
                f"{where}: the master moved to {host}:{port}; "
                f"the channel is on {connection.host}:{connection.port}"
            )

    return check


class RedisSentinelBackend(RedisBackend):
    """The master of a Sentinel-monitored service: ``redis+sentinel://h:p[,h:p]/service``.

    A configuration of :class:`RedisBackend`, nothing more: its URL finds the master
    through the sentinels, and every command takes the client, whose connections
    follow the master across failovers.
    """

    _deployment = _SENTINEL


class RedisClusterBackend(_RedisBase):
    """A Redis Cluster: ``redis+cluster://h:p[,h:p...]``; keys are hash-tagged (see module doc)."""

    name = "redis+cluster"
    stamp_buckets = bucket_tags(CLUSTER_BUCKETS)
    _buckets = frozenset(stamp_buckets)
    _tag_width = len(stamp_buckets[0])

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
            clients = PerLoop(serve_client(checked, None))  # it serves its first loop only
            super().__init__(ClientExecutor(clients, repr(checked), None, _SCRIPTS))
            return
        assert url is not None
        target = parse_target(url, ("redis+cluster",))
        options = parse_options(url, ClusterOptions, _defaults(settings))
        clients = PerLoop(build_cluster(url, target, options), prepare=prepare_cluster)
        super().__init__(ClientExecutor(clients, _redact(url), options.timeout, _SCRIPTS))

    @classmethod
    def from_url(cls, url: str, settings: CacheSettings | None = None) -> RedisClusterBackend:
        """Build from a ``redis+cluster://`` URL."""
        return cls(url=url, settings=settings)

    def _key(self, key: str) -> str:
        if key[:1] == "{" and key[: self._tag_width] in self._buckets:  # placed in a bucket already
            return key
        base = key
        while base.endswith(":lock"):  # k, k:lock, k:lock:lock... share one slot
            base = base[:-5]
        return f"{{{zlib.crc32(base.encode()):08x}}}{key}"

    def read_stamped(self, key: str, stamps: Sequence[str]) -> Coroutine[Any, Any, list[bytes | None]]:
        """One ``MGET`` of the entry and its stamps when they share a bucket (the core's stamped
        reads: one command on one node); else one per slot involved, sent concurrently (one
        round trip of waiting) (``SupportsStamps``)."""
        tag = key[: self._tag_width]
        if tag in self._buckets and all(name.startswith(tag) for name in stamps):
            return self._exec.read_many((key, *stamps))
        return self._read_slots(key, stamps)

    async def _read_slots(self, key: str, stamps: Sequence[str]) -> list[bytes | None]:
        keys = [self._key(name) for name in (key, *stamps)]
        slots: dict[int, list[int]] = {}
        for i, name in enumerate(keys):
            slots.setdefault(key_slot(name.encode()), []).append(i)
        if len(slots) == 1:
            return stored_many(await self._exec.call("MGET", "MGET", *keys), self._exec.where)
        groups = list(slots.values())
        replies = await _all(self._exec.call("MGET", "MGET", *(keys[i] for i in group)) for group in groups)
        values: list[bytes | None] = [None] * len(keys)
        for group, reply in zip(groups, replies, strict=True):
            for i, value in zip(group, stored_many(reply, self._exec.where), strict=True):
                values[i] = value
        return values

    async def write_stamps(self, stamps: Mapping[str, bytes], ttl: float | None) -> None:
        """``SET stamp token PX ms`` on each stamp's slot, concurrently; raises
        ``BackendError`` unless every node acknowledged its stamps."""
        expiry = _expiry_args(ttl)
        await _all(
            self._exec.call("SET stamps", "SET", self._key(name), value, *expiry)
            for name, value in stamps.items()
        )

    async def replace_stamps(self, stamps: Mapping[str, bytes], ttl: float | None) -> None:
        """The stamps that exist replaced, absent ones left absent: per slot involved one
        ``EVALSHA`` of a script running ``SET stamp token XX PX ms`` for each of its stamps, all
        slots concurrently; raises ``BackendError`` unless every node acknowledged
        (``SupportsStampBuckets``)."""
        slots: dict[int, list[tuple[str, bytes]]] = {}
        for name, value in stamps.items():
            key = self._key(name)
            slots.setdefault(key_slot(key.encode()), []).append((key, value))
        expiry = "" if ttl is None or math.isinf(ttl) else str(max(1, round(ttl * 1000)))  # ms
        await _all(
            self._exec.call(
                "SET stamps",
                "EVALSHA",
                _REPLACE_STAMPS_SHA,
                len(group),
                *(key for key, _ in group),
                *(value for _, value in group),
                expiry,
            )
            for group in slots.values()
        )

    async def create_stamps(self, stamps: Mapping[str, bytes], ttl: float | None) -> list[bytes | None]:
        """``SET stamp token NX``, then ``GET stamp``, on each stamp's slot, concurrently
        (``SupportsCreateStamps``)."""
        expiry = _expiry_args(ttl)

        async def create(name: str, value: bytes) -> bytes | None:
            key = self._key(name)
            await self._exec.call("SET stamps", "SET", key, value, "NX", *expiry)
            return stored(await self._exec.call("GET stamps", "GET", key), self._exec.where)

        return list(await _all(create(name, value) for name, value in stamps.items()))

    async def publish(
        self,
        channel: str,
        message: bytes,
        stamps: Mapping[str, bytes] | None = None,
        ttl: float | None = None,
    ) -> None:
        """The stamps' ``SET``s on their slots, then ``SPUBLISH`` on the channel's shard: sharded
        pub/sub keeps a shard's messages and its pongs in one order (classic ``PUBLISH`` is
        relayed between nodes and may overtake a pong) (``SupportsBroadcast``)."""
        if stamps:
            await self.write_stamps(stamps, ttl)
        await self._spublish(self._key(channel), message)

    @whole_call("publish")
    async def _spublish(self, channel: str, message: bytes) -> None:
        try:
            client = await self._exec.client()
            await client.initialize()
            node = client.get_node_from_key(channel)
            await client.execute_command("SPUBLISH", channel, message, target_nodes=node)
            answered()
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "publish") from exc

    async def subscribe(
        self, channel: str, on_message: Callable[[bytes], None], on_lost: Callable[[], None]
    ) -> RedisSubscription:
        """A connection of its own to the channel's shard owner, ``SSUBSCRIBE``d."""
        channel = self._key(channel)
        try:
            client = await self._exec.client()
            await client.initialize()
            node = client.get_node_from_key(channel)
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "subscribe") from exc
        connection = node.connection_class(**node.connection_kwargs)
        return await RedisSubscription.open(
            connection,
            channel,
            sharded=True,
            on_message=on_message,
            on_lost=on_lost,
            timeout=_channel_timeout(self._exec),
            where=self._exec.where,
        )

    @whole_call("clear")
    async def clear(self, namespace: str) -> None:
        """SCAN every primary for ``{????????}<namespace>*`` and UNLINK per slot."""
        try:
            client = await self._exec.client()
            await client.initialize()
            pattern = "{????????}" + glob_escape(namespace) + "*"
            await asyncio.gather(*(self._clear_node(client, n, pattern) for n in client.get_primaries()))
        except DRIVER_ERRORS as exc:
            raise self._error(exc, "clear") from exc

    async def _clear_node(self, client: Any, node: Any, pattern: str) -> None:
        cursor = 0
        while True:
            cursors, keys = await client.scan(cursor, match=pattern, count=SCAN_COUNT, target_nodes=node)
            answered()
            cursor = cursors[node.name]
            if keys:
                await client.unlink(*keys)  # redis-py pipelines one UNLINK per slot
                answered()
            if not cursor:
                return

    async def _infos(self, client: Any) -> list[tuple[dict[str, Any], int]]:
        await client.initialize()
        out = []
        for node in client.get_primaries():
            info = await client.info(target_nodes=node)
            size = await client.dbsize(target_nodes=node)
            answered()
            out.append((info.get(node.name, info), int(size)))
        return out
