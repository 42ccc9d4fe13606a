"""The ASGI fast path: answer provably safe hits before routing and dependency solving.

``cacheframe.fastpath.install(app)`` adds :class:`FastPath` as the innermost
middleware: every user middleware (authentication, CORS, GZip, sessions) still
runs, but a hit on an eligible route is answered without FastAPI's routing,
dependency solving or the endpoint call. Anything else goes on unchanged.

A route is eligible when all of these hold (decided from FastAPI's own
dependant information the first time the route is seen):

- its endpoint is the ``@cache`` wrapper itself (no decorator stacked above
  it), without ``vary``, ``private`` or a custom ``key_builder``;
- its dependency tree holds nothing: no ``Depends``/``Security`` (route-,
  router- or app-level), no ``Header``/``Cookie`` parameters, no body;
- the request is GET or HEAD without ``Authorization``, ``Cache-Control`` or
  ``Pragma``.

The key is computed exactly as the decorator path computes it, and the reply
carries the same bytes and headers (ETag, Age, max-age, X-Cache). A query that
FastAPI would reject (422) never produced an entry, so it always reaches
FastAPI. Misses and stale entries go through the full path, which is told
what the fast path already read so the store is not asked twice. A failure in
the fast path's own code is logged and the request goes on to the full path.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from . import http
from .cache import STORE_DOWN
from .envelope import ResponseEntry
from .routes import is_api_route, route_info
from .views import CHECKED, reply_headers, scan_headers, view_key

if TYPE_CHECKING:
    from .decorator import Decorator

__all__ = ["CHECKED", "FastPath", "install"]

log = logging.getLogger("cacheframe")
_SKIP_HEADERS = frozenset({b"authorization", b"cache-control", b"pragma"})
_NOT_ELIGIBLE: Any = object()


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
        try:
            hit = await self._hit(scope)
        except Exception as exc:  # cacheframe's own failure: the full path answers instead
            log.error("cacheframe: fast path failed on %s; passed on", scope["path"], exc_info=exc)
            scope.pop(CHECKED, None)
            hit = None
        if hit is None:
            await self.app(scope, receive, send)
            return
        status, raw, body = hit
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    async def _hit(self, scope: Scope) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """The reply to a fresh hit on an eligible route (status, headers, body), else None."""
        target = self._eligible(scope)
        if target is _NOT_ELIGIBLE:
            return None
        decorator, func = target
        bound = decorator.bind(func)
        cache = bound.cache
        if not cache.settings.enabled:
            return None
        host, _, _, _, if_none_match = scan_headers(scope["headers"])  # as the decorator path reads them
        key = view_key(bound, scope, host)
        entry = cache.read_nowait(key) if cache.in_process else await cache.read_shared(key)
        if entry is STORE_DOWN or not isinstance(entry, ResponseEntry) or entry.age() >= entry.ttl:
            scope[CHECKED] = (key, entry)
            return None
        cache.stats.hits += 1
        cache.stats.fast_hits += 1
        extra = reply_headers(decorator.policy, bound, entry, b"HIT", int(entry.age()))
        if if_none_match is not None and http.none_match(if_none_match, entry.etag):
            return 304, [h for h in entry.headers if h[0] == b"vary"] + extra, b""
        body = b"" if scope["method"] == "HEAD" else entry.body
        return entry.status, entry.headers + extra, body

    def _eligible(self, scope: Scope) -> Any:
        """(decorator, function) of the route this request reaches, if it may take the fast path."""
        marker = (scope["method"], scope.get("root_path", ""), scope["path"])
        decision = self._decisions.get(marker)
        if decision is None:
            decision = self._decide(scope)
            self._decisions[marker] = decision
        return decision

    def _decide(self, scope: Scope) -> Any:
        return _first_full_match(self.router.routes, scope)


def _first_full_match(routes: Any, scope: Scope) -> Any:
    for route in routes:
        candidates = getattr(route, "effective_candidates", None)  # an included router (FastAPI ≥ 0.16x)
        if candidates is not None:
            found = _first_full_match(candidates() if callable(candidates) else candidates, scope)
            if found is not _NOT_ELIGIBLE:
                return found
            continue
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return _route_target(route)
        # A PARTIAL match (wrong method) may still be followed by a FULL one.
    return _NOT_ELIGIBLE


def _route_target(route: Any) -> Any:
    if not is_api_route(route):
        return _NOT_ELIGIBLE
    decorator: Decorator | None = getattr(route.endpoint, "__cacheframe__", None)
    func = getattr(route.endpoint, "__wrapped__", None)
    if decorator is None or func is None or hasattr(func, "__cacheframe__"):
        # The last: a decorator stacked above @cache (a gate, a rate limiter) must run on every hit.
        return _NOT_ELIGIBLE
    policy = decorator.policy
    if policy.vary or policy.private or policy.key_builder is not None:
        return _NOT_ELIGIBLE
    info = route_info(route)
    dependant = route.dependant
    if (
        info.has_dependencies
        or info.has_security
        or info.header_names
        or info.cookie_names
        or getattr(dependant, "body_params", None)
    ):
        return _NOT_ELIGIBLE
    return decorator, func
