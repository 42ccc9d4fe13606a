"""Store commands per call (INFO commandstats, MONITOR): a hit is one GET on every deployment,
a stamped hit one MGET (on a cluster: on one node, the entry and its stamps sharing a bucket)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.crc import key_slot

import cacheframe
from cacheframe.backends.redis import (
    _RELEASE_LOCK,
    _REPLACE_STAMPS,
    RedisBackend,
    RedisClusterBackend,
    RedisSentinelBackend,
)
from servers.redis import RedisClusterServers, RedisSentinelServers, RedisServer

from .redis_support import SUITE, commands_on, commandstats, count_commands, raw_client, unique_ns


async def test_one_command_per_call(redis_server: RedisServer) -> None:
    """A hit is exactly one GET, a set one SET, a delete one UNLINK (INFO commandstats deltas)."""
    backend = RedisBackend.from_url(redis_server.url)
    raw = raw_client(redis_server)
    key = unique_ns() + "k"
    try:
        await backend.set(key, b"warm", 60)  # connects (handshake) before counting
        assert await count_commands(raw, lambda: backend.get(key)) == {"cmdstat_get": 1}
        assert await count_commands(raw, lambda: backend.set(key, b"v", 1.5)) == {"cmdstat_set": 1}
        assert await count_commands(raw, lambda: backend.delete(key)) == {"cmdstat_unlink": 1}
    finally:
        await backend.close()
        await raw.aclose()


def _stamps(ns: str, n: int) -> list[str]:
    return [f"{ns}!s:{kind}:{i:064x}" for i, kind in zip(range(n), "gnrt", strict=False)]


async def test_stamped_read_is_one_mget(redis_server: RedisServer) -> None:
    """A stamped read (the entry and three stamps) is exactly one MGET; writing two stamps is
    two SETs with their expiry, pipelined (MONITOR sees them in order)."""
    backend = RedisBackend.from_url(redis_server.url)
    raw = raw_client(redis_server)
    ns = unique_ns()
    stamps = _stamps(ns, 3)
    try:
        await backend.set(ns + "k", b"warm", 60)
        assert await count_commands(
            raw, lambda: backend.write_stamps(dict.fromkeys(stamps[:2], b"t"), 1.5)
        ) == {"cmdstat_set": 2}
        assert await count_commands(raw, lambda: backend.read_stamped(ns + "k", stamps)) == {
            "cmdstat_mget": 1
        }
        async with raw.monitor() as monitor:
            await backend.write_stamps({stamps[2]: b"u", stamps[0]: b"v"}, 7)
            seen = [(await monitor.next_command())["command"] for _ in range(2)]
        assert seen == [f"SET {stamps[2]} u EX 7", f"SET {stamps[0]} v EX 7"]
        assert await backend.read_stamped(ns + "k", stamps) == [b"warm", b"v", b"t", b"u"]
    finally:
        await backend.close()
        await raw.aclose()


def test_every_deployment_declares_stamps() -> None:
    """Single, Sentinel and Cluster offer stamps (their conformance checks run, not skip)."""
    from cacheframe.types import SupportsStamps

    for backend in (
        RedisBackend.from_url("redis://127.0.0.1:1"),
        RedisSentinelBackend.from_url("redis+sentinel://127.0.0.1:1/mymaster"),
        RedisClusterBackend.from_url("redis+cluster://127.0.0.1:1"),
    ):
        assert isinstance(backend, SupportsStamps), backend


async def test_fractional_ttl_uses_px(redis_server: RedisServer) -> None:
    """A fractional ttl is sent as SET ... PX <ms> (seen with MONITOR); whole seconds as EX."""
    backend = RedisBackend.from_url(redis_server.url)
    raw = raw_client(redis_server)
    key = unique_ns() + "frac"
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


async def test_clear_never_uses_keys(redis_server: RedisServer) -> None:
    """clear() walks the keyspace with SCAN and deletes with UNLINK: no KEYS, no EVAL of names."""
    backend = RedisBackend.from_url(redis_server.url)
    ns = unique_ns()
    raw = raw_client(redis_server)
    try:
        for i in range(50):
            await backend.set(f"{ns}x:{i}", b"v", 60)
        seen = await count_commands(raw, lambda: backend.clear(ns))
        assert "cmdstat_keys" not in seen and "cmdstat_eval" not in seen and "cmdstat_evalsha" not in seen
        assert seen.get("cmdstat_scan", 0) >= 1 and seen.get("cmdstat_unlink", 0) >= 1
        assert await raw.exists(*[f"{ns}x:{i}" for i in range(50)]) == 0
    finally:
        await backend.close()
        await raw.aclose()


async def test_release_with_write_loads_its_script_when_missing(fresh_redis_server: RedisServer) -> None:
    """After SCRIPT FLUSH (or a restart) the pipelined EVALSHA answers NOSCRIPT: the release falls
    back to EVAL, the lock is freed and the entry written."""
    backend = RedisBackend.from_url(fresh_redis_server.url)
    raw = raw_client(fresh_redis_server)
    try:
        await raw.script_flush()
        assert await backend.acquire_lock_and_get("k:lock", "t", 5.0, "k") == (True, None)
        assert await backend.set_and_release_lock("k", b"v", 60, "k:lock", "t") is True
        assert await raw.exists("k:lock") == 0
        assert await backend.get("k") == b"v"
    finally:
        await backend.close()
        await raw.aclose()


async def test_cluster_hit_is_one_command(redis_cluster: RedisClusterServers) -> None:
    """On a 3-primary cluster a hit is one GET on one node (no MOVED, no extra round trip)."""
    backend = RedisClusterBackend.from_url(redis_cluster.url + "?" + SUITE)
    key = unique_ns() + "k"
    try:
        await backend.set(key, b"v", 60)
        ports = [node.port for node in redis_cluster.nodes]
        assert _ours(await commands_on(ports, lambda: backend.get(key))) == {"cmdstat_get": 1}
    finally:
        await backend.close()


async def test_cluster_stamped_read_is_one_mget_per_slot(redis_cluster: RedisClusterServers) -> None:
    """On a cluster a stamped read sends one MGET per slot its keys live in, all at once (the
    keys are hash-tagged by their own CRC-32, so here one per key); stamps are one SET each."""
    backend = RedisClusterBackend.from_url(redis_cluster.url + "?" + SUITE)
    ns = unique_ns()
    stamps = _stamps(ns, 3)
    ports = [node.port for node in redis_cluster.nodes]
    slots = {key_slot(backend._key(k).encode()) for k in (ns + "k", *stamps)}
    try:
        await backend.set(ns + "k", b"v", 60)
        write = backend.write_stamps(dict.fromkeys(stamps, b"t"), 60)
        assert await commands_on(ports, lambda: write) == {"cmdstat_set": 3}
        read = backend.read_stamped(ns + "k", stamps)
        assert await commands_on(ports, lambda: read) == {"cmdstat_mget": len(slots)}
        assert await backend.read_stamped(ns + "k", stamps) == [b"v", b"t", b"t", b"t"]
        assert await commands_on(ports, lambda: backend.read_stamped(ns + "k", [])) == {"cmdstat_mget": 1}
    finally:
        await backend.close()


async def test_cluster_stamps_in_a_bucket_are_one_mget_on_one_node(
    redis_cluster: RedisClusterServers,
) -> None:
    """Keys that start with one of the cluster's bucket tags keep it (an entry and its lock
    share its slot); a stamped read of keys in one bucket is one MGET on one node; replacing
    copies is one EVALSHA per bucket and creates none (SET XX)."""
    backend = RedisClusterBackend.from_url(redis_cluster.url + "?" + SUITE)
    ns = unique_ns()
    first, second = backend.stamp_buckets[3], backend.stamp_buckets[20]
    entry, stamps = first + ns + "k", [first + name for name in _stamps(ns, 3)]
    assert backend._key(entry) == entry and backend._key(entry + ":lock") == entry + ":lock"
    assert backend._key(ns + "k").startswith("{") and not backend._key(ns + "k").startswith(first)
    ports = [node.port for node in redis_cluster.nodes]
    try:
        await backend.set(entry, b"v", 60)
        await backend.write_stamps(dict.fromkeys(stamps, b"t"), 60)
        read = backend.read_stamped(entry, stamps)
        assert await _per_node(ports, lambda: read) == [{"cmdstat_mget": 1}]
        assert await backend.read_stamped(entry, stamps) == [b"v", b"t", b"t", b"t"]
        other = [second + name for name in _stamps(ns, 3)]  # never created in that bucket
        await backend.replace_stamps(dict.fromkeys([*stamps[:2], *other], b"w"), 60)  # loads the script
        replace = backend.replace_stamps(dict.fromkeys([*stamps[:2], *other], b"u"), 60)
        # The script's SET XX each count as a call, the three that find no copy too.
        assert await commands_on(ports, lambda: replace) == {"cmdstat_evalsha": 2, "cmdstat_set": 5}
        assert await backend.read_stamped(entry, stamps) == [b"v", b"u", b"u", b"t"]
        assert await backend.read_stamped(second + ns + "k", other) == [None, None, None, None]
        assert 50_000 < await _pttl(redis_cluster, stamps[0]) <= 60_000
    finally:
        await backend.close()


async def test_cluster_replace_loads_its_script_when_missing(redis_cluster: RedisClusterServers) -> None:
    """After SCRIPT FLUSH on every node the replacement falls back to EVAL."""
    backend = RedisClusterBackend.from_url(redis_cluster.url + "?" + SUITE)
    stamp = backend.stamp_buckets[0] + unique_ns() + "s"
    try:
        await backend.write_stamps({stamp: b"t"}, None)
        for node in redis_cluster.nodes:
            raw = aioredis.Redis(host="127.0.0.1", port=node.port)
            await raw.script_flush()
            await raw.aclose()
        await backend.replace_stamps({stamp: b"u"}, None)
        assert await backend.read_stamped(backend.stamp_buckets[0] + "x", [stamp]) == [None, b"u"]
        assert await _pttl(redis_cluster, stamp) == -1
        assert _REPLACE_STAMPS.count("XX") == 2
    finally:
        await backend.close()


def test_cluster_buckets_spread_over_the_primaries(redis_cluster: RedisClusterServers) -> None:
    """The 32 bucket tags are 8 characters inside braces (``clear``'s ``{????????}`` matches
    them), distinct, and their slots spread 11, 11 and 10 over the three primaries."""
    tags = RedisClusterBackend.stamp_buckets
    assert len(tags) == len(set(tags)) == 32
    assert all(len(tag) == 10 and tag[0] == "{" and tag[-1] == "}" for tag in tags)
    slots = [key_slot(tag.encode()) for tag in tags]
    assert slots == sorted(slots)  # one per 32nd of the slot range, in order
    raw = redis.Redis(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    try:
        ranges = [
            (int(low), int(high), owner[1]) for low, high, owner, *_ in raw.execute_command("CLUSTER SLOTS")
        ]
    finally:
        raw.close()
    owners: dict[int, int] = {}
    for slot in slots:
        port = next(port for low, high, port in ranges if low <= slot <= high)
        owners[port] = owners.get(port, 0) + 1
    assert sorted(owners.values()) == [10, 11, 11]


async def _pttl(cluster: RedisClusterServers, key: str) -> int:
    """PTTL of ``key``, asked of the node owning its slot."""
    raw = aioredis.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    try:
        return int(await raw.pttl(key))
    finally:
        await raw.aclose()


async def _per_node(ports: list[int], action: Callable[[], Awaitable[Any]]) -> list[dict[str, int]]:
    """The commands ``action`` caused on each node that saw any."""
    raws = [aioredis.Redis(host="127.0.0.1", port=port) for port in ports]
    try:
        before = [await commandstats(r) for r in raws]
        await action()
        after = [await commandstats(r) for r in raws]
    finally:
        for r in raws:
            await r.aclose()
    seen = []
    for b, a in zip(before, after, strict=True):
        delta = {name: n - b.get(name, 0) for name, n in a.items() if n != b.get(name, 0)}
        if delta:
            seen.append(delta)
    return seen


@pytest.mark.parametrize("fast_path", [False, True])
def test_cluster_hit_is_one_mget_on_one_node(redis_cluster: RedisClusterServers, fast_path: bool) -> None:
    """Through the decorator (and the fast path), on a 3-primary cluster, a hit of a view with a
    path parameter and argument tags, and a hit of a plain cached function, are each exactly
    one command: one MGET, on one node (issue #13, guarantee 4)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from cacheframe import fastpath

    cache = cacheframe.Cache(url=redis_cluster.url + "?" + SUITE, prefix=f"rc{uuid.uuid4().hex[:6]}")
    app = FastAPI()
    if fast_path:
        fastpath.install(app)

    @app.get("/items/{item_id}")
    @cache.cache(ttl=60, tags=["item:{item_id}", "items"])
    async def read_item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @cache.cache(ttl=60, tags=["rate:{currency}"])
    async def rate(currency: str) -> float:
        return 1.5

    ports = [node.port for node in redis_cluster.nodes]
    with TestClient(app) as client:
        for item in range(8):  # entries in several buckets
            assert client.get(f"/items/{item}").headers["x-cache"] == "MISS"
            assert client.get(f"/items/{item}").headers["x-cache"] == "HIT"

            async def hit(item: int = item) -> None:
                assert (await asyncio.to_thread(client.get, f"/items/{item}")).headers["x-cache"] == "HIT"

            assert asyncio.run(_per_node(ports, hit)) == [{"cmdstat_mget": 1}]

    async def calls() -> None:
        for currency in ("EUR", "USD", "GBP", "JPY"):
            await rate(currency)  # a miss
            hits = cache.stats.hits
            assert await _per_node(ports, lambda c=currency: rate(c)) == [{"cmdstat_mget": 1}]
            assert cache.stats.hits == hits + 1
        await cache.close()

    asyncio.run(calls())


def test_cluster_invalidation_creates_no_stamp_copies(redis_cluster: RedisClusterServers) -> None:
    """Invalidating by tag, by resource and by namespace on a cluster replaces the copies of the
    stamps that exist (the entries' buckets) and creates none in the other 31 buckets; the
    entries are misses afterwards."""
    prefix = f"ri{uuid.uuid4().hex[:6]}"
    cache = cacheframe.Cache(url=redis_cluster.url + "?" + SUITE, prefix=prefix)
    runs: list[str] = []

    @cache.cache(ttl=60, namespace="rates", tags=["rate:{currency}"])
    async def rate(currency: str) -> str:
        runs.append(currency)
        return currency.lower()

    async def stamp_keys() -> list[bytes]:
        raw = aioredis.RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
        try:
            return sorted([key async for key in raw.scan_iter(match=f"*{prefix}:!s:*")])
        finally:
            await raw.aclose()

    async def run() -> None:
        for currency in ("EUR", "USD"):
            await rate(currency)
            await rate(currency)
        assert runs == ["EUR", "USD"]
        made = await stamp_keys()
        buckets = {key[:10] for key in made}
        assert 1 <= len(buckets) <= 2 and all(key.startswith(b"{s") for key in made)
        await cache.invalidate_tags("rate:EUR")
        await rate.invalidate("USD")
        assert await stamp_keys() == made
        assert [await rate("EUR"), await rate("USD")] == ["eur", "usd"]
        assert runs == ["EUR", "USD", "EUR", "USD"]
        await cache.clear("rates")
        assert await stamp_keys() == made
        await rate("EUR")
        assert runs[-1] == "EUR" and len(runs) == 5
        await cache.close()

    asyncio.run(run())


# What Sentinel itself sends the master and its peers every second or so (hello messages,
# pings, INFO): never a command of ours, but it may land inside a measured window.
_SENTINEL_OWN = frozenset({"cmdstat_ping", "cmdstat_publish", "cmdstat_info", "cmdstat_subscribe"})


def _ours(counts: dict[str, int]) -> dict[str, int]:
    """The commands a measured call sent, without Sentinel's own periodic traffic."""
    return {name: n for name, n in counts.items() if name not in _SENTINEL_OWN}


async def test_sentinel_stamped_read_is_one_mget(redis_sentinel: RedisSentinelServers) -> None:
    """Behind Sentinel a stamped read is one MGET on the master."""
    backend = RedisSentinelBackend.from_url(redis_sentinel.url + "?" + SUITE)
    ns = unique_ns()
    stamps = _stamps(ns, 3)
    try:
        await backend.set(ns + "k", b"v", 60)
        await backend.write_stamps(dict.fromkeys(stamps, b"t"), 60)
        ports = [redis_sentinel.master.port, redis_sentinel.sentinel.port]
        read = backend.read_stamped(ns + "k", stamps)
        assert _ours(await commands_on(ports, lambda: read)) == {"cmdstat_mget": 1}
    finally:
        await backend.close()


async def test_sentinel_hit_is_one_command(redis_sentinel: RedisSentinelServers) -> None:
    """Behind Sentinel a hit is one GET on the master once the master is known."""
    backend = RedisSentinelBackend.from_url(redis_sentinel.url + "?" + SUITE)
    key = unique_ns() + "k"
    try:
        await backend.set(key, b"v", 60)
        ports = [redis_sentinel.master.port, redis_sentinel.sentinel.port]
        assert _ours(await commands_on(ports, lambda: backend.get(key))) == {"cmdstat_get": 1}
    finally:
        await backend.close()


def test_view_hit_is_one_round_trip(redis_server: RedisServer) -> None:
    """Through the decorator, a cached view's hit sends exactly one command to Redis: an MGET of
    its entry and the stamps it was sealed with."""
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

        assert asyncio.run(commands_on([redis_server.port], hit)) == {"cmdstat_mget": 1}


@pytest.mark.parametrize(("min_cost", "locked_after_first"), [(0.005, False), (0.0, True)])
def test_miss_round_trips(redis_server: RedisServer, min_cost: float, locked_after_first: bool) -> None:
    """A miss of a view not yet measured takes the lock with its re-read (one pipelined round trip)
    and releases it with the write (one more); once the view is known to compute in under
    stampede_lock_min_cost, a miss is one MGET (entry and stamps) and one SET. The very first
    miss also creates the stamps its entries depend on (SET NX + GET each, one pipelined round
    trip); later misses find them."""
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

    # The lookup's MGET; the lock's SET NX + re-read GET; the write's SET + EVALSHA (whose script
    # runs a GET and a DEL).
    locked = {"cmdstat_mget": 1, "cmdstat_get": 2, "cmdstat_set": 2, "cmdstat_evalsha": 1, "cmdstat_del": 1}
    plain = {"cmdstat_mget": 1, "cmdstat_set": 1}
    cold = {**locked, "cmdstat_get": 4, "cmdstat_set": 4}  # + SET NX and GET of the two stamps

    async def load_script() -> None:  # as after the first release since the server started
        raw = raw_client(redis_server)
        await raw.script_load(_RELEASE_LOCK)
        await raw.aclose()

    asyncio.run(load_script())
    with TestClient(app) as client:

        def miss(n: int) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                assert (await asyncio.to_thread(client.get, f"/items?n={n}")).headers["x-cache"] == "MISS"

            return run

        assert asyncio.run(commands_on([redis_server.port], miss(1))) == cold  # cost unknown
        assert asyncio.run(commands_on([redis_server.port], miss(2))) == (
            locked if locked_after_first else plain
        )
