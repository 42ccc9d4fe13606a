"""RFC 9111 §4.4: a successful unsafe request invalidates its target URI's stored GET entries.

When POST, PUT, PATCH or DELETE on a decorated route is answered 2xx or 3xx, every
decorated GET route of the same app that serves that path has its entries for the path
cleared: every variant (any Host, query, varied header or user), since a view's store key
puts a digest of the path (:func:`cacheframe.keys.uri_segment`) right after its namespace.
The clear reaches the store, so every process sharing it stops serving those entries, and
this process's misses already running do not write theirs back (the engine's epoch).
A miss running in another process at that moment may still write back its older response:
the RFC asks no more, and closing that gap needs a store round trip on every hit.

The Location and Content-Location targets are not invalidated (yet). A failing store is
logged, never raised: the unsafe request itself has already succeeded.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.responses import Response
from starlette.routing import Match

from . import keys
from ._engine import Bindable
from .exceptions import CacheframeError

__all__ = ["METHODS", "invalidate", "succeeded"]

log = logging.getLogger("cacheframe.unsafe")
METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def succeeded(value: Any, route: Any, sub: Response | None) -> bool:
    """Whether the view's answer is 2xx or 3xx, by the status FastAPI will send for it
    (a returned ``Response``'s own, else the one set on the injected response, else the
    route's ``status_code``, else 200)."""
    if isinstance(value, Response):
        status = value.status_code
    else:
        status = (sub.status_code if sub is not None else None) or getattr(route, "status_code", None) or 200
    return 200 <= status < 400


async def invalidate(scope: Any) -> int:
    """Clear the stored entries of this request's path for every decorated GET route of the
    app serving it; the number of namespaces cleared."""
    segment = keys.uri_segment(scope.get("root_path", ""), scope["path"])
    cleared = 0
    for decorator, func in _get_routes(scope):
        binding = decorator.bind(func)
        binding.engine.invalidated()  # before the clear: a miss running now must not write back
        binding.engine.observer.on_invalidation(binding.stats_name)
        try:
            await binding.engine.gateway.clear_path(binding.namespace, segment)
        except CacheframeError as exc:  # fail_open=False raises; the request succeeded anyway
            log.warning(
                "cacheframe: invalidating %s after a %s failed: %s", binding.qualname, scope["method"], exc
            )
        cleared += 1
    return cleared


def _get_routes(scope: Any) -> list[tuple[Bindable, Any]]:
    """(decorator, function) of every decorated route a GET to this path could reach."""
    router = getattr(scope.get("app"), "router", None)
    if router is None:
        return []
    probe = {
        "type": "http",
        "method": "GET",
        "path": scope["path"],
        "root_path": scope.get("root_path", ""),
        "headers": scope.get("headers", []),
        "scheme": scope.get("scheme", "http"),
        "server": scope.get("server"),
    }
    found: list[tuple[Bindable, Any]] = []
    _collect(getattr(router, "routes", ()), probe, found)
    return found


def _collect(routes: Any, probe: dict[str, Any], found: list[tuple[Bindable, Any]]) -> None:
    for route in routes:
        candidates = getattr(route, "effective_candidates", None)  # an included router (FastAPI ≥ 0.16x)
        if candidates is not None:
            _collect(candidates() if callable(candidates) else candidates, probe, found)
            continue
        match, _ = route.matches(dict(probe))
        decorator = getattr(getattr(route, "endpoint", None), "__cacheframe__", None)
        func = getattr(getattr(route, "endpoint", None), "__wrapped__", None)
        if match is Match.FULL and decorator is not None and func is not None:
            found.append((decorator, func))
