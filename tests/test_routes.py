"""What a route's dependency tree tells the cache: header and cookie names, and what never caches."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, Cookie, Depends, FastAPI, Header
from pydantic import AliasChoices, AliasPath, BaseModel, ConfigDict, Field, Json

from cacheframe.routes import route_info


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
