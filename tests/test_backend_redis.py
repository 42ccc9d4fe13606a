"""The Redis backends against real servers (single node, cluster, sentinel), plus Redis specifics."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelConnectionPool

import cacheframe
from cacheframe import registry
from cacheframe.backends._redis_exec import ClientExecutor, LaneExecutor
from cacheframe.backends.redis import (
    _RELEASE_LOCK,
    RedisBackend,
    RedisClusterBackend,
    RedisSentinelBackend,
    _expiry,
)
from cacheframe.exceptions import (
    BackendError,
    BackendTimeoutError,
    ConfigurationError,
    MissingDriverError,
)
from cacheframe.registry import load_backend_factory
from cacheframe.settings import CacheSettings
from cacheframe.testing import BackendConformance
from helpers import assert_fork_child_reads_its_own
from servers import assert_one_call_within_timeout, free_port, silent_server
from servers.redis import RedisClusterServers, RedisSentinelServers, RedisServer, start_redis


def _ns() -> str:
    return f"t-redis-{uuid.uuid4().hex[:10]}:"


def _client_of(backend: Any) -> Any:
    """A fresh driver client built the way the backend builds them (never connected)."""
    client, _close = backend._exec.clients.factory()
    return client


def _raw(server: RedisServer) -> aioredis.Redis:
    return aioredis.Redis(host="127.0.0.1", port=server.port)


# -- the conformance suite on each deployment -------------------------------------------

# The suite checks behaviour, not latency: its 300-call cold burst takes ~0.1-0.2 s of
# event-loop time (new connections included), too near the 0.25 s default deadline on a
# busy CI machine. Deadlines are tested below, on their own.
_SUITE = "timeout=1"


class TestRedisConformance(BackendConformance):
    """The whole backend contract on one redis-server."""

    @pytest.fixture
    def backend_url(self, redis_server: RedisServer) -> str:
        return redis_server.url + "?" + _SUITE


class TestRedisClusterConformance(BackendConformance):
    """The whole backend contract on a three-primary Redis Cluster."""

    @pytest.fixture
    def backend_url(self, redis_cluster: RedisClusterServers) -> str:
        return redis_cluster.url + "?" + _SUITE


class TestRedisSentinelConformance(BackendConformance):
    """The whole backend contract on a master found through Sentinel."""

    # A whole call, connecting included, is bounded by timeout: through Sentinel each new
    # connection first asks the sentinel, and the 300-call cold burst opens 300 of them
    # (seconds on a busy two-core machine). The suite checks behaviour, not latency.
    call_timeout = 30.0

    @pytest.fixture
    def backend_url(self, redis_sentinel: RedisSentinelServers) -> str:
        return redis_sentinel.url + "?timeout=20"


# -- URLs and options -------------------------------------------------------------------


def test_entry_points_resolve() -> None:
    """Every Redis scheme resolves to its backend class through the registry."""
    assert load_backend_factory("redis://h") is RedisBackend
    assert load_backend_factory("rediss://h") is RedisBackend
    assert load_backend_factory("unix:///s") is RedisBackend
    assert load_backend_factory("redis+cluster://h:1") is RedisClusterBackend
    assert load_backend_factory("redis+sentinel://h/m") is RedisSentinelBackend


def test_url_tcp_db_and_credentials() -> None:
    """Host, port, db path, percent-encoded user and password reach the connection."""
    backend = RedisBackend.from_url("redis://me:p%40ss@cache.example:6390/3?timeout=0.5")
    kw = _client_of(backend).connection_pool.connection_kwargs
    assert (kw["host"], kw["port"], kw["db"]) == ("cache.example", 6390, 3)
    assert (kw["username"], kw["password"]) == ("me", "p@ss")
    assert kw["socket_timeout"] == 0.5 and kw["socket_connect_timeout"] == 0.5
    assert "p@ss" not in repr(backend) and "p%40ss" not in repr(backend)


def test_url_defaults() -> None:
    """Without options: port 6379, db 0, 0.25 s deadlines, at most one retry, on connection errors."""
    kw = _client_of(RedisBackend.from_url("redis://h")).connection_pool.connection_kwargs
    assert (kw["port"], kw["db"], kw["password"]) == (6379, 0, None)
    assert kw["socket_timeout"] == 0.25 and kw["socket_connect_timeout"] == 0.25
    assert kw["retry"].get_retries() == 1


def test_url_rediss_tls_options() -> None:
    """rediss:// uses TLS with the ssl_* options given in the query."""
    backend = RedisBackend.from_url("rediss://:pw@h:6380/1?ssl_cert_reqs=none&ssl_check_hostname=false")
    pool = _client_of(backend).connection_pool
    assert issubclass(pool.connection_class, SSLConnection)
    kw = pool.connection_kwargs
    assert (kw["ssl_cert_reqs"], kw["ssl_check_hostname"], kw["password"], kw["db"]) == (
        "none",
        False,
        "pw",
        1,
    )


