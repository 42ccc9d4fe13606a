"""Stale serving (RFC 5861), early refresh, and invalidation racing an in-flight miss."""

from __future__ import annotations

import asyncio
import collections
import time

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

import cacheframe
from cacheframe.envelope import ResponseEntry, freshness
from helpers import assert_freshness, generous_deadline

pytestmark = pytest.mark.usefixtures("app_cache")


def stale_app(state: dict[str, object]) -> FastAPI:
    app = FastAPI()
    counter: collections.Counter[str] = state.setdefault("calls", collections.Counter())  # type: ignore[assignment]

    @app.get("/swr")
    @cacheframe.cache(ttl=10, stale_while_revalidate=300)
    async def swr() -> dict[str, int]:
        counter["swr"] += 1
        return {"n": counter["swr"]}

    @app.get("/sie")
    @cacheframe.cache(ttl=10, stale_if_error=600)
    async def sie() -> dict[str, int]:
        counter["sie"] += 1
        if state.get("fail") == "raise":
            raise RuntimeError("database down")
        if state.get("fail") == "503":
            raise HTTPException(503)
        if state.get("fail") == "404":
            raise HTTPException(404)
        return {"n": counter["sie"]}

    return app


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Move the wall clock forward by the given seconds."""
    real = time.time

    def advance(seconds: float) -> None:
        monkeypatch.setattr(time, "time", lambda: real() + seconds)

    return advance


def test_stale_while_revalidate_serves_stale_and_refreshes_once(later) -> None:  # type: ignore[no-untyped-def]
    """After ttl the stale entry is served (STALE, Age, SWR header) while one refresh runs."""
    state: dict[str, object] = {}
    client = TestClient(stale_app(state))
    first = client.get("/swr")
    assert first.headers["cache-control"] == "public, max-age=10, stale-while-revalidate=300"
    later(20)
    stale = client.get("/swr")
    assert stale.headers["x-cache"] == "STALE" and stale.json() == {"n": 1}
    assert_freshness(stale, 10, age=20, extra=", stale-while-revalidate=300")
    assert "warning" not in stale.headers
    assert state["calls"]["swr"] == 2  # type: ignore[index]  # the refresh ran after the reply
    fresh = client.get("/swr")
    assert fresh.headers["x-cache"] == "HIT" and fresh.json() == {"n": 2}


async def test_concurrent_stale_requests_refresh_once(later, app_cache: cacheframe.Cache) -> None:  # type: ignore[no-untyped-def]
    """Many concurrent requests on a stale entry trigger exactly one refresh."""
    generous_deadline(app_cache)
    state: dict[str, object] = {}
    transport = httpx.ASGITransport(app=stale_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await client.get("/swr")
        later(20)
        responses = await asyncio.gather(*(client.get("/swr") for _ in range(50)))
    assert {r.json()["n"] for r in responses} <= {1, 2}
    assert state["calls"]["swr"] == 2  # type: ignore[index]


def test_past_stale_window_is_a_miss(later) -> None:  # type: ignore[no-untyped-def]
    """Beyond ttl + stale_while_revalidate the entry is not served."""
    state: dict[str, object] = {}
    client = TestClient(stale_app(state))
    client.get("/swr")
    later(400)
    assert client.get("/swr").headers["x-cache"] == "MISS"


@pytest.mark.parametrize("failure", ["raise", "503"])
def test_stale_if_error_serves_stale(later, failure: str) -> None:  # type: ignore[no-untyped-def]
    """When the view raises or answers 5xx after ttl, the stale entry is served."""
    state: dict[str, object] = {}
    client = TestClient(stale_app(state))
    assert client.get("/sie").json() == {"n": 1}
    later(30)
    state["fail"] = failure
    resp = client.get("/sie")
    assert resp.status_code == 200 and resp.json() == {"n": 1}
    assert resp.headers["x-cache"] == "STALE"
    assert "stale-if-error=600" in resp.headers["cache-control"]


def test_stale_if_error_does_not_hide_client_errors(later) -> None:  # type: ignore[no-untyped-def]
    """A 404 raised by the view is not an error to paper over."""
    state: dict[str, object] = {}
    client = TestClient(stale_app(state), raise_server_exceptions=False)
    client.get("/sie")
    later(30)
    state["fail"] = "404"
    assert client.get("/sie").status_code == 404


def test_stale_if_error_window_ends(later) -> None:  # type: ignore[no-untyped-def]
    """After ttl + stale_if_error the error reaches the client."""
    state: dict[str, object] = {}
    client = TestClient(stale_app(state), raise_server_exceptions=False)
    client.get("/sie")
    later(700)
    state["fail"] = "raise"
    assert client.get("/sie").status_code == 500


async def test_function_stale_while_revalidate(later) -> None:  # type: ignore[no-untyped-def]
    """An async function returns the stale value and refreshes it in the background."""
    runs: list[int] = []

    @cacheframe.cache(ttl=10, stale_while_revalidate=100)
    async def value() -> int:
        runs.append(1)
        return len(runs)

    assert await value() == 1
    later(20)
    assert await value() == 1
    for _ in range(50):
        if len(runs) == 2:
            break
        await asyncio.sleep(0.01)
    assert await value() == 2 and len(runs) == 2


async def test_function_stale_if_error(later) -> None:  # type: ignore[no-untyped-def]
    """An async function that fails after ttl returns the stale value."""
    fail = False

    @cacheframe.cache(ttl=10, stale_if_error=100)
    async def value() -> str:
        if fail:
            raise ConnectionError("upstream")
        return "good"

    assert await value() == "good"
    later(20)
    fail = True
    assert await value() == "good"


def test_xfetch_refreshes_hot_keys_early() -> None:
    """With xfetch_beta, a fresh entry close to expiry is sometimes reported expired; far from it never."""
    entry = ResponseEntry(200, [], b"", b'"x"', created=1000.0, ttl=60.0, delta=2.0)
    near = [freshness(entry, xfetch_beta=1.0, now=1059.0) for _ in range(2000)]
    far = [freshness(entry, xfetch_beta=1.0, now=1000.5) for _ in range(2000)]
    assert 0 < near.count("expired") < 2000
    assert far.count("expired") < 20  # P = e^-29.75 per draw: effectively never
    assert freshness(entry, now=1059.0) == "fresh"


async def test_invalidation_during_miss_is_not_overwritten() -> None:
    """A response computed before clear() is not written after it (deterministic)."""
    cache = cacheframe.get_cache()
    started, release = asyncio.Event(), asyncio.Event()
    runs: list[int] = []

    @cacheframe.cache(ttl=60, namespace="race")
    async def slow() -> int:
        runs.append(1)
        started.set()
        await release.wait()
        return len(runs)

    task = asyncio.create_task(slow())
    await started.wait()
    await cache.clear("race")  # invalidate while the first computation is in flight
    release.set()
    assert await task == 1
    assert await slow() == 2  # the pre-invalidation value was not stored
    assert await slow() == 2


async def test_invalidation_race_for_views() -> None:
    """A view response computed before an invalidation is not stored after it."""
    cache = cacheframe.get_cache()
    started, release = asyncio.Event(), asyncio.Event()
    app = FastAPI()
    counter = collections.Counter[str]()

    @app.get("/v")
    @cacheframe.cache(ttl=60, namespace="views-race")
    async def view() -> dict[str, int]:
        counter["v"] += 1
        started.set()
        await release.wait()
        return {"n": counter["v"]}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        first = asyncio.create_task(client.get("/v"))
        await started.wait()
        await cache.clear("views-race")
        release.set()
        assert (await first).json() == {"n": 1}
        again = await client.get("/v")
    assert again.headers["x-cache"] == "MISS" and again.json() == {"n": 2}


async def test_concurrent_set_delete_clear_consistent() -> None:
    """Concurrent set/delete/clear from many tasks leave every key either absent or intact."""
    cache = cacheframe.get_cache()

    async def worker(i: int) -> None:
        for j in range(20):
            await cache.set(f"k{j}", {"w": i, "j": j}, namespace="conc")
            if j % 5 == 0:
                await cache.delete(f"k{j}", namespace="conc")
            if i == 0 and j == 10:
                await cache.clear("conc")

    await asyncio.gather(*(worker(i) for i in range(10)))
    for j in range(20):
        value = await cache.get(f"k{j}", namespace="conc")
        assert value is None or (value["j"] == j and 0 <= value["w"] < 10)


def test_starlette_http_exception_is_not_hidden(later) -> None:  # type: ignore[no-untyped-def]
    """A 404 raised as Starlette's HTTPException is a client error: stale-if-error does not hide it."""
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI()
    fail = {"now": False}

    @app.get("/s")
    @cacheframe.cache(ttl=10, stale_if_error=600)
    async def s() -> dict[str, int]:
        if fail["now"]:
            raise StarletteHTTPException(404)
        return {"ok": 1}

    client = TestClient(app)
    client.get("/s")
    later(30)
    fail["now"] = True
    resp = client.get("/s")
    assert resp.status_code == 404 and resp.headers["x-cache"] == "MISS"


def test_lost_refresh_claim_is_taken_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refresh claim whose task never ran expires after the lock lease (never stuck all window)."""
    cache = cacheframe.Cache(url="memory://", lock_lease=5)
    assert cache._engine.claim_refresh("k") is True
    assert cache._engine.claim_refresh("k") is False
    real = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real() + 6)
    assert cache._engine.claim_refresh("k") is True


async def test_function_followers_get_the_stale_fallback(later) -> None:  # type: ignore[no-untyped-def]
    """When the first caller's refresh fails, concurrent callers get the stale value too."""
    state = {"fail": False}

    @cacheframe.cache(ttl=10, stale_if_error=100)
    async def value() -> int:
        await asyncio.sleep(0.05)
        if state["fail"]:
            raise RuntimeError("boom")
        return 10

    assert await value() == 10
    later(20)
    state["fail"] = True
    assert await asyncio.gather(*(value() for _ in range(3))) == [10, 10, 10]
