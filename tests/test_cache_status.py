"""RFC 9211 ``Cache-Status``: one value per outcome, each a valid structured-field List.

Every value is parsed with a real RFC 8941 parser (``http_sfv``), never compared as text alone.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from typing import Any

import http_sfv
import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

import cacheframe
from cacheframe import fastpath
from cacheframe.exceptions import ConfigurationError


def parse(value: str) -> tuple[str, dict[str, Any]]:
    """The one member of a Cache-Status List: (the cache's name, its parameters)."""
    members = http_sfv.List()
    members.parse(value.encode("ascii"))  # raises on anything that is not a valid List
    assert len(members) == 1, value
    member = members[0]
    return str(member.value), dict(member.params)


def status(response: httpx.Response) -> dict[str, Any]:
    """The parameters of ``response``'s Cache-Status (named ``cacheframe``)."""
    name, params = parse(response.headers["cache-status"])
    assert name == "cacheframe"
    return params


def make_app(state: dict[str, Any]) -> FastAPI:
    app = FastAPI()

    @app.get("/items")
    @app.head("/items")
    @app.post("/items")
    @cacheframe.cache(ttl=60)
    async def items() -> dict[str, int]:
        state["items"] = state.get("items", 0) + 1
        return {"n": state["items"]}

    @app.get("/cookie")
    @cacheframe.cache(ttl=60)
    async def cookie(response: Response) -> dict[str, int]:
        response.set_cookie("session", "abc")
        return {"n": 1}

    @app.get("/no-store")
    @cacheframe.cache(ttl=60)
    async def no_store() -> Response:
        return JSONResponse({"n": 1}, headers={"Cache-Control": "no-store"})

    @app.get("/missing")
    @cacheframe.cache(ttl=60)
    async def missing() -> None:
        raise HTTPException(404)

    @app.get("/swr")
    @cacheframe.cache(ttl=10, stale_while_revalidate=300)
    async def swr() -> dict[str, int]:
        return {"n": 1}

    @app.get("/sie")
    @cacheframe.cache(ttl=10, stale_if_error=600)
    async def sie() -> Any:
        if state.get("fail") == "raise":
            raise RuntimeError("database down")
        if state.get("fail") == "500":
            return JSONResponse({"error": True}, status_code=500)
        return {"n": 1}

    @app.get("/short")
    @cacheframe.cache(ttl=10)
    async def short() -> dict[str, int]:
        return {"n": 1}

    @app.get("/slow")
    @cacheframe.cache(ttl=60)
    async def slow() -> dict[str, int]:
        await state["gate"].wait()
        return {"n": 1}

    @app.get("/uses-function")
    async def uses_function() -> dict[str, int]:
        return {"n": await value(1)}

    @cacheframe.cache(ttl=60)
    async def value(n: int) -> int:
        return n

    @app.get("/secured")
    @cacheframe.cache(ttl=60)
    async def secured(request: Request) -> dict[str, int]:
        return {"n": 1}

    return app


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Move the wall clock forward by the given seconds."""
    real = time.time

    def advance(seconds: float) -> None:
        monkeypatch.setattr(time, "time", lambda: real() + seconds)

    return advance


@pytest.mark.usefixtures("app_cache")
def test_miss_then_hit_on_every_backend() -> None:
    """A miss that is stored, then hits (GET, HEAD, 304) with the freshness left as ``ttl``."""
    client = TestClient(make_app({}))
    miss = client.get("/items")
    assert miss.headers["x-cache"] == "MISS"
    assert status(miss) == {"fwd": "uri-miss", "stored": True}
    hit = client.get("/items")
    assert hit.headers["x-cache"] == "HIT"
    params = status(hit)
    assert params.keys() == {"hit", "ttl"} and params["hit"] is True
    assert params["ttl"] == 60 - int(hit.headers["age"])
    head = client.head("/items")
    assert head.headers["x-cache"] == "HIT" and status(head)["hit"] is True
    not_modified = client.get("/items", headers={"If-None-Match": hit.headers["etag"]})
    assert not_modified.status_code == 304
    assert status(not_modified).keys() == {"hit", "ttl"}


@pytest.mark.parametrize(
    ("path", "detail"),
    [("/cookie", "set-cookie"), ("/no-store", "no-store"), ("/missing", "status")],
)
def test_not_stored_names_the_reason(path: str, detail: str) -> None:
    """A response that may not be stored: forwarded, no ``stored``, the reason as ``detail``."""
    client = TestClient(make_app({}))
    response = client.get(path)
    assert response.headers["x-cache"] == "MISS"
    assert status(response) == {"fwd": "uri-miss", "detail": detail}


def test_request_directives() -> None:
    """The request's no-store bypasses (``fwd=request; detail=no-store``); its no-cache
    forwards and stores anew (``fwd=request; stored``)."""
    client = TestClient(make_app({}))
    client.get("/items")
    no_store = client.get("/items", headers={"Cache-Control": "no-store"})
    assert no_store.headers["x-cache"] == "BYPASS"
    assert status(no_store) == {"fwd": "request", "detail": "no-store"}
    no_cache = client.get("/items", headers={"Cache-Control": "no-cache"})
    assert no_cache.headers["x-cache"] == "MISS"
    assert status(no_cache) == {"fwd": "request", "stored": True}
    max_age = client.get("/items", headers={"Cache-Control": "max-age=0"})
    assert status(max_age) == {"fwd": "request", "stored": True}


def test_bypass_reasons() -> None:
    """Each bypass names its reason; a method the cache does not serve is ``fwd=method``."""
    client = TestClient(make_app({}))
    auth = client.get("/items", headers={"Authorization": "Bearer x"})
    assert auth.headers["x-cache"] == "BYPASS"
    assert status(auth) == {"fwd": "bypass", "detail": "authorization"}
    post = client.post("/items")
    assert status(post) == {"fwd": "method", "detail": "unsafe-method"}
    hosts = client.get("/items", headers=[("Host", "a.example"), ("Host", "b.example")])
    assert status(hosts) == {"fwd": "bypass", "detail": "several-hosts"}


def test_disabled_cache_says_so() -> None:
    cacheframe.configure(enabled=False)
    response = TestClient(make_app({})).get("/items")
    assert status(response) == {"fwd": "bypass", "detail": "disabled"}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_store_down_then_breaker_open() -> None:
    """A failing store (nothing listens) is ``store-down``; once the circuit opens, ``breaker-open``."""
    cache = cacheframe.configure(
        url=f"redis://127.0.0.1:{_closed_port()}/0", timeout=0.25, breaker_threshold=2, breaker_cooldown=60
    )
    client = TestClient(make_app({}))
    first = client.get("/items")
    assert first.headers["x-cache"] == "BYPASS"
    assert status(first) == {"fwd": "bypass", "detail": "store-down"}
    client.get("/items")  # the second failure opens the circuit
    assert cache.stats.breaker_open == 1
    third = client.get("/items")
    assert status(third) == {"fwd": "bypass", "detail": "breaker-open"}


def test_stale_while_revalidate_is_a_hit_with_negative_ttl(later) -> None:  # type: ignore[no-untyped-def]
    client = TestClient(make_app({}))
    client.get("/swr")
    later(20)
    stale = client.get("/swr")
    assert stale.headers["x-cache"] == "STALE"
    params = status(stale)
    assert params.keys() == {"hit", "ttl"} and params["ttl"] <= -1
    assert params["ttl"] == min(10 - int(stale.headers["age"]), -1)


@pytest.mark.parametrize("failure", ["raise", "500"])
def test_stale_if_error_is_forwarded_stale(later, failure: str) -> None:  # type: ignore[no-untyped-def]
    """The view ran and failed, the stale entry stood in: ``fwd=stale``, the view's status as
    ``fwd-status`` when it answered one, a negative ``ttl``."""
    state: dict[str, Any] = {}
    client = TestClient(make_app(state))
    client.get("/sie")
    later(30)
    state["fail"] = failure
    response = client.get("/sie")
    assert response.status_code == 200 and response.headers["x-cache"] == "STALE"
    params = status(response)
    assert params["fwd"] == "stale" and params["detail"] == "stale-if-error" and params["ttl"] < 0
    assert params.get("fwd-status") == (500 if failure == "500" else None)


def test_expired_entry_is_forwarded_stale(later) -> None:  # type: ignore[no-untyped-def]
    client = TestClient(make_app({}))
    client.get("/short")
    later(30)
    assert status(client.get("/short")) == {"fwd": "stale", "stored": True}


async def test_collapsed_follower() -> None:
    """Concurrent misses: one leads (``stored``), the others share its result (``collapsed``)."""
    state: dict[str, Any] = {"gate": asyncio.Event()}
    transport = httpx.ASGITransport(app=make_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        requests = [asyncio.ensure_future(client.get("/slow")) for _ in range(3)]
        await asyncio.sleep(0.05)
        state["gate"].set()
        responses = await asyncio.gather(*requests)
    found = sorted(tuple(sorted(status(r).items())) for r in responses)
    assert found == [(("collapsed", True), ("fwd", "uri-miss"))] * 2 + [
        (("fwd", "uri-miss"), ("stored", True))
    ]
    assert all(r.headers["x-cache"] in ("MISS", "HIT") for r in responses)


def test_fast_path_sends_the_same_value() -> None:
    """A hit on the fast path carries the same Cache-Status as on the decorator path."""
    cache = cacheframe.configure(prefix=f"t{uuid.uuid4().hex[:10]}")
    app = make_app({})
    fastpath.install(app)
    client = TestClient(app)
    client.get("/items")
    fast = client.get("/items")
    assert cache.stats.fast_hits == 1
    full = client.get("/items", headers={"Authorization": "x"})  # not the fast path: a bypass
    assert status(full)["fwd"] == "bypass"
    fast_head = client.head("/items")
    assert cache.stats.fast_hits == 2
    for response in (fast, fast_head):
        params = status(response)
        assert params.keys() == {"hit", "ttl"} and params["ttl"] == 60 - int(response.headers["age"])
    plain = TestClient(make_app({})).get("/items")  # the decorator path, same entry
    assert plain.headers["cache-status"].split("ttl=")[0] == fast.headers["cache-status"].split("ttl=")[0]


def test_functions_send_no_header() -> None:
    """A cached function's value is no reply: a view calling one carries no Cache-Status."""
    response = TestClient(make_app({})).get("/uses-function")
    assert "cache-status" not in response.headers and "x-cache" not in response.headers


def test_turned_off_and_renamed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEFRAME_CACHE_STATUS", "false")
    cacheframe.configure()
    client = TestClient(make_app({}))
    assert "cache-status" not in client.get("/items").headers
    assert "cache-status" not in client.get("/items").headers
    monkeypatch.delenv("CACHEFRAME_CACHE_STATUS")
    cacheframe.configure(cache_status_name="edge-1")
    response = TestClient(make_app({})).get("/items")
    assert parse(response.headers["cache-status"])[0] == "edge-1"


@pytest.mark.parametrize("name", ["", "1cache", "my cache", 'a"b'])
def test_name_must_be_a_token(name: str) -> None:
    with pytest.raises(ConfigurationError, match="cache_status_name"):
        cacheframe.Cache(cache_status_name=name)
