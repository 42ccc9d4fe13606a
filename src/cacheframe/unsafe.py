"""RFC 9111 §4.4: a successful unsafe request invalidates its target URI's stored GET entries.

When POST, PUT, PATCH or DELETE on a decorated route is answered 2xx or 3xx, every
decorated GET route of the same app that serves that path has its entries for the path
cleared: every variant (any Host, query, varied header or user), since a view's store key
puts a digest of the path (:func:`cacheframe.keys.uri_segment`) right after its namespace.
The clear reaches the store, so every process sharing it stops serving those entries, and
this process's misses already running do not write theirs back (``Cache.invalidations``).
A miss running in another process at that moment may still write back its older response:
the RFC asks no more, and closing that gap needs a store round trip on every hit.

The Location and Content-Location targets are not invalidated (yet). A failing store is
logged, never raised: the unsafe request itself has already succeeded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from starlette.responses import Response
from starlette.routing import Match

from . import keys
from .cache import STORE_ERRORS
from .exceptions import BackendError, CacheframeError

if TYPE_CHECKING:
    from .cache import Cache
    from .decorator import Decorator

__all__ = ["METHODS", "invalidate", "succeeded"]

log = logging.getLogger("cacheframe")
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
        bound = decorator.bind(func)
        cache = bound.cache
        cache.invalidations += 1  # before the clear: a miss running now must not write back
        try:
            await _clear(cache, bound.namespace, segment)
        except CacheframeError as exc:  # fail_open=False raises; the request succeeded anyway
            log.warning("cacheframe: %s %s: invalidation failed: %s", scope["method"], scope["path"], exc)
        cleared += 1
    return cleared


class _Batches:
    """The clears of one namespace in one loop: the one running, and the next one (not
    started yet) with the path segments it will cover."""

    __slots__ = ("next", "segments", "task")

    def __init__(self) -> None:
        self.next: asyncio.Future[bool] | None = None
        self.segments: set[str] = set()
        self.task: asyncio.Task[None] | None = None


async def _clear(cache: Cache, namespace: str, segment: str) -> None:
    """Clear ``namespace + segment``, sharing work across paths: every request joins the next
    clear of its namespace (which starts after it joined, so it covers its write), and one
    clear at a time runs per namespace and loop. A next clear covering several paths clears
    the whole namespace (more than asked, never less). On Redis a clear is a SCAN of the
    keyspace, so a flood of unsafe requests to many paths costs one running clear, not one
    per request."""
    loop = asyncio.get_running_loop()
    slot = (loop, namespace)
    batches = cache.clearing.get(slot)
    if batches is None:
        batches = cache.clearing[slot] = _Batches()
    if batches.next is None:
        batches.next = loop.create_future()
    batches.segments.add(segment)
    mine = batches.next
    if batches.task is None:
        batches.task = loop.create_task(_drive(cache, slot, namespace, batches))
    if await asyncio.shield(mine):
        return
    # That clear failed or was cancelled: clear this path alone (raising what the store raises).
    await _store_clear(cache, namespace + segment)


async def _drive(cache: Cache, slot: Any, namespace: str, batches: _Batches) -> None:
    """Run the namespace's queued clears one after another until none is queued."""
    try:
        while batches.next is not None:
            future, segments = batches.next, batches.segments
            batches.next, batches.segments = None, set()
            prefix = namespace + next(iter(segments)) if len(segments) == 1 else namespace
            done = False
            try:
                await _store_clear(cache, prefix)
                done = True
            except Exception as exc:  # its waiters clear their own paths, and see the error
                log.debug("cacheframe: shared clear of %s failed: %s", prefix, exc)
            finally:
                future.set_result(done)
    finally:
        cache.clearing.pop(slot, None)
        if batches.next is not None:  # cancelled with a clear queued: its waiters clear themselves
            batches.next.set_result(False)


async def _store_clear(cache: Cache, prefix: str) -> None:
    """One store clear, outside the circuit breaker's count: on Redis a clear SCANs the whole
    keyspace, so its failing (timing out on a large store) says nothing of the store's health,
    and a flood of unsafe requests must not open the circuit and turn every read into a
    bypass. While the circuit is open (reads found the store down) the clear is skipped."""
    if cache.breaker.opened_at is not None:
        cache.stats.short_circuited += 1
        if not cache.settings.fail_open:
            raise BackendError(f"{cache!r}: circuit open after repeated store failures")
        return
    try:
        await cache.backend.clear(prefix)
    except STORE_ERRORS as exc:
        cache.stats.backend_errors += 1
        now = time.monotonic()
        if now - _warned.get(id(cache), float("-inf")) >= _WARN_INTERVAL:
            _warned[id(cache)] = now
            log.warning(
                "cacheframe: clearing %s failed (%s: %s); further failures not logged for %.0f s",
                prefix,
                type(exc).__name__,
                exc,
                _WARN_INTERVAL,
            )


_WARN_INTERVAL = 60.0
_warned: dict[int, float] = {}  # id(cache) -> when its last clear failure was logged


def _get_routes(scope: Any) -> list[tuple[Decorator, Any]]:
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
    found: list[tuple[Decorator, Any]] = []
    _collect(getattr(router, "routes", ()), probe, found)
    return found


def _collect(routes: Any, probe: dict[str, Any], found: list[tuple[Decorator, Any]]) -> None:
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
