"""The observer and its default, ``CacheStats``: each outcome counted once, labelled by
namespace and a fixed reason code, driven through real apps and stores."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Response
from fastapi.testclient import TestClient

import cacheframe
from cacheframe import stats
from cacheframe.breaker import CircuitBreaker
from cacheframe.stats import CacheStats, Observer

ITEMS = f"{__name__}.make_app.<locals>.items"


def make_app(state: dict[str, Any]) -> FastAPI:
    app = FastAPI()

    @app.get("/items")
    @app.post("/items")
    @cacheframe.cache(ttl=10, stale_while_revalidate=100)
    async def items() -> dict[str, int]:
        state["n"] = state.get("n", 0) + 1
        return {"n": state["n"]}

    @app.get("/cookie")
    @cacheframe.cache(ttl=10, namespace="cookies")
    async def cookie(response: Response) -> dict[str, int]:
        response.set_cookie("session", "abc")
        return {"n": 1}

    return app


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    real = time.time

    def advance(seconds: float) -> None:
        monkeypatch.setattr(time, "time", lambda: real() + seconds)

    return advance


def test_cache_stats_is_an_observer() -> None:
    """Every method of the Observer protocol is implemented (and nothing hides a counter)."""
    members = {name for name in vars(Observer) if name.startswith("on_")}
    assert members and all(callable(getattr(CacheStats(), name)) for name in members)
    observer: Observer = CacheStats()
    observer.on_tier_health(False)
    assert isinstance(observer, CacheStats) and observer.local_tier_down == 1


def test_as_dict_holds_the_plain_integers() -> None:
    counters = CacheStats().as_dict()
    assert set(counters) >= {"hits", "fast_hits", "misses", "bypasses", "stale", "stores", "not_stored"}
    assert set(counters) >= {"backend_errors", "short_circuited", "bad_entries", "invalidations"}
    assert {"breaker_open", "breaker_trips"} <= set(counters)
    assert all(type(v) is int for v in counters.values())
    assert "requests" not in counters


def test_view_outcomes_labelled_by_namespace(app_cache: cacheframe.Cache, later) -> None:  # type: ignore[no-untyped-def]
    """Miss, hit, stale, bypass and not-stored, each under the view's namespace and reason."""
    client = TestClient(make_app({}))
    client.get("/items")
    client.get("/items")
    client.get("/items", headers={"Authorization": "Bearer x"})
    client.get("/items", headers={"Cache-Control": "no-store"})
    client.get("/cookie")
    later(20)
    client.get("/items")  # stale while revalidating: the refresh is a miss of its own
    s = app_cache.stats
    assert s.requests == {
        (ITEMS, "miss", ""): 2,
        (ITEMS, "hit", "store"): 1,
        (ITEMS, "bypass", "authorization"): 1,
        (ITEMS, "bypass", "request-no-store"): 1,
        (ITEMS, "stale", "while-revalidate"): 1,
        ("cookies", "miss", ""): 1,
    }
    assert s.not_stored_by == {("cookies", "set-cookie"): 1}
    assert (s.hits, s.misses, s.bypasses, s.stale, s.not_stored, s.stores) == (1, 3, 2, 1, 1, 2)
    assert s.store_errors == {} and s.breaker_open == 0


def test_unsafe_request_and_cache_api_count_invalidations(app_cache: cacheframe.Cache) -> None:
    client = TestClient(make_app({}))
    client.get("/items")
    client.post("/items")
    assert app_cache.stats.requests[(ITEMS, "bypass", "unsafe-method")] == 1
    assert app_cache.stats.invalidations == 1
    assert client.get("/items").headers["x-cache"] == "MISS"


async def test_functions_and_kv(app_cache: cacheframe.Cache) -> None:
    calls: list[int] = []

    @cacheframe.cache(ttl=10, namespace="prices")
    async def price(n: int) -> int:
        calls.append(n)
        return n

    @cacheframe.cache(ttl=10, namespace="secrets")
    async def secret() -> Any:
        return pydantic_secret()

    await price(1)
    await price(1)
    await secret()
    await app_cache.set("a", 1)
    await app_cache.delete("a")
    await app_cache.clear()
    s = app_cache.stats
    assert s.requests == {
        ("prices", "miss", ""): 1,
        ("prices", "hit", "store"): 1,
        ("secrets", "miss", ""): 1,
    }
    assert s.not_stored_by == {("secrets", "unserializable"): 1}
    assert s.invalidations == 2 and s.stores == 2


def pydantic_secret() -> Any:
    from pydantic import SecretStr

    return SecretStr("hidden")


def test_disabled_functions_count_as_bypass() -> None:
    cache = cacheframe.configure(enabled=False)

    @cacheframe.cache(ttl=10, namespace="off")
    def plain() -> int:
        return 1

    assert plain() == 1
    assert cache.stats.requests == {("off", "bypass", "disabled"): 1}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung store)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


def test_store_errors_breaker_and_bypass_reasons() -> None:
    """A store that refuses connections: errors by action, the circuit's trip, then skipped calls."""
    cache = cacheframe.configure(
        url=f"redis://127.0.0.1:{_closed_port()}/0", timeout=0.25, breaker_threshold=2, breaker_cooldown=60
    )
    client = TestClient(make_app({}))
    for _ in range(3):
        assert client.get("/items").headers["x-cache"] == "BYPASS"
    s = cache.stats
    assert s.store_errors == {"get": 2} and s.store_timeouts == {}
    assert s.backend_errors == 2 and s.breaker_open == 1 and s.breaker_trips == 1
    assert s.short_circuited == 1
    assert s.requests == {(ITEMS, "bypass", "store-down"): 2, (ITEMS, "bypass", "breaker-open"): 1}


def test_store_timeouts_are_counted(silent_server: int) -> None:
    cache = cacheframe.configure(
        url=f"redis://127.0.0.1:{silent_server}/0", timeout=0.2, breaker_threshold=10
    )
    TestClient(make_app({})).get("/items")
    assert cache.stats.store_timeouts.get("get") == 1
    assert cache.stats.store_errors.get("get") == 1


def test_breaker_reports_each_change() -> None:
    """Opening and closing are reported once each; failures while open are not changes."""
    seen: list[bool] = []
    breaker = CircuitBreaker(threshold=2, cooldown=0.0, on_change=seen.append)
    breaker.failure()
    assert seen == []
    breaker.failure()
    breaker.failure()  # a failed probe: open again, not a new change
    assert seen == [True]
    breaker.success()
    breaker.success()
    assert seen == [True, False]
    observed = CacheStats()
    observed.on_breaker(True)
    observed.on_breaker(False)
    observed.on_breaker(True)
    assert (observed.breaker_open, observed.breaker_trips) == (1, 2)


def test_reason_vocabularies_are_disjoint_tokens() -> None:
    """Reason codes are fixed, distinct, and valid structured-field tokens (Cache-Status detail)."""
    import re

    for codes in (stats.BYPASS_REASONS, stats.NOT_STORED_REASONS, stats.STALE_REASONS, stats.OUTCOMES):
        assert len(set(codes)) == len(codes)
        assert all(re.fullmatch(r"[a-z][a-z-]*", code) for code in codes)
