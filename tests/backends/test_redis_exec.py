"""The executor seam: a Redis backend's commands answer alike over the lane and the client."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cacheframe.backends._redis_exec import ClientExecutor, LaneExecutor
from cacheframe.backends.redis import RedisBackend
from servers.redis import RedisServer

from .redis_support import assert_in_step_after_wrongtype, count_commands, raw_client, unique_ns

# health_check_interval makes a URL-built backend take the client for every command.
EXECUTORS = {"lane": ("", LaneExecutor), "client": ("?health_check_interval=30", ClientExecutor)}


@pytest.fixture(params=sorted(EXECUTORS))
async def backend(request: pytest.FixtureRequest, redis_server: RedisServer) -> AsyncIterator[RedisBackend]:
    """A single-node backend on each executor."""
    query, kind = EXECUTORS[request.param]
    made = RedisBackend.from_url(redis_server.url + query)
    assert isinstance(made._exec, kind)
    yield made
    await made.close()


async def test_every_command_answers_alike(backend: RedisBackend) -> None:
    """The same calls give the same answers whichever executor sends them."""
    key = unique_ns() + "k"
    assert await backend.get(key) is None
    assert await backend.add(key, b"one", 60) is True
    assert await backend.add(key, b"two", 60) is False
    assert 59 < (await backend.ttl(key) or 0) <= 60
    await backend.set(key, b"three", None)
    assert await backend.ttl(key) == math.inf and await backend.get(key) == b"three"
    assert await backend.acquire_lock_and_get(key + ":lock", "t", 5.0, key) == (True, b"three")
    assert await backend.acquire_lock(key + ":lock", "u", 5.0) is False
    assert await backend.release_lock(key + ":lock", "u") is False
    assert await backend.set_and_release_lock(key, b"four", 1.5, key + ":lock", "t") is True
    assert await backend.get(key) == b"four" and 1 < (await backend.ttl(key) or 0) <= 1.5
    assert await backend.delete(key) is True and await backend.delete(key) is False
    assert await backend.ttl(key) is None


async def test_unlock_after_script_flush_resends_the_script(
    backend: RedisBackend, redis_server: RedisServer
) -> None:
    """An EVALSHA answered NOSCRIPT is sent again as EVAL of the script, on either executor."""
    raw = raw_client(redis_server)
    key = unique_ns() + "k:lock"
    try:
        assert await backend.acquire_lock(key, "t", 5.0) is True
        await raw.script_flush()
        seen = await count_commands(raw, lambda: backend.release_lock(key, "t"))
        # GET and DEL are the script's own calls.
        assert seen == {"cmdstat_evalsha": 1, "cmdstat_eval": 1, "cmdstat_get": 1, "cmdstat_del": 1}
        assert await raw.exists(key) == 0
    finally:
        await raw.aclose()


async def test_error_reply_in_a_pipeline_raises_and_keeps_step(
    backend: RedisBackend, redis_server: RedisServer
) -> None:
    """A WRONGTYPE reply among pipelined commands is a BackendError naming the call; the
    connection then reads its own replies."""

    async def lock_and_read(key: str) -> Any:
        return await backend.acquire_lock_and_get(key + ":lock", "t", 5.0, key)

    await assert_in_step_after_wrongtype(backend, redis_server, lock_and_read, "lock.*WRONGTYPE")
