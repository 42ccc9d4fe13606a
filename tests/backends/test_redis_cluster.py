"""A three-primary Redis Cluster: the conformance suite, hash tags, clear and stats on every primary."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from cacheframe.backends.redis import RedisClusterBackend
from cacheframe.exceptions import BackendError
from cacheframe.testing import BackendConformance
from servers.redis import RedisClusterServers

from .redis_support import SUITE, unique_ns


class TestRedisClusterConformance(BackendConformance):
    """The whole backend contract on a three-primary Redis Cluster."""

    @pytest.fixture
    def backend_url(self, redis_cluster: RedisClusterServers) -> str:
        return redis_cluster.url + "?" + SUITE


def _primaries(cluster: RedisClusterServers) -> list[aioredis.Redis]:
    return [aioredis.Redis(port=node.port) for node in cluster.nodes]


async def test_cluster_clear_leaves_zero_keys(redis_cluster: RedisClusterServers) -> None:
    """After clear, DBSIZE is 0 on every primary, though the keys were spread over all of them."""
    nodes = _primaries(redis_cluster)
    backend = RedisClusterBackend.from_url(redis_cluster.url + "?" + SUITE)
    ns = unique_ns()
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
    backend = RedisClusterBackend.from_url(redis_cluster.url + "?" + SUITE)
    client = await backend._exec.client()
    for key in ("p:ns:abc", "p:{x}:y", "p:}odd{", "p:ns:lock"):
        assert client.keyslot(backend._key(key)) == client.keyslot(backend._key(key + ":lock"))
    assert backend._key("a{b}") != backend._key("a{c}")
    await backend.close()


async def test_cluster_stats_cover_every_primary(redis_cluster: RedisClusterServers) -> None:
    """Cluster stats add up INFO/DBSIZE over the three primaries."""
    backend = RedisClusterBackend.from_url(redis_cluster.url + "?" + SUITE)
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


def test_cluster_client_object_serves_only_its_first_loop(redis_cluster: RedisClusterServers) -> None:
    """A cluster client passed in serves the first event loop that uses it; another loop gets a
    BackendError saying to pass url= instead (a cluster client cannot be cloned)."""
    mine = RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    backend = RedisClusterBackend(client=mine)
    assert asyncio.run(backend.set("cf-first-loop", b"v", 60)) is None
    with pytest.raises(BackendError, match="url="):
        asyncio.run(backend.get("cf-first-loop"))
