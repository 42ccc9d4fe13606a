"""Attacks a fresh-eyes reviewer tried (issue 10, Review): each test is one leak, poisoning or hang."""

import asyncio
import collections
import functools
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from starlette.responses import PlainTextResponse, Response

import cacheframe
from cacheframe import fastpath
from cacheframe.exceptions import BackendError
from helpers import SlowClears

pytestmark = pytest.mark.usefixtures("app_cache")

runs: collections.Counter[str] = collections.Counter()


def _clients(app: FastAPI, fast: bool) -> TestClient:
    runs.clear()
    if fast:
        fastpath.install(app)
    return TestClient(app)


@pytest.mark.parametrize("fast", [False, True], ids=["decorator", "fastpath"])
def test_view_reading_an_undeclared_header_is_not_shared(fast: bool) -> None:
    """A view reading request.headers[...] for a header the key does not hold never shares its reply."""
    app = FastAPI()

    @app.get("/me")
    @cacheframe.cache(ttl=60)
    async def me(request: Request) -> dict[str, Any]:
        return {"key": request.headers.get("x-api-key")}

    client = _clients(app, fast)
    assert client.get("/me", headers={"X-API-Key": "alice"}).json() == {"key": "alice"}
    assert client.get("/me", headers={"X-API-Key": "bob"}).json() == {"key": "bob"}
    assert client.get("/me").json() == {"key": None}


@pytest.mark.parametrize("fast", [False, True], ids=["decorator", "fastpath"])
def test_view_reading_the_client_address_is_not_shared(fast: bool) -> None:
    """A view reading request.client never shares its reply with another client."""
    app = FastAPI()

    @app.get("/ip")
    @cacheframe.cache(ttl=60)
    async def ip(request: Request) -> dict[str, Any]:
        return {"ip": request.client.host if request.client else None}

    client = _clients(app, fast)
    a = TestClient(app, client=("10.0.0.1", 1))
    b = TestClient(app, client=("10.0.0.2", 1))
    del client
    assert a.get("/ip").json() == {"ip": "10.0.0.1"}
    assert b.get("/ip").json() == {"ip": "10.0.0.2"}


@pytest.mark.parametrize("fast", [False, True], ids=["decorator", "fastpath"])
def test_view_reading_request_state_set_by_middleware_is_not_shared(fast: bool) -> None:
    """A value a middleware put on request.state (a tenant, a user) never leaks between requests."""
    app = FastAPI()

    @app.middleware("http")
    async def tenant(request: Request, call_next: Any) -> Response:
        request.state.tenant = request.headers.get("x-tenant", "none")
        return await call_next(request)

    @app.get("/t")
    @cacheframe.cache(ttl=60)
    async def t(request: Request) -> dict[str, Any]:
        return {"tenant": request.state.tenant}

    client = _clients(app, fast)
    assert client.get("/t", headers={"X-Tenant": "alice"}).json() == {"tenant": "alice"}
    assert client.get("/t", headers={"X-Tenant": "bob"}).json() == {"tenant": "bob"}


@pytest.mark.parametrize("fast", [False, True], ids=["decorator", "fastpath"])
def test_head_miss_cannot_poison_get(fast: bool) -> None:
    """A view answering HEAD differently (empty) never stores that answer for GET."""
    app = FastAPI()

    @app.api_route("/h", methods=["GET", "HEAD"])
    @cacheframe.cache(ttl=60)
    async def h(request: Request) -> Response:
        if request.method == "HEAD":
            return PlainTextResponse("")
        return PlainTextResponse("full body")

    client = _clients(app, fast)
    client.head("/h")
    assert client.get("/h").text == "full body"


@pytest.mark.parametrize("fast", [False, True], ids=["decorator", "fastpath"])
def test_dependency_reading_an_undeclared_header_is_not_shared(fast: bool) -> None:
    """A dependency that looks a user up from a raw header it reads itself never shares the reply."""
    app = FastAPI()

    def user(request: Request) -> str | None:
        return request.headers.get("x-api-key")

    @app.get("/me")
    @cacheframe.cache(ttl=60)
    async def me(u: str | None = Depends(user)) -> dict[str, Any]:
        return {"user": u}

    client = _clients(app, fast)
    assert client.get("/me", headers={"X-API-Key": "alice"}).json() == {"user": "alice"}
    assert client.get("/me", headers={"X-API-Key": "bob"}).json() == {"user": "bob"}


def test_view_reading_keyed_headers_is_still_cached() -> None:
    """Reading a vary'd header, or the Host, keeps the response cacheable (one run for two requests)."""
    app = FastAPI()

    @app.get("/lang")
    @cacheframe.cache(ttl=60, vary=["Accept-Language"])
    async def lang(request: Request) -> dict[str, Any]:
        runs["lang"] += 1
        return {"lang": request.headers.get("accept-language"), "host": request.headers["host"]}

    client = _clients(app, False)
    first = client.get("/lang", headers={"Accept-Language": "fr"})
    again = client.get("/lang", headers={"Accept-Language": "fr"})
    other = client.get("/lang", headers={"Accept-Language": "de"})
    assert (first.json()["lang"], again.json()["lang"], other.json()["lang"]) == ("fr", "fr", "de")
    assert again.headers["x-cache"] == "HIT" and runs["lang"] == 2


