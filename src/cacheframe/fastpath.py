"""The ASGI fast path: answer provably safe hits before routing and dependency solving.

``cacheframe.fastpath.install(app)`` adds :class:`FastPath` as the innermost
middleware: every user middleware (authentication, CORS, GZip, sessions) still
runs, but a hit on an eligible route is answered without FastAPI's routing,
dependency solving or the endpoint call. Anything else goes on unchanged.

The rule: a hit is served here only when nothing of the app's could run
between routing and the endpoint that this shortcut would skip. Whatever
cannot be proven goes the full path. Decided once per (method, path), a
request is served here only when all of these hold:

- the app's router, and every router on the way to the route, is FastAPI's
  own ``APIRouter`` (the exact class, ``matches``/``handle``/``app`` not
  replaced on the instance), with no router middleware;
- the route is FastAPI's own ``APIRoute`` (the exact class, not a
  ``route_class`` subclass: its ``get_route_handler`` could refuse a request),
  or FastAPI's effective context of one for an included router, with
  ``matches``/``handle``/``get_route_handler`` not replaced on the instance,
  and its ASGI app the one FastAPI built (no route middleware, no body limit);
- its endpoint is the ``@cache`` wrapper itself (no decorator above it),
  without ``vary``, ``private`` or a custom ``key_builder``;
- its dependency tree holds nothing: no ``Depends``/``Security`` (route-,
  router- or app-level; so ``dependency_overrides`` have nothing to replace),
  no ``Header``/``Cookie`` parameters, no body;
- the first route FastAPI would pick for the request is that route, and every
  route before it matches by method and path alone (a ``Host`` route, or any
  route class with its own ``matches``, stops the walk: the decision is kept
  per method and path, so it must not depend on headers);
- the request is GET or HEAD without ``Authorization``, ``Cache-Control`` or
  ``Pragma``, with at most one ``Host`` header.

App-level middleware (user middleware included) runs either way: this one is
the innermost. Route ``callbacks`` only document the API and never run.

The key is computed exactly as the decorator path computes it, and the reply
carries the same bytes and headers (ETag, Age, max-age, X-Cache). A query that
FastAPI would reject (422) never produced an entry, so it always reaches
FastAPI. Misses and stale entries go through the full path, which is told
what the fast path already read so the store is not asked twice. A failure in
the fast path's own code is logged and the request goes on to the full path.
"""

from __future__ import annotations

import logging
from typing import Any

from cachetools import LRUCache
from fastapi.routing import APIRoute, APIRouter, APIWebSocketRoute
from starlette.routing import Match, Mount, Route, Router, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from . import http, keys
from ._authority import request_authority
from ._engine import FRESH, HIT, Bindable, Binding
from ._gateway import NEEDS_IO
from ._replies import CHECKED, Reply, hit_headers, reply
from ._stamps import Deps
from .envelope import ResponseEntry
from .routes import route_info

__all__ = ["CHECKED", "FastPath", "install"]

log = logging.getLogger("cacheframe.views")
_SKIP_HEADERS = frozenset({b"authorization", b"cache-control", b"pragma"})
_NOT_ELIGIBLE: Any = object()
_NO_MATCH: Any = object()
# Methods that, replaced on an instance, would route or handle differently from the class.
_ROUTE_METHODS = frozenset({"matches", "handle", "get_route_handler"})
_ROUTER_METHODS = frozenset({"matches", "handle", "app"})
_PLAIN_ROUTERS = (APIRouter, Router)
# matches() that look at the scope's type, method and path only (not Host's, not Accept's).
_PATH_MATCHERS = frozenset(
    {APIRoute.matches, APIWebSocketRoute.matches, Route.matches, Mount.matches, WebSocketRoute.matches}
)

try:  # FastAPI >= 0.16x: included routers stay routers, their routes served through contexts
    from fastapi.routing import _EffectiveRouteContext, _IncludedRouter
except ImportError:  # pragma: no cover - older FastAPI copies included routes into the app
    _EffectiveRouteContext = _IncludedRouter = None  # type: ignore[assignment,misc]