def test_ssl_option_without_tls_rejected() -> None:
    """An ssl_* option on plain redis:// is an error naming the option."""
    with pytest.raises(ConfigurationError, match="ssl_ca_certs"):
        RedisBackend.from_url("redis://h/0?ssl_ca_certs=/ca.pem")


def test_url_unix_socket() -> None:
    """unix:// takes the socket path, ?db= and the password."""
    pool = _client_of(RedisBackend.from_url("unix://:pw@/run/redis/r.sock?db=4")).connection_pool
    assert issubclass(pool.connection_class, UnixDomainSocketConnection)
    kw = pool.connection_kwargs
    assert (kw["path"], kw["db"], kw["password"]) == ("/run/redis/r.sock", 4, "pw")


def test_url_db_conflict_rejected() -> None:
    """A db in the path and a different ?db= is an error."""
    with pytest.raises(ConfigurationError, match="database 1"):
        RedisBackend.from_url("redis://h/1?db=2")
    with pytest.raises(ConfigurationError, match="database number"):
        RedisBackend.from_url("redis://h/zero")


def test_url_cluster_nodes() -> None:
    """redis+cluster:// lists every startup node; a missing port means 6379."""
    client = _client_of(RedisClusterBackend.from_url("redis+cluster://a:7000,b,[::1]:7002?timeout=1"))
    assert sorted(client.nodes_manager.startup_nodes) == ["::1:7002", "a:7000", "b:6379"]
    assert client.get_connection_kwargs()["socket_timeout"] == 1


def test_url_cluster_has_no_db() -> None:
    """A cluster URL with a database other than 0, or a db option, is rejected."""
    with pytest.raises(ConfigurationError, match="database 0"):
        RedisClusterBackend.from_url("redis+cluster://a:7000/2")
    with pytest.raises(ConfigurationError, match="db"):
        RedisClusterBackend.from_url("redis+cluster://a:7000?db=1")


def test_url_sentinel_service() -> None:
    """redis+sentinel:// names the sentinels, the service, the master's db and passwords."""
    url = "redis+sentinel://:pw@s1:5000,s2/cache-main?db=2&sentinel_password=sp"
    client = _client_of(RedisSentinelBackend.from_url(url))
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "cache-main"
    assert (pool.connection_kwargs["db"], pool.connection_kwargs["password"]) == (2, "pw")
    sentinels = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
    assert [(s["host"], s["port"], s["password"]) for s in sentinels] == [
        ("s1", 5000, "sp"),
        ("s2", 26379, "sp"),
    ]


def test_url_sentinel_needs_service() -> None:
    """A sentinel URL without a service name is rejected."""
    with pytest.raises(ConfigurationError, match="service"):
        RedisSentinelBackend.from_url("redis+sentinel://s1:26379")


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("redis://h/0?timeout=soon", "timeout"),
        ("redis://h/0?max_connections=0", "max_connections"),
        ("redis://h/0?nope=1", "nope"),
        ("redis+cluster://h:1?health_check_interval=-1", "health_check_interval"),
        ("redis+sentinel://h/m?retries=many", "retries"),
    ],
)
def test_bad_option_names_itself(url: str, name: str) -> None:
    """A bad query option raises ConfigurationError naming it."""
    factory = load_backend_factory(url)
    with pytest.raises(ConfigurationError, match=name):
        factory.from_url(url)


def test_wrong_scheme_rejected() -> None:
    """Each class accepts only its own schemes."""
    with pytest.raises(ConfigurationError, match="redis\\+cluster"):
        RedisBackend.from_url("redis+cluster://a:1")


