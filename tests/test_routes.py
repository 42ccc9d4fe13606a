"""What a route's dependency tree tells the cache: header and cookie names, what never
caches, and where each security scheme's credential travels."""

import functools
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Body, Cookie, Depends, FastAPI, Header, Request, Security
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
from pydantic import AliasChoices, AliasPath, BaseModel, ConfigDict, Field, Json

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


class ByName(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    tenant_id: str | None = Field(None, alias="X-Tenant")
    plain_name: str | None = None
    chosen: str | None = Field(None, validation_alias=AliasChoices("c-one", "c_two"))
    validated: str | None = Field(None, validation_alias="V_Alias")


class OnlyByName(BaseModel):
    model_config = ConfigDict(validate_by_alias=False, validate_by_name=True)
    some_field: str | None = Field(None, alias="ignored")


class Anything(BaseModel):
    model_config = ConfigDict(extra="allow")
    known: str | None = None


class Nested(BaseModel):
    inner: int = 0


class Holder(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    nested_thing: Json[Nested] | None = None


def _dep(
    d_header: Annotated[str | None, Header(alias="X-Dep")] = None,
    d_cookie: Annotated[str | None, Cookie(validation_alias="dep_cookie")] = None,
) -> None:
    return None


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/all")
    async def every_shape(
        _: Annotated[None, Depends(_dep)],
        plain_header: Annotated[str | None, Header()] = None,
        kept_underscore: Annotated[str | None, Header(convert_underscores=False)] = None,
        aliased: Annotated[str | None, Header(alias="X-Aliased")] = None,
        validated: Annotated[str | None, Header(validation_alias="X-Real")] = None,
        choices: Annotated[str | None, Header(validation_alias=AliasChoices("x-one", "X_Two"))] = None,
        path_alias: Annotated[str | None, Header(validation_alias=AliasPath("x-path", 0))] = None,
        model: Annotated[ByName | None, Header()] = None,
        by_name: Annotated[OnlyByName, Header()] = None,  # type: ignore[assignment]
        holder: Annotated[Holder, Header()] = None,  # type: ignore[assignment]
        json_header: Annotated[Json[dict[str, int]] | None, Header()] = None,
        session: Annotated[str | None, Cookie(validation_alias="Sess")] = None,
        cookie_model: Annotated[ByName, Cookie()] = None,  # type: ignore[assignment]
    ) -> None:
        return None

    return app


def _fastapi_reads(route: Any, kind: str) -> set[str]:
    """Every name FastAPI's own helpers may read ``kind`` parameters under."""
    from fastapi.dependencies.utils import _get_param_aliases, _get_param_model, get_cached_model_fields

    from cacheframe.routes import _walk

    names: set[str] = set()
    for node in _walk(route.dependant):
        for field in getattr(node, f"{kind}_params"):
            model = _get_param_model(field)
            if model is None:
                names |= {name for _, name in _get_param_aliases(field)}
                continue
            default = getattr(field.field_info, "convert_underscores", True)
            for sub in get_cached_model_fields(model):
                convert = kind == "header" and getattr(sub.field_info, "convert_underscores", default)
                names |= {name for _, name in _get_param_aliases(sub, convert_underscores=convert)}
    return {n.lower() for n in names} if kind == "header" else names


def test_header_and_cookie_names_are_those_fastapi_reads() -> None:
    """Keyed names equal the names FastAPI reads: aliases, validation aliases, choices, by-name, models."""
    route = _app().routes[-1]
    info = route_info(route)
    assert set(info.header_names) == _fastapi_reads(route, "header")
    assert set(info.cookie_names) == _fastapi_reads(route, "cookie")
    assert {"x-real", "x-one", "x_two", "x-dep", "x-tenant", "tenant-id", "some-field"} <= set(
        info.header_names
    )
    assert {"Sess", "dep_cookie", "c-one", "c_two"} <= set(info.cookie_names)
    assert info.uncacheable is None


def test_body_and_reading_every_header_make_a_route_uncacheable() -> None:
    """A body parameter, or a header/cookie model with extra='allow', is recorded as uncacheable."""
    app = FastAPI()

    @app.get("/body")
    async def body(payload: Annotated[dict[str, int], Body()]) -> None:
        return None

    @app.get("/headers")
    async def headers(h: Annotated[Anything, Header()]) -> None:
        return None

    @app.get("/cookies")
    async def cookies(c: Annotated[Anything, Cookie()]) -> None:
        return None

    reasons = {
        r.path: route_info(r).uncacheable for r in app.routes if r.path in ("/body", "/headers", "/cookies")
    }
    assert "body" in (reasons["/body"] or "")
    assert "every header" in (reasons["/headers"] or "")
    assert "every cookie" in (reasons["/cookies"] or "")
