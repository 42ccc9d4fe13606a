"""What a route's dependency tree tells the cache: where each security scheme's credential travels."""

import functools
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, Request, Security
from fastapi.security import (
    APIKeyCookie,
    APIKeyHeader,
    APIKeyQuery,
    HTTPBasic,
    HTTPBearer,
    HTTPDigest,
    OAuth2AuthorizationCodeBearer,
    OAuth2PasswordBearer,
    OpenIdConnect,
)
from fastapi.security.base import SecurityBase

from cacheframe.routes import RouteInfo, route_info


def info_of(dependency: Any, *, router_level: bool = False) -> RouteInfo:
    """The RouteInfo of a one-route router depending on ``dependency`` (route- or router-level)."""
    router = APIRouter(dependencies=[Depends(dependency)] if router_level else [])
    if router_level:

        @router.get("/x")
        async def x() -> None: ...

    else:

        @router.get("/x")
        async def x(_: Annotated[Any, Security(dependency)]) -> None: ...

    return route_info(router.routes[-1])


@pytest.mark.parametrize(
    ("scheme", "headers", "query", "cookies"),
    [
        (APIKeyHeader(name="X-API-Key"), ("x-api-key",), (), ()),
        (APIKeyCookie(name="key"), (), (), ("key",)),
        (APIKeyQuery(name="api_key"), (), ("api_key",), ()),
        (HTTPBasic(), ("authorization",), (), ()),
        (HTTPBearer(), ("authorization",), (), ()),
        (HTTPDigest(), ("authorization",), (), ()),
        (OAuth2PasswordBearer(tokenUrl="t"), ("authorization",), (), ()),
        (OAuth2AuthorizationCodeBearer(authorizationUrl="a", tokenUrl="t"), ("authorization",), (), ()),
        (OpenIdConnect(openIdConnectUrl="https://id.example"), ("authorization",), (), ()),
    ],
)
def test_known_schemes_name_where_their_credential_travels(
    scheme: Any, headers: tuple[str, ...], query: tuple[str, ...], cookies: tuple[str, ...]
) -> None:
    """Each FastAPI scheme's credential place is found; the scheme itself is no Request reader."""
    info = info_of(scheme)
    assert (info.credential_headers, info.credential_query, info.credential_cookies) == (
        headers,
        query,
        cookies,
    )
    assert info.has_security and not info.opaque_security and not info.reads_connection


def test_router_level_scheme_behind_a_function_is_found() -> None:
    """A scheme reached through a router-level dependency function is keyed too."""
    key = APIKeyHeader(name="X-Key")

    def user(api_key: Annotated[str, Security(key)]) -> str:
        return api_key

    info = info_of(user, router_level=True)
    assert info.credential_headers == ("x-key",) and info.has_security and not info.opaque_security


class Custom(SecurityBase):
    """A scheme of the app's own."""

    async def __call__(self, request: Request) -> str:
        return ""


class OwnCall(HTTPBearer):
    """FastAPI's HTTPBearer with a __call__ of its own."""

    async def __call__(self, request: Request) -> Any:  # type: ignore[override]
        return None


class PlainSubclass(HTTPBearer):
    """FastAPI's HTTPBearer, only renamed."""


def test_unknown_credential_places_are_opaque() -> None:
    """Custom schemes, overridden __call__ and wrapped schemes cannot be located; plain subclasses can."""
    assert "Custom" in info_of(Custom()).opaque_security
    assert "OwnCall" in info_of(OwnCall()).opaque_security
    assert "APIKeyHeader" in info_of(functools.partial(APIKeyHeader(name="k"))).opaque_security
    plain = info_of(PlainSubclass())
    assert not plain.opaque_security and plain.credential_headers == ("authorization",)


def test_request_taking_dependency_is_flagged() -> None:
    """A dependency receiving the Request may read per-user state; the view's own Request is watched."""

    def reads(request: Request) -> str:
        return request.cookies.get("sid", "")

    app = FastAPI()

    @app.get("/a")
    async def a(v: Annotated[str, Depends(reads)]) -> None: ...

    @app.get("/b")
    async def b(request: Request) -> None: ...

    routes = {getattr(r, "path", ""): r for r in app.routes}
    assert route_info(routes["/a"]).reads_connection
    assert not route_info(routes["/b"]).reads_connection