def test_settings_timeout_is_the_default() -> None:
    """settings.timeout sets the deadlines; the URL's timeout wins over it."""
    settings = CacheSettings(timeout=0.8)
    kw = _client_of(RedisBackend.from_url("redis://h", settings)).connection_pool.connection_kwargs
    assert kw["socket_timeout"] == 0.8 and kw["socket_connect_timeout"] == 0.8
    kw = _client_of(
        RedisBackend.from_url("redis://h?timeout=0.1", settings)
    ).connection_pool.connection_kwargs
    assert kw["socket_timeout"] == 0.1


def test_missing_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without redis-py, importing the backend says which extra to install."""
    monkeypatch.setitem(sys.modules, "redis", None)
    for name in ("cacheframe.backends.redis", "cacheframe.backends._redis_client"):
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(MissingDriverError, match=r"pip install 'cacheframe\[redis\]'"):
        importlib.import_module("cacheframe.backends.redis")


def test_expiry_arguments() -> None:
    """Whole seconds use EX, fractions PX (never 0 ms), None no expiry."""
    assert _expiry(None) == (None, None)
    assert _expiry(30) == (30, None)
    assert _expiry(2.0) == (2, None)
    assert _expiry(1.5) == (None, 1500)
    assert _expiry(0.4) == (None, 400)
    assert _expiry(0.0001) == (None, 1)
    assert _expiry(0) == (None, 1)


# -- client= ----------------------------------------------------------------------------


async def test_client_object_accepted(redis_server: RedisServer) -> None:
    """Cache(backend=RedisBackend(client=...)) works, and close() leaves that client open."""
    mine = _raw(redis_server)
    try:
        backend = RedisBackend(client=mine)
        cache = cacheframe.Cache(backend=backend, prefix=f"t{uuid.uuid4().hex[:8]}")
        assert await cache.set("k", {"v": 1}) is True
        assert await cache.get("k") == {"v": 1}
        await cache.clear()
        await backend.close()
        assert await mine.ping() is True
    finally:
        await mine.aclose()


async def test_client_object_checked(redis_server: RedisServer) -> None:
    """A client decoding responses, or of the wrong kind, is refused."""
    decoding = aioredis.Redis(port=redis_server.port, decode_responses=True)
    with pytest.raises(ConfigurationError, match="decode_responses"):
        RedisBackend(client=decoding)
    with pytest.raises(ConfigurationError, match="RedisCluster"):
        RedisClusterBackend(client=_raw(redis_server))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="either"):
        RedisBackend()


# -- one command per call ---------------------------------------------------------------


async def _commandstats(raw: aioredis.Redis) -> dict[str, int]:
    stats = await raw.info("commandstats")
    return {name: int(v["calls"]) for name, v in stats.items() if name != "cmdstat_info"}


async def _count_commands(raw: aioredis.Redis, action: Callable[[], Awaitable[Any]]) -> dict[str, int]:
    before = await _commandstats(raw)
    await action()
    after = await _commandstats(raw)
    return {name: n - before.get(name, 0) for name, n in after.items() if n != before.get(name, 0)}


async def test_one_command_per_call(redis_server: RedisServer) -> None:
    """A hit is exactly one GET, a set one SET, a delete one UNLINK (INFO commandstats deltas)."""
    backend = RedisBackend.from_url(redis_server.url)
    raw = _raw(redis_server)
    key = _ns() + "k"
    try:
        await backend.set(key, b"warm", 60)  # connects (handshake) before counting
        assert await _count_commands(raw, lambda: backend.get(key)) == {"cmdstat_get": 1}
        assert await _count_commands(raw, lambda: backend.set(key, b"v", 1.5)) == {"cmdstat_set": 1}
        assert await _count_commands(raw, lambda: backend.delete(key)) == {"cmdstat_unlink": 1}
    finally:
        await backend.close()
        await raw.aclose()


async def test_fractional_ttl_uses_px(redis_server: RedisServer) -> None:
    """A fractional ttl is sent as SET ... PX <ms> (seen with MONITOR); whole seconds as EX."""
    backend = RedisBackend.from_url(redis_server.url)
    raw = _raw(redis_server)
    key = _ns() + "frac"
    try:
        await backend.set(key, b"warm", 60)
        async with raw.monitor() as monitor:
            await backend.set(key, b"v", 1.5)
            await backend.set(key, b"v", 7)
            seen = [(await monitor.next_command())["command"] for _ in range(2)]
        assert seen == [f"SET {key} v PX 1500", f"SET {key} v EX 7"]
        assert 1000 < await raw.pttl(key) <= 7000
        await backend.delete(key)
    finally:
        await backend.close()
        await raw.aclose()


# -- event loops ------------------------------------------------------------------------


def test_two_event_loops_in_sequence(redis_server: RedisServer) -> None:
    """One backend used by asyncio.run twice works, and each loop's connections close with it."""
    backend = RedisBackend.from_url(redis_server.url)
    key = _ns() + "k"

    async def clients() -> int:
        raw = _raw(redis_server)
        try:
            return int((await raw.info("clients"))["connected_clients"])
        finally:
            await raw.aclose()

    async def use(value: bytes) -> bytes | None:
        await backend.set(key, value, 60)
        return await backend.get(key)

    baseline = asyncio.run(clients())
    assert asyncio.run(use(b"one")) == b"one"
    assert asyncio.run(clients()) == baseline  # the first loop's pool was closed at its shutdown
    assert asyncio.run(use(b"two")) == b"two"
    asyncio.run(backend.delete(key))


