"""The ASGI fast path: same bytes as the decorator path, only for provably safe routes."""

import collections
from typing import Annotated

import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.testclient import TestClient
from starlette.middleware.base import BaseHTTPMiddleware

import cacheframe
from cacheframe import fastpath
from helpers import assert_freshness

pytestmark = pytest.mark.usefixtures("app_cache")


def build(counter: collections.Counter[str], app_dependencies: list[object] | None = None) -> FastAPI:
    app = FastAPI(dependencies=app_dependencies or [])
    router = APIRouter(prefix="/r")

    def counting_dependency() -> None:
        counter["dependency"] += 1

    def rejecting_dependency(x_token: Annotated[str | None, Header()] = None) -> None:
        from fastapi import HTTPException

        if x_token != "ok":
            raise HTTPException(403)

    @app.get("/simple")
    @cacheframe.cache(ttl=60)
    async def simple(n: int = 1) -> dict[str, int]:
        counter["simple"] += 1
        return {"n": n}

    @app.get("/with-dep")
    @cacheframe.cache(ttl=60)
    async def with_dep(_: Annotated[None, Depends(counting_dependency)]) -> dict[str, bool]:
        counter["with_dep"] += 1
        return {"ok": True}

    @app.get("/guarded")
    @cacheframe.cache(ttl=60)
    async def guarded(_: Annotated[None, Depends(rejecting_dependency)]) -> dict[str, bool]:
        counter["guarded"] += 1
        return {"ok": True}

    @app.get("/vary")
    @cacheframe.cache(ttl=60, vary=["X-Region"])
    async def vary(request: Request) -> dict[str, str | None]:
        counter["vary"] += 1
        return {"r": request.headers.get("x-region")}

    @router.get("/item/{item_id}")
    @cacheframe.cache(ttl=60)
    async def item(item_id: int) -> dict[str, int]:
        counter["item"] += 1
        return {"id": item_id}

    app.include_router(router)
    fastpath.install(app)
    return app


def fast_hits() -> int:
    """How many hits the fast path served."""
    return cacheframe.get_cache().stats.fast_hits


def test_same_bytes_and_headers_as_decorator_path() -> None:
    """A fast hit carries exactly the body and headers a decorator-path hit would."""
    counter: collections.Counter[str] = collections.Counter()
    plain = TestClient(build(counter))
    miss = plain.get("/simple?n=3")
    hit = plain.get("/simple?n=3")
    assert miss.headers["x-cache"] == "MISS" and hit.headers["x-cache"] == "HIT"
    assert hit.content == miss.content and hit.headers["etag"] == miss.headers["etag"]
    assert_freshness(hit, 60)
    assert hit.headers["content-type"] == "application/json"
    assert counter["simple"] == 1 and fast_hits() == 1
    # the decorator path with the same request would send the same headers (minus order)
    slow = plain.get("/simple?n=3", headers={"Pragma": "x"})  # Pragma forces the full path
    assert slow.headers["x-cache"] == "HIT" and fast_hits() == 1
    assert {k: v for k, v in slow.headers.items()} == {k: v for k, v in hit.headers.items()}


def test_if_none_match_304_on_fast_path() -> None:
    """If-None-Match is answered with a 304 on the fast path."""
    client = TestClient(build(collections.Counter()))
    etag = client.get("/simple").headers["etag"]
    resp = client.get("/simple", headers={"If-None-Match": etag})
    assert resp.status_code == 304 and resp.content == b"" and resp.headers["etag"] == etag
    assert fast_hits() == 1


def test_route_with_dependency_never_takes_fast_path() -> None:
    """A dependency that counts calls runs on every request: the route is never fast."""
    counter: collections.Counter[str] = collections.Counter()
    client = TestClient(build(counter))
    for _ in range(3):
        assert client.get("/with-dep").status_code == 200
    assert counter["dependency"] == 3 and counter["with_dep"] == 1
    assert fast_hits() == 0


def test_rejecting_dependency_still_rejects() -> None:
    """A dependency that rejects keeps rejecting even once an entry exists."""
    client = TestClient(build(collections.Counter()))
    assert client.get("/guarded", headers={"X-Token": "ok"}).status_code == 200
    assert client.get("/guarded").status_code == 403


def test_app_level_dependency_disables_fast_path() -> None:
    """An app-level dependency counts as a dependency of every route."""
    counter: collections.Counter[str] = collections.Counter()

    def app_dep() -> None:
        counter["app_dep"] += 1

    client = TestClient(build(counter, [Depends(app_dep)]))
    client.get("/simple")
    client.get("/simple")
    assert counter["app_dep"] == 2