def test_a_flood_of_unsafe_requests_to_distinct_paths_clears_nothing(
    app_cache: cacheframe.Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 concurrent DELETEs of 30 different paths: each replaces one resource stamp (one
    write, no store clear, no SCAN), and every path's GET afterwards is a miss."""
    slow_clear = SlowClears(app_cache.backend.clear)

    app = FastAPI()

    @app.get("/items/{i}")
    @cacheframe.cache(ttl=60)
    async def read(i: int) -> dict[str, int]:
        runs[f"read{i}"] += 1
        return {"i": i, "n": runs[f"read{i}"]}

    @app.delete("/items/{i}", status_code=204)
    @cacheframe.cache(ttl=60)
    async def delete(i: int) -> None:
        return None

    async def scenario() -> set[str]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for i in range(30):
                await client.get(f"/items/{i}")
            monkeypatch.setattr(app_cache.backend, "clear", slow_clear)
            before = app_cache.stats.invalidations
            replies = await asyncio.gather(*(client.delete(f"/items/{i}") for i in range(30)))
            assert {r.status_code for r in replies} == {204}
            assert app_cache.stats.invalidations == before + 30
            return {(await client.get(f"/items/{i}")).headers["x-cache"] for i in range(30)}

    runs.clear()
    assert asyncio.run(asyncio.wait_for(scenario(), 60)) == {"MISS"}
    assert slow_clear.total == 0


def _with_user(view: Any) -> Any:
    """A decorator above @cache that injects the caller's user from a header it reads itself."""

    @functools.wraps(view)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["user"] = kwargs["request"].headers.get("x-token")
        return await view(*args, **kwargs)

    return wrapper


def test_stacked_decorator_changing_arguments_is_keyed_by_them() -> None:
    """A decorator between the route and @cache that injects per-user arguments never shares entries."""
    app = FastAPI()

    @app.get("/me")
    @_with_user
    @cacheframe.cache(ttl=60)
    async def me(request: Request, user: str | None = None) -> dict[str, Any]:
        runs[f"me-{user}"] += 1
        return {"user": user}

    client = _clients(app, False)
    assert client.get("/me", headers={"X-Token": "alice"}).json() == {"user": "alice"}
    assert client.get("/me", headers={"X-Token": "bob"}).json() == {"user": "bob"}
    again = client.get("/me", headers={"X-Token": "alice"})
    assert again.json() == {"user": "alice"} and again.headers["x-cache"] == "HIT"
    assert runs == {"me-alice": 1, "me-bob": 1}


def test_dependency_receiving_the_request_with_browser_headers_only_is_cached() -> None:
    """A Request-taking dependency (get_db style) still caches a browser's request: fetch
    metadata, client hints and tracing headers do not single out a user."""
    app = FastAPI()

    def db(request: Request) -> str:
        return "db"

    @app.get("/page")
    @cacheframe.cache(ttl=60)
    async def page(d: str = Depends(db)) -> dict[str, Any]:
        runs["page"] += 1
        return {"d": d}

    browser = {
        "User-Agent": "Mozilla/5.0",
        "Accept-Language": "en",
        "Sec-Fetch-Mode": "navigate",
        "Sec-Ch-Ua-Mobile": "?0",
        "Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    client = _clients(app, False)
    client.get("/page", headers=browser)
    assert client.get("/page", headers=browser).headers["x-cache"] == "HIT" and runs["page"] == 1


def test_failing_clears_never_open_the_circuit(
    app_cache: cacheframe.Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unsafe requests whose clears fail (a Redis SCAN timing out on a large keyspace) leave the
    circuit closed: the GETs that follow are still served from the store."""

    async def timing_out(namespace: str) -> None:
        raise BackendError("clear: no reply within 0.25s")

    app = FastAPI()

    @app.get("/items/{i}")
    @cacheframe.cache(ttl=60)
    async def read(i: int) -> dict[str, int]:
        return {"i": i}

    @app.delete("/items/{i}", status_code=204)
    @cacheframe.cache(ttl=60)
    async def delete(i: int) -> None:
        return None

    client = _clients(app, False)
    client.get("/items/0")
    monkeypatch.setattr(app_cache.backend, "clear", timing_out)
    for i in range(app_cache.settings.breaker_threshold + 2):
        assert client.delete(f"/items/{i + 1}").status_code == 204
    assert client.get("/items/0").headers["x-cache"] == "HIT"
    assert app_cache._gateway.breaker.state == "closed"


def test_sync_views_reading_headers_or_stacked_under_a_user_decorator_are_not_shared() -> None:
    """The same two leaks through `def` views: an undeclared header read, a decorator injecting a user."""

    def with_user(view: Any) -> Any:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs["user"] = kwargs["request"].headers.get("x-token")
            return view(*args, **kwargs)

        return wrapper

    app = FastAPI()

    @app.get("/key")
    @cacheframe.cache(ttl=60)
    def key(request: Request) -> dict[str, Any]:
        return {"key": request.headers.get("x-api-key")}

    @app.get("/me")
    @with_user
    @cacheframe.cache(ttl=60)
    def me(request: Request, user: str | None = None) -> dict[str, Any]:
        return {"user": user}

    client = _clients(app, False)
    assert client.get("/key", headers={"X-API-Key": "alice"}).json() == {"key": "alice"}
    assert client.get("/key", headers={"X-API-Key": "bob"}).json() == {"key": "bob"}
    assert client.get("/me", headers={"X-Token": "alice"}).json() == {"user": "alice"}
    assert client.get("/me", headers={"X-Token": "bob"}).json() == {"user": "bob"}


def test_cache_on_a_websocket_endpoint_is_refused_at_decoration() -> None:
    """@cache on a WebSocket endpoint fails at decoration, not on every connection."""
    from fastapi import WebSocket

    from cacheframe.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="WebSocket"):

        @cacheframe.cache(ttl=60)
        async def ws(websocket: WebSocket) -> None:
            await websocket.accept()
