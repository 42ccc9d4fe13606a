"""What a FastAPI route's dependency tree tells the cache, computed once per route.

Header and Cookie parameters (the route's own and its dependencies') become
part of the key, under every name FastAPI may read them by; a body parameter,
or a parameter model that reads every header or cookie, makes requests BYPASS;
a security dependency makes requests BYPASS unless the decorator keys per
user, and then the credential of every security scheme is keyed where it
travels; any dependency at all keeps the route off the ASGI fast path.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import UnionType
from typing import Any, Union, get_args, get_origin

from fastapi.routing import APIRoute
from fastapi.security import (
    APIKeyCookie,
    APIKeyHeader,
    APIKeyQuery,
    HTTPBasic,
    HTTPBearer,
    HTTPDigest,
    OAuth2,
    OAuth2AuthorizationCodeBearer,
    OAuth2PasswordBearer,
    OpenIdConnect,
)
from fastapi.security.base import SecurityBase
from fastapi.security.http import HTTPBase
from pydantic import AliasChoices, AliasPath, BaseModel, Json

from .exceptions import ConfigurationError

log = logging.getLogger("cacheframe.views")

__all__ = ["RouteInfo", "check_credentials", "effective_route", "path_values", "route_info"]

try:  # FastAPI >= 0.16x serves included routers through an "effective route context"
    from fastapi.routing import _FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY, _FASTAPI_SCOPE_KEY
except ImportError:  # older FastAPI copies included routes, and scope["route"] says it all
    _FASTAPI_SCOPE_KEY = _FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """Cache-relevant facts about one route."""

    header_names: tuple[str, ...] = ()
    cookie_names: tuple[str, ...] = ()
    has_security: bool = False
    has_dependencies: bool = False
    # Where the security schemes' credentials travel (keyed when the decorator keys per user;
    # cookies travel in the Cookie header, which is keyed then anyway).
    credential_headers: tuple[str, ...] = ()
    credential_query: tuple[str, ...] = ()
    credential_cookies: tuple[str, ...] = ()
    # Why cacheframe cannot tell where some scheme's credential travels ("" when it can).
    opaque_security: str = ""
    # A dependency (not a FastAPI security scheme) receives the Request: it may read per-user state.
    reads_connection: bool = False
    uncacheable: str | None = None  # why every request to the route BYPASSes (a body, say)
    # Each path parameter's name in the path -> (the endpoint's own parameter receiving it, or
    # None when only a dependency reads it; the field FastAPI validates it with).
    path_fields: dict[str, tuple[str | None, Any]] = dataclasses.field(
        default_factory=dict, compare=False, hash=False
    )
    keyed_by_request: bool = dataclasses.field(init=False)  # Header or Cookie parameters: part of the key

    def __post_init__(self) -> None:
        object.__setattr__(self, "keyed_by_request", bool(self.header_names or self.cookie_names))


_EMPTY = RouteInfo()
_NO_CONTEXT: dict[str, Any] = {}
# APIRoute is unhashable; key by id and keep the route so the id cannot be reused.
_cache: dict[int, tuple[Any, RouteInfo]] = {}


def _walk(dependant: Any) -> Iterator[Any]:
    yield dependant
    for sub in getattr(dependant, "dependencies", ()) or ():
        yield from _walk(sub)


def _model_of(field: Any) -> type[BaseModel] | None:
    """The pydantic model of a ``Annotated[Model | None, Header()]``/``Cookie()`` parameter, if any
    (as FastAPI decides it: a ``Json`` parameter is read whole, by its own name)."""
    info = getattr(field, "field_info", None)
    annotation = getattr(info, "annotation", None)
    if get_origin(annotation) in (Union, UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        annotation = args[0] if len(args) == 1 else None
    if any(type(item) is Json for item in getattr(info, "metadata", ())):
        return None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _read_names(name: str, info: Any, config: Any, *, convert: bool) -> list[str]:
    """The request names FastAPI may read one parameter (or one field of a parameter model)
    under: its ``validation_alias`` (a string, or every string of ``AliasChoices``), else its
    ``alias``, else its name (``_`` as ``-`` for headers); plus the plain name when the
    model validates by name. Mirrors FastAPI's ``_get_param_aliases``."""
    choice = getattr(info, "validation_alias", None)
    alias = choice if isinstance(choice, str) and choice else getattr(info, "alias", None) or name
    read = alias.replace("_", "-") if convert and alias == name else alias
    if isinstance(choice, AliasPath) or (
        isinstance(choice, AliasChoices) and not all(isinstance(c, str) for c in choice.choices)
    ):
        return [read]  # FastAPI reads the value under its alias and validates the path on it
    names = [c for c in choice.choices if isinstance(c, str)] if isinstance(choice, AliasChoices) else [read]
    config = config or {}
    by_name = name.replace("_", "-") if convert else name
    if config.get("validate_by_alias") is False:
        return [by_name]
    if config.get("validate_by_name", config.get("populate_by_name", False)):
        names.append(by_name)
    return names