async def test_two_event_loops_at_once(redis_server: RedisServer) -> None:
    """A loop in another thread and the test's own loop use one backend at the same time."""
    backend = RedisBackend.from_url(redis_server.url)
    ns = _ns()
    results: list[bytes | None] = []

    async def other() -> None:
        for i in range(50):
            await backend.set(f"{ns}thread:{i}", b"t", 60)
            results.append(await backend.get(f"{ns}thread:{i}"))

    thread = threading.Thread(target=lambda: asyncio.run(other()))
    thread.start()
    for i in range(50):
        await backend.set(f"{ns}main:{i}", b"m", 60)
        assert await backend.get(f"{ns}main:{i}") == b"m"
        await asyncio.sleep(0)
    await asyncio.to_thread(thread.join, 10)
    assert results == [b"t"] * 50
    await backend.clear(ns)
    await backend.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_gets_its_own_connections(redis_server: RedisServer) -> None:
    """After os.fork the child opens new connections instead of sharing the parent's."""
    assert_fork_child_reads_its_own(RedisBackend.from_url(redis_server.url), _ns() + "k")


# -- failures ---------------------------------------------------------------------------


async def test_paused_server_times_out(fresh_redis_server: RedisServer) -> None:
    """A SIGSTOPped server gives BackendTimeoutError within about the deadline, then recovers."""
    backend = RedisBackend.from_url(fresh_redis_server.url)
    await backend.set("k", b"v", 60)
    fresh_redis_server.process.pause()
    try:
        for candidate in (backend, RedisBackend.from_url(fresh_redis_server.url)):  # pooled and new
            started = time.monotonic()
            with pytest.raises(BackendTimeoutError) as caught:
                await candidate.get("k")
            assert time.monotonic() - started < 2.0
            assert caught.value.__cause__ is not None
    finally:
        fresh_redis_server.process.resume()
    assert await backend.get("k") == b"v"
    await backend.close()


