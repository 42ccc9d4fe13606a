"""Redis stores that fail: paused, restarted, refusing, silent, error replies; deadlines, lock release."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import cacheframe
from cacheframe import registry
from cacheframe.backends.redis import RedisBackend
from cacheframe.exceptions import BackendError, BackendTimeoutError
from servers import assert_one_call_within_timeout, free_port, silent_server
from servers.redis import RedisServer

from .redis_support import assert_in_step_after_wrongtype, raw_client, unique_ns


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
    try:
        await assert_in_step_after_wrongtype(backend, redis_server, backend.get, "WRONGTYPE")
    finally:
        await backend.close()


async def test_failed_combined_write_still_releases_the_lock(redis_server: RedisServer) -> None:
    """If the pipelined SET + release fails, the lock is released on its own: other processes
    do not wait out the lease."""
    from cacheframe._engine import StoreLock

    class WriteFails(RedisBackend):
        async def set_and_release_lock(self, *args: Any) -> bool:
            raise BackendError("write failed")

    cache = cacheframe.Cache(backend=WriteFails.from_url(redis_server.url), stampede_lock_min_cost=0)
    raw = raw_client(redis_server)
    key = unique_ns() + "k"
    try:
        lock = StoreLock(cache._gateway, key)
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


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_connection_reset_while_idle_is_reconnected(redis_server: RedisServer, loop: str) -> None:
    """An idle lane connection whose transport closed under it (a reset while idle) is
    reconnected by the next call, whatever the call (uvloop refuses to write to it)."""
    run = pytest.importorskip("uvloop").run if loop == "uvloop" else asyncio.run
    ns = unique_ns()

    async def main() -> None:
        backend = RedisBackend.from_url(redis_server.url + "?timeout=5")
        try:
            await backend.set(ns + "k", b"v", 60)
            calls = {
                "get": lambda: backend.get(ns + "k"),
                "read_stamped": lambda: backend.read_stamped(ns + "k", [ns + "s"]),
                "lock": lambda: backend.acquire_lock_and_get(ns + "k:lock", "t", 5.0, ns + "k"),
                "ttl": lambda: backend.ttl(ns + "k"),
            }
            answers = {}
            for name, call in calls.items():
                lane = backend._exec.lanes.current()
                assert lane is not None and lane._idle
                for conn in lane._idle:
                    conn._writer.transport.abort()
                await asyncio.sleep(0.01)  # the loop sees the connection lost
                answers[name] = await call()
            assert answers["get"] == b"v" and answers["read_stamped"] == [b"v", None]
            assert answers["lock"] == (True, b"v") and 59 < (answers["ttl"] or 0) <= 60
        finally:
            await backend.close()

    run(main())