def _names(field: Any, *, header: bool) -> tuple[list[str], bool]:
    """The request header (lower-case) or cookie names one parameter reads, and whether it
    reads every other one too (a parameter model with ``extra="allow"``)."""
    info = getattr(field, "field_info", None)
    model = _model_of(field)
    if model is None:  # FastAPI already turned the name into the header's (x_tenant -> x-tenant)
        names = _read_names(field.name, info, getattr(field, "config", None), convert=False)
        reads_all = False
    else:  # a model parameter reads one header/cookie per model field, and maybe the rest
        convert = header and getattr(info, "convert_underscores", True)
        names = []
        for name, f in model.model_fields.items():
            nested = isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel | dict)
            config = None if nested else model.model_config
            own = header and getattr(f, "convert_underscores", convert)
            names += _read_names(name, f, config, convert=own)
        reads_all = model.model_config.get("extra") == "allow"
    return ([n.lower() for n in names] if header else names), reads_all


def _is_security(node: Any) -> bool:
    """A security scheme, ``Security(...)`` with scopes, or a ``SecurityScopes`` consumer."""
    return bool(
        isinstance(_unwrapped(getattr(node, "call", None)), SecurityBase)
        or getattr(node, "security_scopes_param_name", None)
        or getattr(node, "own_oauth_scopes", None)
        or getattr(node, "security_requirements", None)  # older FastAPI
    )


# FastAPI's schemes whose own ``__call__`` reads the credential from one known place:
# "header"/"cookie"/"query" read ``scheme.model.name`` there; "authorization" the Authorization header.
_KNOWN_SCHEMES: dict[type, str] = {
    APIKeyHeader: "header",
    APIKeyCookie: "cookie",
    APIKeyQuery: "query",
    HTTPBasic: "authorization",
    HTTPBearer: "authorization",
    HTTPDigest: "authorization",
    HTTPBase: "authorization",
    OAuth2: "authorization",
    OAuth2PasswordBearer: "authorization",
    OAuth2AuthorizationCodeBearer: "authorization",
    OpenIdConnect: "authorization",
}


def _unwrapped(call: Any) -> Any:
    """The object FastAPI classifies a dependency by (partials and ``functools.wraps`` undone)."""
    while isinstance(call, functools.partial):
        call = call.func
    try:
        return inspect.unwrap(call)
    except ValueError:  # a __wrapped__ cycle: FastAPI would fail on it too
        return call


def _credential(scheme: SecurityBase, call: Any) -> tuple[str, str] | None:
    """(where, name) of the credential ``scheme`` reads, or None when cacheframe cannot tell.

    Only FastAPI's own schemes, called as they are, with their own ``__call__``: a
    subclass overriding ``__call__``, a wrapper around a scheme, or a custom
    ``SecurityBase`` may read the credential from anywhere.
    """
    if call is not scheme:
        return None
    for cls in type(scheme).__mro__:
        where = _KNOWN_SCHEMES.get(cls)
        if where is not None:
            if type(scheme).__call__ is not cls.__call__:
                return None
            if where == "authorization":
                return "header", "authorization"
            name = getattr(getattr(scheme, "model", None), "name", None)
            if not isinstance(name, str):
                return None
            return where, name.lower() if where == "header" else name
    return None


def _analyse(route: Any) -> RouteInfo:
    headers: list[str] = []
    cookies: list[str] = []
    found: dict[str, set[str]] = {"header": set(), "cookie": set(), "query": set()}
    opaque: list[str] = []
    reads_connection = False
    uncacheable = None
    root = route.dependant
    subs = list(_walk(root))
    for node in subs:
        for field in getattr(node, "header_params", ()):
            names, reads_all = _names(field, header=True)
            headers += names
            if reads_all:
                uncacheable = f"Header model parameter {field.name!r} with extra='allow' reads every header"
        for field in getattr(node, "cookie_params", ()):
            names, reads_all = _names(field, header=False)
            cookies += names
            if reads_all:
                uncacheable = f"Cookie model parameter {field.name!r} with extra='allow' reads every cookie"
        if getattr(node, "body_params", None):  # bodies are not keyed: never cached
            uncacheable = "a body parameter (request bodies are not part of the key)"
        call = getattr(node, "call", None)
        scheme = _unwrapped(call)
        if isinstance(scheme, SecurityBase):
            credential = _credential(scheme, call)
            if credential is None:
                opaque.append(type(scheme).__qualname__)
            else:
                found[credential[0]].add(credential[1])
                continue  # its Request parameter reads only that credential
        if node is not root and (
            getattr(node, "request_param_name", None) or getattr(node, "http_connection_param_name", None)
        ):
            reads_connection = True
    security = any(_is_security(node) for node in subs)
    path_fields: dict[str, tuple[str | None, Any]] = {}
    for node in subs:  # the endpoint's own parameters first: the values the view receives
        for field in getattr(node, "path_params", ()):
            name = getattr(field, "alias", None) or field.name
            path_fields.setdefault(name, (field.name if node is root else None, field))
    reason = _opaque_reason(opaque)
    if reason:
        log.warning(
            "cacheframe: route %s: %s; its requests are not cached even with private=True",
            getattr(route, "path", "?"),
            reason,
        )
    return RouteInfo(
        header_names=tuple(sorted(set(headers))),
        cookie_names=tuple(sorted(set(cookies))),
        has_security=security,
        has_dependencies=len(subs) > 1,
        credential_headers=tuple(sorted(found["header"])),
        credential_query=tuple(sorted(found["query"])),
        credential_cookies=tuple(sorted(found["cookie"])),
        opaque_security=reason,
        reads_connection=reads_connection,
        uncacheable=uncacheable,
        path_fields=path_fields,
    )


