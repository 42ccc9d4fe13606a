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


# -- the fast path serves only what it can prove (issue 10, section 1) ---------------------------


def _auth_route_class() -> type:
    """An APIRoute subclass whose handler refuses requests without ``X-Auth``."""
    from fastapi.routing import APIRoute
    from starlette.responses import PlainTextResponse

    class AuthRoute(APIRoute):
        def get_route_handler(self):  # type: ignore[no-untyped-def]
            handler = super().get_route_handler()

            async def guarded(request: Request):  # type: ignore[no-untyped-def]
                if request.headers.get("x-auth") != "ok":
                    return PlainTextResponse("no", status_code=401)
                return await handler(request)

            return guarded

    return AuthRoute


class _Refuse:
    """ASGI middleware answering 401 unless ``X-Auth: ok`` (stands for route or router middleware)."""

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if (b"x-auth", b"ok") not in scope["headers"]:
            from starlette.responses import PlainTextResponse

            await PlainTextResponse("no", status_code=401)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _guarded_app(shape: str) -> FastAPI:
    """A cached /g/page whose guard lives in a place the fast path would skip."""
    app = FastAPI()
    router = APIRouter(route_class=_auth_route_class()) if shape == "included route_class" else APIRouter()
    if shape == "app route_class":
        app.router.route_class = _auth_route_class()
    target = app.router if shape in ("app route_class", "route.app wrapped", "route.handle") else router

    @target.get("/g/page")
    @cacheframe.cache(ttl=60)
    async def page() -> dict[str, int]:
        return {"secret": 1}

    if target is router:
        if shape == "router subclass":

            class Guarded(APIRouter):
                async def handle(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
                    await _Refuse(super().handle)(scope, receive, send)

            outer = Guarded()
            outer.include_router(router)
            app.include_router(outer)
        else:
            app.include_router(router)
    route = next((r for r in app.router.routes if getattr(r, "path", None) == "/g/page"), None)
    if shape == "route.app wrapped":
        route.app = _Refuse(route.app)  # type: ignore[union-attr]
    elif shape == "route.handle":
        route.handle = _Refuse(route.handle)  # type: ignore[union-attr,method-assign]
    elif shape == "router middleware":
        app.router.middleware_stack = _Refuse(app.router.middleware_stack)
    fastpath.install(app)
    return app


@pytest.mark.parametrize(
    "shape",
    [
        "app route_class",
        "included route_class",
        "route.app wrapped",
        "route.handle",
        "router subclass",
        "router middleware",
    ],
)
def test_guard_the_fast_path_would_skip_still_refuses(shape: str) -> None:
    """A guard in a route class, route app, router or router middleware refuses once an entry exists."""
    client = TestClient(_guarded_app(shape))
    assert client.get("/g/page", headers={"X-Auth": "ok"}).json() == {"secret": 1}
    assert client.get("/g/page", headers={"X-Auth": "ok"}).headers["x-cache"] == "HIT"
    refused = client.get("/g/page")
    assert refused.status_code == 401 and refused.text == "no"
    assert fast_hits() == 0


def test_plain_routes_beside_a_route_class_stay_fast() -> None:
    """A route class on one router does not take plain routes elsewhere off the fast path."""
    app = _guarded_app("included route_class")

    @app.get("/plain")
    @cacheframe.cache(ttl=60)
    async def plain() -> dict[str, int]:
        return {"ok": 1}

    client = TestClient(app)
    client.get("/plain")
    assert client.get("/plain").headers["x-cache"] == "HIT" and fast_hits() == 1


def test_first_matching_route_wins_even_when_not_fast() -> None:
    """A request FastAPI routes to a guarded route is never answered from a later route's entry."""
    from fastapi import HTTPException

    def token(request: Request) -> None:  # reads no parameter: the guarded view keys by URL alone
        if request.headers.get("x-token") != "ok":
            raise HTTPException(403)

    app = FastAPI()
    router = APIRouter()

    @router.get("/x/{name}")
    @cacheframe.cache(ttl=60, namespace="shared")
    async def guarded(name: str, _: Annotated[None, Depends(token)]) -> dict[str, str]:
        return {"guarded": name}

    app.include_router(router)

    @app.get("/x/special")
    @cacheframe.cache(ttl=60, namespace="shared")
    async def special() -> dict[str, str]:
        return {"special": "never reached"}

    fastpath.install(app)
    client = TestClient(app)
    assert client.get("/x/special", headers={"X-Token": "ok"}).json() == {"guarded": "special"}
    assert client.get("/x/special").status_code == 403
    assert fast_hits() == 0


def test_decorator_above_cache_is_not_fast() -> None:
    """An endpoint that is not @cache's own wrapper (a decorator above it) is never fast."""
    import functools

    from cacheframe.fastpath import _NOT_ELIGIBLE, _route_target

    def logged(func):  # type: ignore[no-untyped-def]
        @functools.wraps(func)
        async def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            return await func(*args, **kwargs)

        return wrapper

    app = FastAPI()

    @app.get("/wrapped")
    @logged
    @cacheframe.cache(ttl=60)
    async def wrapped() -> dict[str, int]:
        return {"ok": 1}

    @app.get("/direct")
    @cacheframe.cache(ttl=60)
    async def direct() -> dict[str, int]:
        return {"ok": 1}

    routes = {r.path: r for r in app.routes if hasattr(r, "endpoint")}
    assert _route_target(routes["/wrapped"]) is _NOT_ELIGIBLE
    assert _route_target(routes["/direct"]) is not _NOT_ELIGIBLE


def test_route_matching_on_headers_before_a_cached_route_is_honoured() -> None:
    """A route that claims requests by a header is never bypassed by a decision kept per path."""
    from starlette.responses import PlainTextResponse
    from starlette.routing import Match, Route

    class BetaRoute(Route):
        """Claims requests carrying ``X-Beta``: routing by more than the path."""

        def matches(self, scope):  # type: ignore[no-untyped-def]
            if (b"x-beta", b"1") not in scope["headers"]:
                return Match.NONE, {}
            return super().matches(scope)

    async def beta(request: Request) -> PlainTextResponse:
        return PlainTextResponse("beta")

    app = FastAPI()
    app.router.routes.append(BetaRoute("/page", beta))

    @app.get("/page")
    @cacheframe.cache(ttl=60)
    async def page() -> dict[str, str]:
        return {"public": "page"}

    fastpath.install(app)
    client = TestClient(app)
    assert client.get("/page").json() == {"public": "page"}
    assert client.get("/page").headers["x-cache"] == "HIT"
    assert client.get("/page", headers={"X-Beta": "1"}).text == "beta"