def test_bad_query_still_422() -> None:
    """A query FastAPI rejects is never stored and always reaches FastAPI."""
    client = TestClient(build(collections.Counter()))
    for _ in range(2):
        assert client.get("/simple?n=abc").status_code == 422


def test_user_middleware_runs_on_fast_hits() -> None:
    """A user middleware still runs on fast hits (the fast path is innermost)."""
    counter: collections.Counter[str] = collections.Counter()
    app = build(counter)

    async def mark(request: Request, call_next):  # type: ignore[no-untyped-def]
        counter["middleware"] += 1
        response = await call_next(request)
        response.headers["x-mw"] = "1"
        return response

    app.add_middleware(BaseHTTPMiddleware, dispatch=mark)
    client = TestClient(app)
    client.get("/simple")
    hit = client.get("/simple")
    assert hit.headers["x-cache"] == "HIT" and hit.headers["x-mw"] == "1"
    assert counter["middleware"] == 2 and counter["simple"] == 1


def test_vary_route_not_fast_but_cached() -> None:
    """vary routes take the decorator path and stay correct."""
    counter: collections.Counter[str] = collections.Counter()
    client = TestClient(build(counter))
    assert client.get("/vary", headers={"X-Region": "a"}).json() == {"r": "a"}
    assert client.get("/vary", headers={"X-Region": "b"}).json() == {"r": "b"}
    assert client.get("/vary", headers={"X-Region": "a"}).headers["x-cache"] == "HIT"
    assert fast_hits() == 0


def test_path_params_and_routers() -> None:
    """Routes with path parameters on a router use the fast path per path."""
    counter: collections.Counter[str] = collections.Counter()
    client = TestClient(build(counter))
    assert client.get("/r/item/1").json() == {"id": 1}
    assert client.get("/r/item/2").json() == {"id": 2}
    assert client.get("/r/item/1").headers["x-cache"] == "HIT"
    assert counter["item"] == 2 and fast_hits() == 1


def test_mounted_sub_application_and_root_path() -> None:
    """A sub-application mounted under a prefix, and a root_path, key and serve correctly."""
    counter: collections.Counter[str] = collections.Counter()
    outer = FastAPI()
    outer.mount("/sub", build(counter))
    client = TestClient(outer)
    assert client.get("/sub/simple?n=5").json() == {"n": 5}
    hit = client.get("/sub/simple?n=5")
    assert hit.headers["x-cache"] == "HIT" and hit.json() == {"n": 5}
    proxied = TestClient(build(counter), root_path="/api")
    assert proxied.get("/simple?n=6").json() == {"n": 6}
    assert proxied.get("/simple?n=6").headers["x-cache"] == "HIT"
    assert counter["simple"] == 2 and fast_hits() == 2


def test_authorization_takes_full_path() -> None:
    """A request with Authorization is never answered by the fast path."""
    client = TestClient(build(collections.Counter()))
    client.get("/simple")
    assert client.get("/simple", headers={"Authorization": "Bearer x"}).headers["x-cache"] == "BYPASS"


def test_included_router_dependencies_respected() -> None:
    """Dependencies given at include_router time keep the route off the fast path; security there BYPASSes."""
    from fastapi.security import HTTPBearer

    counter: collections.Counter[str] = collections.Counter()

    def counting() -> None:
        counter["include_dep"] += 1

    counted, secured = APIRouter(), APIRouter()

    @counted.get("/counted")
    @cacheframe.cache(ttl=60)
    async def counted_view() -> dict[str, int]:
        counter["counted"] += 1
        return {"ok": 1}

    @secured.get("/secured")
    @cacheframe.cache(ttl=60)
    async def secured_view() -> dict[str, int]:
        counter["secured"] += 1
        return {"ok": 1}

    app = FastAPI()
    app.include_router(counted, prefix="/c", dependencies=[Depends(counting)])
    app.include_router(secured, prefix="/s", dependencies=[Depends(HTTPBearer(auto_error=False))])
    fastpath.install(app)
    client = TestClient(app)
    for _ in range(3):
        client.get("/c/counted")
    assert counter["include_dep"] == 3 and counter["counted"] == 1 and fast_hits() == 0
    assert {client.get("/s/secured").headers["x-cache"] for _ in range(2)} == {"BYPASS"}
    assert counter["secured"] == 2