def _opaque_reason(opaque: list[str]) -> str:
    if not opaque:
        return ""
    return (
        f"security scheme {', '.join(sorted(set(opaque)))}: cacheframe cannot tell where its "
        "credential travels (a custom SecurityBase, an overridden __call__, or a wrapped scheme)"
    )


def path_values(
    info: RouteInfo, path_params: Mapping[str, Any], kwargs: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The path parameters (by their names in the path) as the route's code receives them:
    the view's own argument (from ``kwargs``, its arguments, when given), else the value the
    field reading it makes of it (the view's, under an alias; a dependency's), else as matched.
    So a view's resource is the same whether a GET names it or an unsafe request's path does,
    whatever the spelling (``/items/03``, ``/items/ABC`` for a lower-cased slug)."""
    fields = info.path_fields
    values = {}
    for name, raw in path_params.items():
        own, field = fields.get(name, (None, None))
        if own is not None and kwargs is not None and own in kwargs:
            values[name] = kwargs[own]
        elif field is not None:
            values[name] = validated(field, name, raw)
        else:
            values[name] = kwargs.get(name, raw) if kwargs is not None else raw
    return values


def validated(field: Any, name: str, value: Any) -> Any:
    """``value`` as FastAPI's ``field`` validates a path parameter; as given when it fails."""
    try:
        converted, errors = field.validate(value, {}, loc=("path", name))
    except Exception:  # a field FastAPI could not validate this way: as given
        return value
    return value if errors else converted


def check_credentials(func: Any) -> None:
    """Raise when a security scheme ``func``'s own parameters depend on cannot be keyed.

    For ``@cache(private=True)`` at decoration time, before the route exists
    (router- and app-level dependencies are checked on the first request).
    """
    from fastapi.dependencies.utils import get_dependant

    try:
        root = get_dependant(path="", call=func)
    except Exception:  # FastAPI reports a signature it cannot read when the route is added
        return
    opaque = []
    for node in _walk(root):
        call = getattr(node, "call", None)
        scheme = _unwrapped(call)
        if isinstance(scheme, SecurityBase) and _credential(scheme, call) is None:
            opaque.append(type(scheme).__qualname__)
    if opaque:
        raise ConfigurationError(
            f"@cache(private=True) (or vary=['Authorization']) on {func.__qualname__}: "
            f"{_opaque_reason(opaque)}. Use FastAPI's own scheme classes (APIKeyHeader, "
            "HTTPBearer, OAuth2PasswordBearer, ...), or cache this view without per-user entries"
        )


def effective_route(scope: Any) -> Any:
    """The route FastAPI serves for this request, with router- and app-level settings applied.

    For a route of an included router, recent FastAPI versions keep the
    combined dependencies and response class in an effective context and put
    the router's own ``APIRoute`` in ``scope["route"]``; prefer the former.
    """
    if _FASTAPI_SCOPE_KEY is not None:
        context = scope.get(_FASTAPI_SCOPE_KEY, _NO_CONTEXT).get(_FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY)
        if context is not None and getattr(context, "dependant", None) is not None:
            return context
    return scope.get("route")


def is_api_route(route: Any) -> bool:
    """An ``APIRoute`` or FastAPI's effective context of one."""
    return isinstance(route, APIRoute) or (
        getattr(route, "dependant", None) is not None
        and isinstance(getattr(route, "original_route", None), APIRoute)
    )


def route_info(route: Any) -> RouteInfo:
    """Facts about ``route`` (an ``APIRoute`` or its effective context); else an empty record."""
    hit = _cache.get(id(route))
    if hit is not None and hit[0] is route:
        return hit[1]
    if not is_api_route(route):
        return _EMPTY
    info = _analyse(route)
    _cache[id(route)] = (route, info)
    return info