def install(app: Any) -> None:
    """Add the fast path as the innermost middleware of a Starlette/FastAPI app."""
    from starlette.middleware import Middleware

    if any(m.cls is FastPath for m in app.user_middleware):
        return
    app.user_middleware.append(Middleware(FastPath, router=app.router))  # appended = innermost


class FastPath:
    """ASGI middleware serving eligible hits straight from the store."""

    def __init__(self, app: ASGIApp, router: Any, max_paths: int = 10_000) -> None:
        self.app = app
        self.router = router
        self._decisions: LRUCache[tuple[str, str, str], Any] = LRUCache(max_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        for name, _ in scope["headers"]:
            if name in _SKIP_HEADERS:
                await self.app(scope, receive, send)
                return
        found = None
        try:
            hit = None
            found = self._lookup(scope)
            if found is not None:
                binding, key, if_none_match, deps, read = found
                if read is NEEDS_IO:  # a network store: the one await of a hit
                    read = await binding.engine.gateway.read_stamped(key, deps.keys)
                hit = _reply(scope, binding, key, if_none_match, deps, read)
        except Exception as exc:  # cacheframe's own failure: the full path answers instead
            what = found[0].qualname if found is not None else "a request"
            log.error("cacheframe: fast path failed on %s; passed on", what, exc_info=exc)
            scope.pop(CHECKED, None)
            hit = None
        if hit is None:
            await self.app(scope, receive, send)
            return
        status, raw, body = hit
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    def _lookup(self, scope: Scope) -> Any:
        """(binding, key, If-None-Match, stamps, (entry, tokens) or ``NEEDS_IO``) for an eligible
        request whose entries' stamps the full path already made known, else None. An
        in-process store is read here, without a coroutine."""
        target = self._eligible(scope)
        if target is _NOT_ELIGIBLE:
            return None
        decorator, func = target
        binding = decorator.bind(func)
        engine = binding.engine
        if not engine.settings.enabled:
            return None
        host, _, _, _, if_none_match = http.scan_request_headers(scope["headers"])  # as the decorator path
        if host is None:  # several Host headers: the full path answers BYPASS
            return None
        authority = request_authority(host, scope)
        key = keys.url_key(binding.url_keys, binding.namespace, scope, authority, engine.stamps.place)
        deps = engine.key_deps.get(key)
        if deps is None:  # the stamps are those of the view's arguments: the full path knows them
            return None
        return binding, key, if_none_match, deps, engine.gateway.peek_stamped(key, deps.keys)

    def _eligible(self, scope: Scope) -> Any:
        """(decorator, function) of the route this request reaches, if it may take the fast path."""
        marker = (scope["method"], scope.get("root_path", ""), scope["path"])
        decision = self._decisions.get(marker)
        if decision is None:
            decision = self._decide(scope)
            self._decisions[marker] = decision
        return decision

    def _decide(self, scope: Scope) -> Any:
        if not _plain_router(self.router, _PLAIN_ROUTERS):
            return _NOT_ELIGIBLE
        found = _first_full_match(self.router.routes, scope)
        return _NOT_ELIGIBLE if found is _NO_MATCH else found


def _reply(
    scope: Scope, binding: Binding, key: str, if_none_match: str | None, deps: Deps, read: Any
) -> Reply | None:
    """The reply to a fresh hit (status, headers, body), as the decorator path makes it; else
    None, telling the full path what was read so the store is not asked twice."""
    engine = binding.engine
    entry, tokens = read
    # Anything but a response entry (absent, store down, damaged) is the full path's to classify
    # and count: counted here too, a damaged entry would be reported twice.
    if (
        type(entry) is not ResponseEntry
        or engine.classify(binding, key, entry, ResponseEntry, fast=True, sealing=(deps, tokens)) != FRESH
    ):
        scope[CHECKED] = (key, entry, tokens, deps)
        return None
    age = int(entry.age())
    if if_none_match is None and scope["method"] == "GET":
        return entry.status, hit_headers(binding, key, entry, age), entry.body
    return reply(binding, entry, HIT, age, if_none_match, scope["method"] == "HEAD")


def _first_full_match(routes: Any, scope: Scope, plain: bool = True) -> Any:
    """The fast-path target of the route FastAPI would pick, _NOT_ELIGIBLE, or _NO_MATCH
    (``plain``: every router on the way is FastAPI's own)."""
    for route in routes:
        if _IncludedRouter is not None and isinstance(route, _IncludedRouter):
            inner = route.original_router
            if type(route) is not _IncludedRouter or _own_matches(inner, APIRouter):
                return _NOT_ELIGIBLE  # it may claim this request its own way: cannot mirror it
            inner_plain = plain and _plain_router(inner, (APIRouter,))
            found = _first_full_match(route.effective_candidates(), scope, inner_plain)
            if found is not _NO_MATCH:
                return found  # FastAPI serves the first full match, eligible or not
            continue
        if not _path_only(route):
            return _NOT_ELIGIBLE  # it may match by more than the path: the decision could not be kept
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return _route_target(route) if plain else _NOT_ELIGIBLE
        # A PARTIAL match (wrong method) may still be followed by a FULL one.
    return _NO_MATCH


def _path_only(route: Any) -> bool:
    """``route`` matches by method and path alone, as this walk calls it (so a decision made
    for one method and path holds for every request to them, whatever their headers)."""
    if "matches" in vars(route):
        return False
    if _EffectiveRouteContext is not None and type(route) is _EffectiveRouteContext:
        # FastAPI asks an APIRoute's own matches() (the context's when it is not overridden).
        original = route.original_route
        if isinstance(original, APIRoute):
            return _path_only(original)
        return route.starlette_route is not None and _path_only(route.starlette_route)
    return type(route).matches in _PATH_MATCHERS


def _own_matches(obj: Any, base: Any) -> bool:
    """``obj`` matches requests by other code than ``base.matches``."""
    return type(obj).matches is not base.matches or "matches" in vars(obj)


def _plain_router(router: Any, classes: tuple[type, ...]) -> bool:
    """One of ``classes`` exactly, no routing method replaced, no router middleware."""
    return (
        type(router) in classes
        and not _ROUTER_METHODS & vars(router).keys()
        and router.middleware_stack == router.app  # bound methods: equal when the same
    )


def _stock_app(app: Any) -> bool:
    """The ASGI app FastAPI builds for a route (``request_response``), unwrapped."""
    return getattr(app, "__module__", None) == "fastapi.routing" and (
        getattr(app, "__qualname__", None) == "request_response.<locals>.app"
    )


def _plain_route(route: Any) -> bool:
    """FastAPI's own ``APIRoute``, or its effective context, as FastAPI built it."""
    original: Any
    if type(route) is APIRoute:
        original = route
    elif _EffectiveRouteContext is not None and type(route) is _EffectiveRouteContext:
        original = route.original_route
        if type(original) is not APIRoute or _ROUTE_METHODS & vars(route).keys():
            return False
    else:
        return False
    return not _ROUTE_METHODS & vars(original).keys() and _stock_app(route.app)


def _route_target(route: Any) -> Any:
    if not _plain_route(route):
        return _NOT_ELIGIBLE
    endpoint = route.endpoint
    decorator: Bindable | None = getattr(endpoint, "__cacheframe__", None)
    func = getattr(endpoint, "__wrapped__", None)
    if decorator is None or func is None or getattr(func, "__cacheframe__", None) is not None:
        return _NOT_ELIGIBLE  # not @cache's own wrapper: a decorator above it would be skipped
    policy = decorator.policy
    if policy.vary or policy.private or policy.key_builder is not None:
        return _NOT_ELIGIBLE
    info = route_info(route)
    dependant = route.dependant
    if (
        info.has_dependencies
        or info.uncacheable is not None
        or info.has_security
        or info.header_names
        or info.cookie_names
        or getattr(dependant, "body_params", None)
    ):
        return _NOT_ELIGIBLE
    return decorator, func
