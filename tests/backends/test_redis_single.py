"""One redis-server: the conformance suite, clients passed in, event loops and processes, stats."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

import cacheframe
from cacheframe.backends.redis import RedisBackend, RedisClusterBackend
from cacheframe.exceptions import ConfigurationError
from cacheframe.testing import BackendConformance
from helpers import assert_fork_child_reads_its_own
from servers.redis import RedisServer, start_redis

from .redis_support import SUITE, raw_client, unique_ns


class TestRedisConformance(BackendConformance):
    """The whole backend contract on one redis-server."""

    @pytest.fixture
    def backend_url(self, redis_server: RedisServer) -> str:
        return redis_server.url + "?" + SUITE


async def test_client_object_accepted(redis_server: RedisServer) -> None:
    """Cache(backend=RedisBackend(client=...)) works, and close() leaves that client open."""
    mine = raw_client(redis_server)
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
        RedisClusterBackend(client=raw_client(redis_server))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="either"):
        RedisBackend()


async def test_client_object_keeps_its_own_pool(redis_server: RedisServer) -> None:
    """A client passed in is used as configured: its blocking pool of 4 connections serves
    20 concurrent reads by queueing them, none fails for want of a connection."""
    pool = aioredis.BlockingConnectionPool(host="127.0.0.1", port=redis_server.port, max_connections=4)
    client = aioredis.Redis(connection_pool=pool)
    backend = RedisBackend(client=client)
    key = unique_ns() + "k"
    try:
        await backend.set(key, b"v", 60)
        assert await asyncio.gather(*(backend.get(key) for _ in range(20))) == [b"v"] * 20
    finally:
        await backend.close()
        await client.aclose()


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


def test_two_event_loops_in_sequence(redis_server: RedisServer) -> None:
    """One backend used by asyncio.run twice works, and each loop's connections close with it."""
    backend = RedisBackend.from_url(redis_server.url)
    key = unique_ns() + "k"

    async def clients() -> int:
        raw = raw_client(redis_server)
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
    ns = unique_ns()
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
    assert_fork_child_reads_its_own(RedisBackend.from_url(redis_server.url), unique_ns() + "k")


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


async def test_single_node_stats(redis_server: RedisServer) -> None:
    """Single-node stats report entries (DBSIZE), bytes, hits and misses from INFO."""
    backend = RedisBackend.from_url(redis_server.url)
    key = unique_ns() + "k"
    await backend.set(key, b"v", 60)
    await backend.get(key)
    stats = await backend.stats()
    assert stats["entries"] >= 1 and stats["bytes"] > 0 and stats["hits"] >= 1
    assert {"misses", "evicted", "server_version"} <= set(stats)
    await backend.delete(key)
    await backend.close()
