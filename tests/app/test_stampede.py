"""Stampede protection: concurrent misses on one key compute once, per backend."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import cacheframe
from helpers import generous_deadline

pytestmark = [pytest.mark.usefixtures("app_cache"), pytest.mark.timeout(120)]


def slow_app(counter: collections.Counter[str], delay: float = 0.2) -> FastAPI:
    app = FastAPI()

    @app.get("/cold")
    @cacheframe.cache(ttl=60)
    async def cold(k: int = 0) -> dict[str, int]:
        counter["cold"] += 1
        await asyncio.sleep(delay)
        return {"k": k}

    @app.get("/cookie")
    @cacheframe.cache(ttl=60)
    async def cookie(response: cacheframe_response_type()) -> dict[str, int]:  # type: ignore[valid-type]
        counter["cookie"] += 1
        await asyncio.sleep(delay)
        response.set_cookie("s", "1")
        return {"ok": 1}

    return app


def cacheframe_response_type() -> type:
    from fastapi import Response

    return Response


async def test_thousand_concurrent_requests_run_view_once() -> None:
    """1,000 concurrent requests on a cold key run the view once; all get the same body."""
    counter: collections.Counter[str] = collections.Counter()
    transport = httpx.ASGITransport(app=slow_app(counter))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        responses = await asyncio.gather(*(client.get("/cold?k=7") for _ in range(1000)))
    assert counter["cold"] == 1
    assert {r.status_code for r in responses} == {200}
    assert {r.content for r in responses} == {b'{"k":7}'}
    # Under this burst the one shared store read may miss its deadline (the loop is busy with
    # 1,000 requests); then every reply is BYPASS, but the view still runs once.
    labels = collections.Counter(r.headers["x-cache"] for r in responses)
    assert labels["MISS"] == 1 or labels["BYPASS"] == 1000, labels


async def test_hundred_concurrent_requests_one_miss_rest_hits(app_cache: cacheframe.Cache) -> None:
    """100 concurrent requests: exactly one MISS, 99 HITs sharing its response, then HITs."""
    generous_deadline(app_cache)
    counter: collections.Counter[str] = collections.Counter()
    transport = httpx.ASGITransport(app=slow_app(counter))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        responses = await asyncio.gather(*(client.get("/cold?k=8") for _ in range(100)))
        after = await client.get("/cold?k=8")
    labels = collections.Counter(r.headers["x-cache"] for r in responses)
    assert counter["cold"] == 1 and labels == {"MISS": 1, "HIT": 99}
    assert after.headers["x-cache"] == "HIT"


async def test_unstorable_response_is_not_shared() -> None:
    """Concurrent misses whose response cannot be stored (Set-Cookie) each run the view."""
    counter: collections.Counter[str] = collections.Counter()
    transport = httpx.ASGITransport(app=slow_app(counter, delay=0.05))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        responses = await asyncio.gather(*(client.get("/cookie") for _ in range(5)))
    assert counter["cookie"] == 5
    assert all("set-cookie" in r.headers for r in responses)


async def test_concurrent_function_calls_compute_once(app_cache: cacheframe.Cache) -> None:
    """Concurrent calls of a cached async function with one key compute once."""
    generous_deadline(app_cache)
    runs: list[int] = []

    @cacheframe.cache(ttl=60)
    async def slow_square(x: int) -> int:
        runs.append(x)
        await asyncio.sleep(0.1)
        return x * x

    assert await asyncio.gather(*(slow_square(4) for _ in range(200))) == [16] * 200
    assert runs == [4]


async def test_leader_failure_lets_followers_compute() -> None:
    """When the first computation raises, the waiting callers run it themselves."""
    attempts: list[int] = []

    @cacheframe.cache(ttl=60)
    async def flaky(x: int) -> int:
        attempts.append(x)
        await asyncio.sleep(0.05)
        if len(attempts) == 1:
            raise RuntimeError("first one fails")
        return x

    results = await asyncio.gather(*(flaky(1) for _ in range(3)), return_exceptions=True)
    assert isinstance(results[0], RuntimeError)
    assert results[1:] == [1, 1]


async def test_followers_stop_waiting_after_stampede_wait() -> None:
    """Past stampede_wait, waiting requests run the view themselves (the wait is bounded)."""
    cacheframe.configure(url="memory://", stampede_wait=0.05)
    counter: collections.Counter[str] = collections.Counter()
    transport = httpx.ASGITransport(app=slow_app(counter, delay=0.5))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        responses = await asyncio.gather(*(client.get("/cold?k=9") for _ in range(3)))
    assert {r.status_code for r in responses} == {200}
    assert counter["cold"] == 3


def test_store_lock_only_for_views_not_known_to_be_cheap() -> None:
    """The store lock is taken for a view not measured yet, for one whose slowest computation
    here (or its stale entry's, computed elsewhere) reached stampede_lock_min_cost, and not for
    a view known to be cheap; views are measured apart, not by a shared namespace."""
    import time
    from types import SimpleNamespace

    from cacheframe.backends.memory import MemoryBackend
    from cacheframe.envelope import ResponseEntry

    class Locking(MemoryBackend):  # a store lock for the rule to consider
        async def acquire_lock(self, key: str, token: str, lease: float) -> bool:
            return True

        async def release_lock(self, key: str, token: str) -> bool:
            return True

    cache = cacheframe.Cache(backend=Locking(), stampede_lock_min_cost=0.005)

    engine = cache._engine

    def binding(name: str) -> Any:
        return SimpleNamespace(qualname=name)

    def _worth_locking(name: str, stale: ResponseEntry | None) -> bool:
        return engine._worth_locking(binding(name), stale)

    def stale(delta: float) -> ResponseEntry:
        return ResponseEntry(200, [], b"", b'"e"', time.time() - 120, 60.0, 300.0, delta)

    assert _worth_locking("a", None)  # not measured yet
    engine.compute_cost["a"] = 0.001
    assert not _worth_locking("a", None)  # known cheap
    assert _worth_locking("a", stale(0.5))  # slow where the stale entry was computed
    assert _worth_locking("b", None)  # another view: its own figure
    engine.compute_cost["b"] = 0.02
    assert _worth_locking("b", stale(0.001))  # the slowest run counts
