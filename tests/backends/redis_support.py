"""Helpers shared by the Redis test modules: namespaces, raw clients, command counts."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from cacheframe.exceptions import BackendError
from servers.redis import RedisServer

# The suite checks behaviour, not latency: its 300-call cold burst takes ~0.1-0.2 s of
# event-loop time (new connections included), too near the 0.25 s default deadline on a
# busy CI machine. Deadlines are tested on their own (test_redis_failures.py).
SUITE = "timeout=5"  # generous: the shared servers may be loaded (no test times this)


def unique_ns() -> str:
    """A namespace no other test uses."""
    return f"t-redis-{uuid.uuid4().hex[:10]}:"


def client_of(backend: Any) -> Any:
    """A fresh driver client built the way the backend builds them (never connected)."""
    client, _close = backend._exec.clients.factory()
    return client


def raw_client(server: RedisServer) -> aioredis.Redis:
    """A plain redis-py client of ``server``, for checking what the backend did."""
    return aioredis.Redis(host="127.0.0.1", port=server.port)


async def commandstats(raw: aioredis.Redis) -> dict[str, int]:
    """Calls per command so far (``INFO commandstats``, without INFO itself)."""
    stats = await raw.info("commandstats")
    return {name: int(v["calls"]) for name, v in stats.items() if name != "cmdstat_info"}


async def count_commands(raw: aioredis.Redis, action: Callable[[], Awaitable[Any]]) -> dict[str, int]:
    """Commands ``action`` caused on ``raw``'s server."""
    before = await commandstats(raw)
    await action()
    after = await commandstats(raw)
    return {name: n - before.get(name, 0) for name, n in after.items() if n != before.get(name, 0)}


async def commands_on(ports: list[int], action: Callable[[], Awaitable[Any]]) -> dict[str, int]:
    """Commands ``action`` caused, summed over the servers on ``ports`` (INFO commandstats)."""
    raws = [aioredis.Redis(host="127.0.0.1", port=port) for port in ports]
    try:
        before = [await commandstats(r) for r in raws]
        await action()
        after = [await commandstats(r) for r in raws]
    finally:
        for r in raws:
            await r.aclose()
    total: dict[str, int] = {}
    for b, a in zip(before, after, strict=True):
        for name, n in a.items():
            if n != b.get(name, 0):
                total[name] = total.get(name, 0) + n - b.get(name, 0)
    return total


async def assert_in_step_after_wrongtype(
    backend: Any, server: RedisServer, failing: Callable[[str], Awaitable[Any]], match: str
) -> None:
    """``failing(hash_key)`` meets a WRONGTYPE reply: a BackendError matching ``match``; the
    backend's next calls then read their own replies (the connection is still in step)."""
    raw = raw_client(server)
    ns = unique_ns()
    try:
        await raw.hset(ns + "hash", "f", "x")
        await backend.set(ns + "s", b"S", 60)
        with pytest.raises(BackendError, match=match):
            await failing(ns + "hash")
        assert [await backend.get(ns + "s") for _ in range(3)] == [b"S"] * 3
    finally:
        await raw.aclose()