async def test_cancelled_call_keeps_connection_in_step(fresh_redis_server: RedisServer) -> None:
    """A GET cancelled while waiting for its reply does not hand that reply to the next call."""
    backend = RedisBackend.from_url(fresh_redis_server.url + "?timeout=5")
    await backend.set("a", b"A", 60)
    await backend.set("b", b"B", 60)
    fresh_redis_server.process.pause()
    try:
        task = asyncio.ensure_future(backend.get("a"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        fresh_redis_server.process.resume()
    assert [await backend.get("b") for _ in range(3)] == [b"B"] * 3
    await backend.close()


async def test_lane_honours_max_connections(fresh_redis_server: RedisServer) -> None:
    """With max_connections=2 and two calls stuck on a paused server, a third fails at once."""
    backend = RedisBackend.from_url(fresh_redis_server.url + "?max_connections=2&timeout=2")
    await backend.set("k", b"v", 60)
    fresh_redis_server.process.pause()
    try:
        stuck = [asyncio.ensure_future(backend.get("k")) for _ in range(2)]
        await asyncio.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(BackendError, match="max_connections"):
            await backend.get("k")
        assert time.monotonic() - started < 0.5
    finally:
        fresh_redis_server.process.resume()
    assert await asyncio.gather(*stuck) == [b"v", b"v"]  # resumed within their deadline
    assert await backend.get("k") == b"v"
    await backend.close()


async def test_restarted_server_is_reached_on_a_fresh_connection(fresh_redis_server: RedisServer) -> None:
    """After a restart on the same port the idle connection is dead: the call retries once on a
    new one instead of failing (the restarted server keeps nothing, so: a miss)."""
    backend = RedisBackend.from_url(fresh_redis_server.url)
    await backend.set("k", b"v", 60)
    fresh_redis_server.process.kill()
    fresh_redis_server.process.start()
    assert await backend.get("k") is None
    await backend.set("k", b"again", 60)
    assert await backend.get("k") == b"again"
    await backend.close()


async def test_error_reply_keeps_connection_in_step(redis_server: RedisServer) -> None:
    """A WRONGTYPE reply is a BackendError; the next call on that connection reads its own reply."""
    backend = RedisBackend.from_url(redis_server.url)
    raw = _raw(redis_server)
    key = _ns()
    try:
        await raw.hset(key + "hash", "f", "x")
        await backend.set(key + "s", b"S", 60)
        with pytest.raises(BackendError, match="WRONGTYPE"):
            await backend.get(key + "hash")
        assert [await backend.get(key + "s") for _ in range(3)] == [b"S"] * 3
    finally:
        await backend.close()
        await raw.aclose()


def test_health_checks_and_sentinel_take_the_client() -> None:
    """The lean lane is for one fixed server without health checks: with health_check_interval
    (idle PINGs) or behind Sentinel (the master moves), every command takes redis-py's client."""
    assert isinstance(RedisBackend.from_url("redis://127.0.0.1:1/0")._exec, LaneExecutor)
    assert isinstance(
        RedisBackend.from_url("redis://127.0.0.1:1/0?health_check_interval=5")._exec, ClientExecutor
    )
    assert isinstance(
        RedisSentinelBackend.from_url("redis+sentinel://127.0.0.1:1/mymaster")._exec, ClientExecutor
    )
    assert isinstance(RedisBackend(client=aioredis.Redis(host="127.0.0.1", port=1))._exec, ClientExecutor)


async def test_client_object_keeps_its_own_pool(redis_server: RedisServer) -> None:
    """A client passed in is used as configured: its blocking pool of 4 connections serves
    20 concurrent reads by queueing them, none fails for want of a connection."""
    pool = aioredis.BlockingConnectionPool(host="127.0.0.1", port=redis_server.port, max_connections=4)
    client = aioredis.Redis(connection_pool=pool)
    backend = RedisBackend(client=client)
    key = _ns() + "k"
    try:
        await backend.set(key, b"v", 60)
        assert await asyncio.gather(*(backend.get(key) for _ in range(20))) == [b"v"] * 20
    finally:
        await backend.close()
        await client.aclose()


async def test_release_with_write_loads_its_script_when_missing(fresh_redis_server: RedisServer) -> None:
    """After SCRIPT FLUSH (or a restart) the pipelined EVALSHA answers NOSCRIPT: the release falls
    back to EVAL, the lock is freed and the entry written."""
    backend = RedisBackend.from_url(fresh_redis_server.url)
    raw = _raw(fresh_redis_server)
    try:
        await raw.script_flush()
        assert await backend.acquire_lock_and_get("k:lock", "t", 5.0, "k") == (True, None)
        assert await backend.set_and_release_lock("k", b"v", 60, "k:lock", "t") is True
        assert await raw.exists("k:lock") == 0
        assert await backend.get("k") == b"v"
    finally:
        await backend.close()
        await raw.aclose()


async def test_failed_combined_write_still_releases_the_lock(redis_server: RedisServer) -> None:
    """If the pipelined SET + release fails, the lock is released on its own: other processes
    do not wait out the lease."""
    from cacheframe.stampede import StoreLock

    class WriteFails(RedisBackend):
        async def set_and_release_lock(self, *args: Any) -> bool:
            raise BackendError("write failed")

    cache = cacheframe.Cache(backend=WriteFails.from_url(redis_server.url), stampede_lock_min_cost=0)
    raw = _raw(redis_server)
    key = _ns() + "k"
    try:
        lock = StoreLock(cache, key)
        assert await lock.acquire(reread=True) == (True, None)
        assert await raw.exists(key + ":lock") == 1
        entry = cacheframe.envelope.ValueEntry("json", b"1", time.time(), 60)
        await lock.write(entry)
        await lock.release()
        assert await raw.exists(key + ":lock") == 0
    finally:
        await cache.close()
        await raw.aclose()


async def test_refused_connection_is_backend_error() -> None:
    """Nothing listening: BackendError (not a timeout) quickly, the driver error chained."""
    backend = RedisBackend.from_url(f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        await backend.get("k")
    assert time.monotonic() - started < 1.0
    assert not isinstance(caught.value, BackendTimeoutError)
    assert isinstance(caught.value.__cause__, Exception)
    await backend.close()


async def test_unix_socket_server(tmp_path: Any) -> None:
    """unix:// talks to a real server over its socket."""
    sock = tmp_path / "redis.sock"
    process = start_redis("redis-unix", "--unixsocket", str(sock), "--unixsocketperm", "700")
    try:
        backend = RedisBackend.from_url(f"unix://{sock}?db=1")
        await backend.set("k", b"v", 60)
        assert await backend.get("k") == b"v"
        await backend.close()
    finally:
        process.stop()


# -- cluster specifics ------------------------------------------------------------------


def _primaries(cluster: RedisClusterServers) -> list[aioredis.Redis]:
    return [aioredis.Redis(port=node.port) for node in cluster.nodes]


async def test_cluster_clear_leaves_zero_keys(redis_cluster: RedisClusterServers) -> None:
    """After clear, DBSIZE is 0 on every primary, though the keys were spread over all of them."""
    nodes = _primaries(redis_cluster)
    backend = RedisClusterBackend.from_url(redis_cluster.url + "?" + _SUITE)
    ns = _ns()
    try:
        for node in nodes:
            await node.flushall()
        for i in range(300):
            await backend.set(f"{ns}k:{i}", b"v", 60)
            if i % 10 == 0:
                assert await backend.acquire_lock(f"{ns}k:{i}:lock", "t", 60)
        await backend.set(f"{ns}lock", b"v", 60)  # its slot tag is the namespace itself
        sizes = [await node.dbsize() for node in nodes]
        assert sum(sizes) == 331 and all(sizes)
        await backend.clear(ns)
        assert [await node.dbsize() for node in nodes] == [0, 0, 0]
    finally:
        await backend.close()
        for node in nodes:
            await node.aclose()


async def test_cluster_entry_and_lock_share_a_slot(redis_cluster: RedisClusterServers) -> None:
    """An entry and its ``:lock`` key hash to one slot; keys with braces get distinct stored names."""
    backend = RedisClusterBackend.from_url(redis_cluster.url + "?" + _SUITE)
    client = await backend._exec.client()
    for key in ("p:ns:abc", "p:{x}:y", "p:}odd{", "p:ns:lock"):
        assert client.keyslot(backend._key(key)) == client.keyslot(backend._key(key + ":lock"))
    assert backend._key("a{b}") != backend._key("a{c}")
    await backend.close()


async def test_cluster_stats_cover_every_primary(redis_cluster: RedisClusterServers) -> None:
    """Cluster stats add up INFO/DBSIZE over the three primaries."""
    backend = RedisClusterBackend.from_url(redis_cluster.url + "?" + _SUITE)
    stats = await backend.stats()
    assert stats["nodes"] == 3 and stats["backend"] == "redis+cluster"
    assert stats["bytes"] > 0 and stats["entries"] >= 0
    await backend.close()


async def test_cluster_accepts_client_object(redis_cluster: RedisClusterServers) -> None:
    """RedisClusterBackend(client=RedisCluster(...)) works and leaves the client open."""
    mine = RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    backend = RedisClusterBackend(client=mine)
    try:
        await backend.set("cf-client-k", b"v", 60)
        assert await backend.get("cf-client-k") == b"v"
        assert await backend.delete("cf-client-k") is True
        await backend.close()
        assert await mine.ping() is True
    finally:
        await mine.aclose()


async def test_single_node_stats(redis_server: RedisServer) -> None:
    """Single-node stats report entries (DBSIZE), bytes, hits and misses from INFO."""
    backend = RedisBackend.from_url(redis_server.url)
    key = _ns() + "k"
    await backend.set(key, b"v", 60)
    await backend.get(key)
    stats = await backend.stats()
    assert stats["entries"] >= 1 and stats["bytes"] > 0 and stats["hits"] >= 1
    assert {"misses", "evicted", "server_version"} <= set(stats)
    await backend.delete(key)
    await backend.close()


def test_client_object_serves_every_event_loop(redis_server: RedisServer) -> None:
    """A client passed in works across TestClient loops and from a sync function's portal loop."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    cache = cacheframe.Cache(
        backend=RedisBackend(client=aioredis.Redis(port=redis_server.port)), prefix="fixed"
    )
    app = FastAPI()

    @app.get("/x")
    @cache.cache(ttl=60)
    async def x() -> dict[str, int]:
        return {"ok": 1}

    client = TestClient(app)  # no `with`: every request runs on a fresh event loop
    labels = [client.get("/x").headers["x-cache"] for _ in range(3)]
    assert labels == ["MISS", "HIT", "HIT"]

    @cache.cache(ttl=60)
    def square(n: int) -> int:
        return n * n

    assert square(3) == square(3) == 9
    assert cache.stats.backend_errors == 0


@pytest.fixture
def tls_redis(tmp_path: Any) -> Iterator[tuple[int, str]]:
    """A redis-server speaking TLS only, with a throwaway CA; yields (port, CA file)."""
    import subprocess as sp

    from servers import ServerProcess, free_port, require_binary

    ca_key, ca_crt = tmp_path / "ca.key", tmp_path / "ca.crt"
    key, csr, crt = tmp_path / "srv.key", tmp_path / "srv.csr", tmp_path / "srv.crt"
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl = "openssl"
    for argv in (
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            ca_key,
            "-out",
            ca_crt,
            "-days",
            "1",
            "-subj",
            "/CN=cacheframe-test-ca",
        ],
        [
            openssl,
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            csr,
            "-subj",
            "/CN=127.0.0.1",
        ],
        [
            openssl,
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca_crt,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-out",
            crt,
            "-days",
            "1",
            "-extfile",
            ext,
        ],
    ):
        sp.run([str(a) for a in argv], check=True, capture_output=True)
    port = free_port()
    argv = [
        require_binary("redis-server"),
        "--port",
        "0",
        "--tls-port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--tls-cert-file",
        str(crt),
        "--tls-key-file",
        str(key),
        "--tls-ca-cert-file",
        str(ca_crt),
        "--tls-auth-clients",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    process = ServerProcess(argv, port, "redis-tls").start()
    try:
        yield port, str(ca_crt)
    finally:
        process.stop()


async def test_rediss_against_a_tls_server(tls_redis: tuple[int, str]) -> None:
    """rediss:// talks TLS to a real TLS-only server, verifying its certificate against the CA."""
    port, ca = tls_redis
    backend = RedisBackend.from_url(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}&timeout=2")
    try:
        await backend.set("tls:k", b"secret", 30)
        assert await backend.get("tls:k") == b"secret"
    finally:
        await backend.close()
    untrusted = RedisBackend.from_url(f"rediss://127.0.0.1:{port}/0?timeout=2")  # system CAs only
    with pytest.raises(BackendError):
        await untrusted.get("tls:k")
    await untrusted.close()


async def _commands_on(ports: list[int], action: Callable[[], Awaitable[Any]]) -> dict[str, int]:
    """Commands ``action`` caused, summed over the servers on ``ports`` (INFO commandstats)."""
    raws = [aioredis.Redis(host="127.0.0.1", port=port) for port in ports]
    try:
        before = [await _commandstats(r) for r in raws]
        await action()
        after = [await _commandstats(r) for r in raws]
    finally:
        for r in raws:
            await r.aclose()
    total: dict[str, int] = {}
    for b, a in zip(before, after, strict=True):
        for name, n in a.items():
            if n != b.get(name, 0):
                total[name] = total.get(name, 0) + n - b.get(name, 0)
    return total


async def test_cluster_hit_is_one_command(redis_cluster: RedisClusterServers) -> None:
    """On a 3-primary cluster a hit is one GET on one node (no MOVED, no extra round trip)."""
    backend = RedisClusterBackend.from_url(redis_cluster.url + "?" + _SUITE)
    key = _ns() + "k"
    try:
        await backend.set(key, b"v", 60)
        ports = [node.port for node in redis_cluster.nodes]
        assert await _commands_on(ports, lambda: backend.get(key)) == {"cmdstat_get": 1}
    finally:
        await backend.close()


async def test_sentinel_hit_is_one_command(redis_sentinel: RedisSentinelServers) -> None:
    """Behind Sentinel a hit is one GET on the master once the master is known."""
    backend = RedisSentinelBackend.from_url(redis_sentinel.url + "?" + _SUITE)
    key = _ns() + "k"
    try:
        await backend.set(key, b"v", 60)
        ports = [redis_sentinel.master.port, redis_sentinel.sentinel.port]
        assert await _commands_on(ports, lambda: backend.get(key)) == {"cmdstat_get": 1}
    finally:
        await backend.close()


def test_view_hit_is_one_round_trip(redis_server: RedisServer) -> None:
    """Through the decorator, a cached view's hit sends exactly one GET to Redis."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    cache = cacheframe.Cache(url=redis_server.url, prefix=f"rt{uuid.uuid4().hex[:6]}")
    app = FastAPI()

    @app.get("/items")
    @cache.cache(ttl=60)
    async def items(n: int = 3) -> list[int]:
        return list(range(n))

    with TestClient(app) as client:
        assert client.get("/items").headers["x-cache"] == "MISS"

        async def hit() -> None:
            assert (await asyncio.to_thread(client.get, "/items")).headers["x-cache"] == "HIT"

        assert asyncio.run(_commands_on([redis_server.port], hit)) == {"cmdstat_get": 1}


@pytest.mark.parametrize(("min_cost", "locked_after_first"), [(0.005, False), (0.0, True)])
def test_miss_round_trips(redis_server: RedisServer, min_cost: float, locked_after_first: bool) -> None:
    """A miss of a view not yet measured takes the lock with its re-read (one pipelined round trip)
    and releases it with the write (one more); once the view is known to compute in under
    stampede_lock_min_cost, a miss is one GET and one SET."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    cache = cacheframe.Cache(
        url=redis_server.url, prefix=f"mr{uuid.uuid4().hex[:6]}", stampede_lock_min_cost=min_cost
    )
    app = FastAPI()

    @app.get("/items")
    @cache.cache(ttl=60)
    async def items(n: int = 3) -> list[int]:
        return list(range(n))

    locked = {"cmdstat_get": 3, "cmdstat_set": 2, "cmdstat_evalsha": 1, "cmdstat_del": 1}  # the script
    plain = {"cmdstat_get": 1, "cmdstat_set": 1}  # GETs and DELs

    async def load_script() -> None:  # as after the first release since the server started
        raw = _raw(redis_server)
        await raw.script_load(_RELEASE_LOCK)
        await raw.aclose()

    asyncio.run(load_script())
    with TestClient(app) as client:

        def miss(n: int) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                assert (await asyncio.to_thread(client.get, f"/items?n={n}")).headers["x-cache"] == "MISS"

            return run

        assert asyncio.run(_commands_on([redis_server.port], miss(1))) == locked  # cost unknown
        assert asyncio.run(_commands_on([redis_server.port], miss(2))) == (
            locked if locked_after_first else plain
        )


async def test_clear_never_uses_keys(redis_server: RedisServer) -> None:
    """clear() walks the keyspace with SCAN and deletes with UNLINK: no KEYS, no EVAL of names."""
    backend = RedisBackend.from_url(redis_server.url)
    ns = _ns()
    raw = _raw(redis_server)
    try:
        for i in range(50):
            await backend.set(f"{ns}x:{i}", b"v", 60)
        seen = await _count_commands(raw, lambda: backend.clear(ns))
        assert "cmdstat_keys" not in seen and "cmdstat_eval" not in seen and "cmdstat_evalsha" not in seen
        assert seen.get("cmdstat_scan", 0) >= 1 and seen.get("cmdstat_unlink", 0) >= 1
        assert await raw.exists(*[f"{ns}x:{i}" for i in range(50)]) == 0
    finally:
        await backend.close()
        await raw.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:{port}",
        "redis://127.0.0.1:{port}?health_check_interval=5",  # the client path, not the lane
        "redis+cluster://127.0.0.1:{port}",
        "redis+sentinel://127.0.0.1:{port}/mymaster",
    ],
    ids=["single", "single-client", "cluster", "sentinel"],
)
async def test_silent_server_call_within_timeout(url: str) -> None:
    """Against a server that accepts and never answers, one call of each deployment (connecting,
    asking a sentinel, discovering the cluster included) ends within timeout + SILENT_MARGIN."""
    with silent_server() as port:
        full = url.format(port=port)
        backend = registry.load_backend_factory(full).from_url(
            full + ("&" if "?" in full else "?") + "timeout=0.5", None
        )
        await assert_one_call_within_timeout(backend, 0.5)
        await backend.close()
