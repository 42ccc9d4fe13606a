"""The view path of ``@cache``: key a request, replay a stored response, or fill a miss.

A hit replays the stored rendered response (status, headers, body) without
calling the view, validating a response model or encoding JSON. A miss renders
exactly what FastAPI would send, stores it when the HTTP rules allow, and
answers with the same headers a hit would carry.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi.exceptions import ResponseValidationError
from starlette.background import BackgroundTask, BackgroundTasks
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, Response, StreamingResponse

from . import _peruser, http, keys, unsafe
from ._authority import request_authority
from ._render import render
from .cache import STORE_DOWN
from .envelope import ResponseEntry, freshness
from .exceptions import BackendError, EntryError
from .routes import RouteInfo, effective_route, route_info
from .stampede import StoreLock, follow, wait_for_entry

if TYPE_CHECKING:
    from .cache import Cache
    from .decorator import Bound, Policy

__all__ = ["ReplayResponse", "serve"]

log = logging.getLogger("cacheframe")
CHECKED = "cacheframe.checked"  # scope key the fast path sets: (store key, what it read)
CallView = Callable[[], Awaitable[Any]]


class ReplayResponse(Response):
    """A response rebuilt from stored parts, skipping ``Response.__init__``'s work."""

    def __init__(self, status_code: int, raw_headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code = status_code
        self.raw_headers = raw_headers
        self.body = body
        self.background = None


class _Request:
    """Everything about one request that the fill path needs, gathered once."""

    __slots__ = (
        "bound",
        "call_view",
        "dep_headers",
        "if_none_match",
        "info",
        "is_coroutine",
        "key",
        "kwargs",
        "policy",
        "request",
        "route",
        "sub",
    )

    def __init__(
        self,
        policy: Policy,
        bound: Bound,
        key: str,
        request: Request,
        sub: Response | None,
        call_view: CallView,
        route: Any,
        info: RouteInfo,
        is_coroutine: bool,
        kwargs: dict[str, Any],
    ) -> None:
        self.policy, self.bound, self.key, self.request, self.sub = policy, bound, key, request, sub
        self.call_view, self.route, self.info = call_view, route, info
        self.is_coroutine, self.kwargs = is_coroutine, kwargs
        self.if_none_match: str | None = None
        # Headers dependencies set on the shared Response before the view ran: per request,
        # never stored, added to every reply (hit or miss) of this request.
        self.dep_headers = _dep_headers(sub)


def _dep_headers(sub: Response | None) -> list[tuple[bytes, bytes]]:
    """Headers dependencies set on the shared ``Response`` (lower-cased names)."""
    if sub is None or not sub.raw_headers:
        return []
    return [(n.lower(), v) for n, v in sub.raw_headers]


async def serve(
    policy: Policy,
    bound: Bound,
    func: Callable[..., Any],
    request: Request,
    sub: Response | None,
    call_view: CallView | None,
    is_coroutine: bool,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Answer one request to a decorated view (``call_view`` None: ``func(*args, **kwargs)``,
    in a worker thread unless ``is_coroutine``, called only when the view must run).

    The error boundary: the view's own exceptions propagate unchanged (HTTPException
    with its X-Cache label); any other failure is cacheframe's, so it is logged and the
    request answered uncached (BYPASS), running the view only if it has not run yet.
    """
    # The view's call is made only when the view must run (a hit never needs one); the
    # boundary below looks at it to tell the view's own exceptions from cacheframe's.
    view: _ViewCall | None = None
    try:
        cache = bound.cache
        settings = cache.settings
        scope = request.scope
        route = effective_route(scope)
        info = route_info(route)
        host, authorization, cache_control, pragma, if_none_match = scan_headers(scope["headers"])
        if (
            not settings.enabled
            or scope["method"] not in ("GET", "HEAD")
            or host is None  # several Host headers: whose page would this be?
            or info.uncacheable is not None
            or (not policy.keys_auth and (info.has_security or authorization))
            or (policy.keys_auth and info.opaque_security)
        ):
            if policy.keys_auth and info.opaque_security:
                log.debug("cacheframe: not caching %s: %s", scope["path"], info.opaque_security)
            value = await _bypass(
                cache, (view := _ViewCall(call_view, func, args, kwargs, is_coroutine)), sub
            )
            if scope["method"] in unsafe.METHODS and unsafe.succeeded(value, route, sub):
                await unsafe.invalidate(scope)  # RFC 9111 §4.4, before the answer leaves
            return value
        host = request_authority(host, scope)
        directives = http.NO_DIRECTIVES
        if settings.honor_request_cache_control and (cache_control or pragma):
            directives = http.request_directives(cache_control, pragma)
            if directives.no_store:
                return await _bypass(
                    cache, (view := _ViewCall(call_view, func, args, kwargs, is_coroutine)), sub
                )

        if policy.key_builder is None and not (policy.vary or policy.private or info.keyed_by_request):
            key = url_key(bound, scope, host)  # view_key's URL-only case, without its ten arguments
        else:
            custom = None
            if policy.key_builder is not None:
                custom = await keys.custom_key(policy.key_builder, func, request, args, kwargs)
            # A secured route gets here only when the key holds Authorization: key every credential.
            private = policy.private or info.has_security
            keyed_headers = policy.vary or info.header_names or private
            key = view_key(
                bound,
                scope,
                host,
                headers=request.headers if keyed_headers else None,
                cookies=request.cookies if info.cookie_names else {},
                vary=policy.vary_lower,
                header_params=info.header_names,
                cookie_params=info.cookie_names,
                private=private,
                custom=custom,
                credential_headers=info.credential_headers,
                credential_query=info.credential_query,
            )
        if getattr(scope.get("endpoint"), "__wrapped__", func) is not func:
            # A decorator stacked above @cache may have changed the arguments FastAPI solved from
            # the request (injected a user, say): key the arguments the view receives as well.
            arguments = _stacked_arguments(args, kwargs)
            if arguments is None:
                log.debug(
                    "cacheframe: not caching %s: a stacked decorator passes unkeyable arguments",
                    scope["path"],
                )
                return await _bypass(
                    cache, (view := _ViewCall(call_view, func, args, kwargs, is_coroutine)), sub
                )
            key += "~" + arguments
        stale: ResponseEntry | None = None
        reread = not directives.no_cache  # a plain miss re-checks the store once it leads
        entry: Any = None
        if not directives.no_cache:
            checked = scope.get(CHECKED)
            if checked is not None and checked[0] == key:
                entry = checked[1]
            else:
                entry = cache.read_nowait(key) if cache.in_process else await cache.read_shared(key)
            if isinstance(entry, ResponseEntry):
                now = time.time()
                age_seconds = max(0.0, now - entry.created)
                if directives is http.NO_DIRECTIVES and not policy.xfetch_beta:  # freshness(), inlined
                    state = (
                        "fresh"
                        if age_seconds < entry.ttl
                        else freshness(entry, stale_while_revalidate=policy.stale_while_revalidate, now=now)
                    )
                else:
                    state = freshness(
                        entry,
                        max_age=directives.max_age,
                        stale_while_revalidate=policy.stale_while_revalidate,
                        xfetch_beta=policy.xfetch_beta,
                        now=now,
                    )
                if state == "fresh":  # the hot path: no per-request state beyond the reply
                    cache.stats.hits += 1
                    age = int(age_seconds)
                    if (
                        if_none_match is None
                        and scope["method"] == "GET"
                        and (sub is None or not sub.raw_headers)
                    ):
                        return ReplayResponse(
                            entry.status, _hit_headers(policy, bound, entry, age), entry.body
                        )
                    head = scope["method"] == "HEAD"
                    return _replay(policy, bound, entry, b"HIT", age, _dep_headers(sub), if_none_match, head)
        view = _ViewCall(call_view, func, args, kwargs, is_coroutine)
        req = _Request(policy, bound, key, request, sub, view, route, info, is_coroutine, kwargs)
        req.if_none_match = if_none_match
        if not directives.no_cache:
            if entry is STORE_DOWN:  # fail open: compute (once per key here), never write
                cache.stats.bypasses += 1
                return await _fill(req, None, use_store=False)
            if isinstance(entry, ResponseEntry):
                if state == "stale":
                    return _serve_stale(req, entry)
                if entry.age() < entry.ttl:  # fresh but picked for early refresh (XFetch)
                    reread = False
                if entry.age() < entry.ttl + min(entry.stale, policy.stale_if_error):
                    stale = entry
            elif entry is not None:
                cache.bad_entry(key, EntryError("a value entry where a response was expected"))
        return await _fill(req, stale, reread=reread)
    except Exception as exc:
        if view is not None and view.state is not _RETURNED and view.state is not _NOT_RUN:
            raise  # the view's own exception (or its labelled copy): the app's, not ours
        if isinstance(exc, ResponseValidationError):
            raise  # FastAPI's check of what the view returned: it raises the same uncached
        if isinstance(exc, BackendError) and not bound.cache.settings.fail_open:
            raise  # store errors were asked for (fail_open=False)
        log.error("cacheframe: internal error serving %s; answering uncached", request.url.path, exc_info=exc)
        if view is None or view.state is _NOT_RUN:
            if view is None:
                view = _ViewCall(call_view, func, args, kwargs, is_coroutine)
            return await _bypass(bound.cache, view, sub)
        bound.cache.stats.bypasses += 1
        value = view.value  # the view ran once already: FastAPI renders its value, uncached
        header = bound.cache.settings.cache_status_header
        if isinstance(value, Response):
            value.headers[header] = "BYPASS"
        elif sub is not None:
            sub.headers[header] = "BYPASS"
        return value


_NOT_RUN, _RUNNING, _RETURNED = "not run", "running", "returned"


class _ViewCall:
    """The view's call for one request, remembering whether it ran and what it returned, so
    the error boundary never runs it twice and never mistakes its exceptions for ours.
    Without ``call_view``, a ``def`` view (not ``is_coroutine``) runs in a worker thread."""

    __slots__ = ("args", "call_view", "func", "is_coroutine", "kwargs", "state", "value")

    def __init__(
        self,
        call_view: CallView | None,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        is_coroutine: bool,
    ) -> None:
        self.call_view, self.func, self.args, self.kwargs = call_view, func, args, kwargs
        self.is_coroutine = is_coroutine
        self.state = _NOT_RUN
        self.value: Any = None

    async def __call__(self) -> Any:
        self.state = _RUNNING  # stays so if the view raises
        call = self.call_view
        if call is not None:
            value = await call()
        elif self.is_coroutine:
            value = await self.func(*self.args, **self.kwargs)
        else:  # only the view's own computation takes a worker thread
            value = await run_in_threadpool(self.func, *self.args, **self.kwargs)
        self.state, self.value = _RETURNED, value
        return value


# Arguments FastAPI passes that are the request itself (or made for it): keyed by the URL already.
_CONNECTION_TYPES = (HTTPConnection, Response, BackgroundTasks)


def _stacked_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """A digest of the arguments a view reached through stacked decorators receives (the
    request, responses and background tasks left out), or None when one cannot be keyed."""
    try:
        plain = [a for a in args if not isinstance(a, _CONNECTION_TYPES)]
        named = {k: v for k, v in kwargs.items() if not isinstance(v, _CONNECTION_TYPES)}
        return keys.digest(keys.canonical((plain, named)))
    except Exception:  # KeyBuildError, or an object whose attributes raise
        return None


def _call(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> CallView:
    """The view's call, made only once the view must run."""
    return functools.partial(func, *args, **kwargs)


def view_key(
    bound: Bound,
    scope: Any,
    host: str,
    *,
    headers: Any = None,
    cookies: Any = None,
    vary: tuple[str, ...] = (),
    header_params: tuple[str, ...] = (),
    cookie_params: tuple[str, ...] = (),
    private: bool = False,
    custom: bytes | None = None,
    credential_headers: tuple[str, ...] = (),
    credential_query: tuple[str, ...] = (),
) -> str:
    """The store key of a request to a view: the one computation both the decorator path and
    the ASGI fast path use, so the two can never disagree (``host``: the request's
    ``request_authority``, the authority Starlette builds ``request.url`` from)."""
    url_only = custom is None and not vary and not header_params and not cookie_params and not private
    if url_only:
        return url_key(bound, scope, host)
    return _view_key(
        bound,
        scope,
        host,
        headers,
        cookies,
        vary,
        header_params,
        cookie_params,
        private,
        custom,
        credential_headers,
        credential_query,
    )


def url_key(bound: Bound, scope: Any, host: str) -> str:
    """``view_key`` of a request keyed by its URL alone (the common case), memoised: hot URLs repeat."""
    query = scope.get("query_string", b"")
    path = scope["path"]
    root = scope.get("root_path", "")
    memo = (bound.namespace, scope["method"], scope.get("scheme", "http"), host, root, path, query)
    key = _URL_KEYS.get(memo)
    if key is None:
        key = _view_key(bound, scope, host, None, {}, (), (), (), False, None)
        if len(query) + len(host) + len(path) <= _URL_KEYS_MAX_URL:  # long URLs: not kept
            if len(_URL_KEYS) >= _URL_KEYS_MAX:
                _URL_KEYS.clear()
            _URL_KEYS[memo] = key
    return key


# Store keys by (namespace, method, scheme, host, root path, path, query): a few MiB at most.
_URL_KEYS: dict[tuple[str, str, str, str, str, str, bytes], str] = {}
_URL_KEYS_MAX = 16384
_URL_KEYS_MAX_URL = 512


def _view_key(
    bound: Bound,
    scope: Any,
    host: str,
    headers: Any,
    cookies: Any,
    vary: tuple[str, ...],
    header_params: tuple[str, ...],
    cookie_params: tuple[str, ...],
    private: bool,
    custom: bytes | None,
    credential_headers: tuple[str, ...] = (),
    credential_query: tuple[str, ...] = (),
) -> str:
    # A segment per path: an unsafe request clears all of the path's variants (see unsafe.py).
    prefix = bound.namespace + keys.uri_segment(scope.get("root_path", ""), scope["path"])
    return prefix + keys.request_digest(
        method=scope["method"],
        scheme=scope.get("scheme", "http"),
        host=host,
        root_path=scope.get("root_path", ""),
        path=scope["path"],
        query_string=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        cookies=cookies or {},
        vary=vary,
        header_params=header_params,
        cookie_params=cookie_params,
        private=private,
        custom=custom,
        credential_headers=credential_headers,
        credential_query=credential_query,
    )


def scan_headers(
    raw: list[tuple[bytes, bytes]],
) -> tuple[str | None, bool, str | None, str | None, str | None]:
    """One pass over the raw request headers: Host, Authorization?, Cache-Control, Pragma, If-None-Match.

    Host is the first one, as Starlette reads it (``""`` without one), or None when the
    request carries several: such a request is never cached.
    """
    host: str | None = ""
    hosts = 0
    authorization = False
    cache_control = pragma = if_none_match = None
    for name, value in raw:
        if name == b"host":
            hosts += 1
            host = value.decode("latin-1") if hosts == 1 else None
        elif name == b"authorization":
            authorization = True
        elif name == b"cache-control":
            text = value.decode("latin-1")
            cache_control = text if cache_control is None else f"{cache_control}, {text}"
        elif name == b"pragma":
            pragma = value.decode("latin-1")
        elif name == b"if-none-match":
            text = value.decode("latin-1")
            if_none_match = text if if_none_match is None else f"{if_none_match}, {text}"
    return host, authorization, cache_control, pragma, if_none_match


def replay(req: _Request, entry: ResponseEntry, status: bytes) -> Response:
    """The stored response with this reply's Cache-Control, ETag, Age and status header."""
    age = None if status in (b"MISS", b"BYPASS") else int(entry.age())
    head = req.request.method == "HEAD"
    return _replay(req.policy, req.bound, entry, status, age, req.dep_headers, req.if_none_match, head)


def _replay(
    policy: Policy,
    bound: Bound,
    entry: ResponseEntry,
    status: bytes,
    age: int | None,
    dep_headers: list[tuple[bytes, bytes]],
    if_none_match: str | None,
    head: bool,
) -> Response:
    extra = reply_headers(policy, bound, entry, status, age)
    if dep_headers:
        extra += dep_headers
    if if_none_match is not None and http.none_match(if_none_match, entry.etag):
        kept = [h for h in entry.headers if h[0] in KEPT_ON_304]
        return ReplayResponse(304, kept + extra, b"")
    return ReplayResponse(entry.status, entry.headers + extra, b"" if head else entry.body)


# Stored headers a 304 repeats (RFC 9110 §15.4.5): the view's own Cache-Control, and Vary.
KEPT_ON_304 = (b"cache-control", b"vary")


def _hit_headers(policy: Policy, bound: Bound, entry: ResponseEntry, age: int) -> list[tuple[bytes, bytes]]:
    """A plain hit's headers: built once per entry and second of age, copied per reply
    (a middleware may edit the list it is given)."""
    memo = entry.replay_memo
    if memo is None or memo[0] != age or memo[1] is not policy or memo[2] is not bound:
        memo = entry.replay_memo = (
            age,
            policy,
            bound,
            entry.headers + reply_headers(policy, bound, entry, b"HIT", age),
        )
    return list(memo[3])


def reply_headers(
    policy: Policy, bound: Bound, entry: ResponseEntry, status: bytes, age: int | None
) -> list[tuple[bytes, bytes]]:
    """Cache-Control (``max-age`` = the entry's lifetime), ETag, the cache status and, unless
    the reply was just computed (``age`` None), Age: the same on the decorator and fast paths.

    Age is counted once: a downstream cache keeps the reply ``max-age`` - ``Age`` seconds,
    exactly what is left here. An entry whose view set its own Cache-Control carries the
    value to send as its first header (see ``_own_lifetime``); none is added then."""
    stored = entry.headers
    if stored and stored[0][0] == b"cache-control":
        headers = [(b"etag", entry.etag), (bound.status_header, status)]
    else:
        cache_control = http.cache_control(  # memoised there
            entry.ttl,
            private=policy.keys_auth,  # private=True or vary=["Authorization"]: per user
            stale_while_revalidate=policy.stale_while_revalidate,
            stale_if_error=policy.stale_if_error,
        ).encode()
        headers = [(b"cache-control", cache_control), (b"etag", entry.etag), (bound.status_header, status)]
    if age is not None:
        headers.append((b"age", b"%d" % age))
    return headers


def _cache_control(policy: Policy, ttl: float, *, revalidate: bool = False) -> str:
    """Our ``Cache-Control`` for an entry living ``ttl`` seconds (memoised in ``http``);
    no stale extensions for a view that said ``must-revalidate``."""
    return http.cache_control(
        ttl,
        private=policy.keys_auth,
        stale_while_revalidate=0 if revalidate else policy.stale_while_revalidate,
        stale_if_error=0 if revalidate else policy.stale_if_error,
    )


def _serve_stale(req: _Request, entry: ResponseEntry) -> Response:
    """Serve a stale entry and refresh it once, in the background, after the reply is sent."""
    cache = req.bound.cache
    cache.stats.stale += 1
    response = replay(req, entry, b"STALE")
    if cache.claim_refresh(req.key):
        response.background = BackgroundTask(_refresh, req)
    return response


async def _refresh(req: _Request) -> None:
    cache = req.bound.cache
    try:
        await _fill(req, None)
    except Exception as exc:  # the view failed in the background: keep serving stale
        log.warning("cacheframe: background refresh of %s failed: %s", req.key, exc)
    finally:
        cache.refreshing.pop(req.key, None)


async def _fill(
    req: _Request, stale: ResponseEntry | None, use_store: bool = True, reread: bool = False
) -> Response:
    """A miss: share a computation already in flight, or lead one (under the store lock).

    The leader first looks at the store once more (``reread``): another request
    or process may have filled the entry since this request's read. With
    ``use_store=False`` (the store just failed) the computation is still shared
    in this process, but nothing is locked in or written to the store.
    """
    cache = req.bound.cache
    key = req.key
    pending = cache.flights.pending(key)
    if pending is not None:
        shared = await follow(pending, cache.settings.stampede_wait)
        if isinstance(shared, ResponseEntry):
            cache.stats.hits += use_store
            return replay(req, shared, b"HIT" if use_store else b"BYPASS")
        return (await _compute(req, stale, use_store))[0]
    future = cache.flights.start(key)
    result: ResponseEntry | None = None
    try:
        if not use_store or not _worth_locking(req, stale):
            # In this process single-flight makes this the one computation; across
            # processes a duplicate run of a cheap view costs less than the lock would.
            response, result = await _compute(req, stale, use_store)
            return response
        lock = StoreLock(cache, key)
        try:
            held, current = await lock.acquire(reread)
            entry = current if _fresh(current) else None
            if entry is None and not held:  # another process computes: wait for its entry
                entry = await wait_for_entry(cache, key, _fresh)
            if isinstance(entry, ResponseEntry):
                result = entry
                cache.stats.hits += 1
                return replay(req, entry, b"HIT")
            response, result = await _compute(req, stale, use_store, lock)
            return response
        finally:
            await lock.release()
    finally:  # followers get the entry, or None (then compute themselves) after a failure
        cache.flights.finish(key, future, result)


def _worth_locking(req: _Request, stale: ResponseEntry | None) -> bool:
    """Whether this miss takes the store lock: the backend has one, and the view is not known
    to be cheap (its slowest computation here, or the stale entry's, took at least
    ``stampede_lock_min_cost``; a view not measured yet counts as slow)."""
    cache = req.bound.cache
    if cache.lock is None:
        return False
    cost = cache.compute_cost.get(req.bound.qualname)
    if stale is not None:  # measured where it was computed, maybe in another process
        cost = stale.delta if cost is None else max(cost, stale.delta)
    return cost is None or cost >= cache.settings.stampede_lock_min_cost


async def _compute(
    req: _Request, stale: ResponseEntry | None, use_store: bool = True, lock: StoreLock | None = None
) -> tuple[Response, ResponseEntry | None]:
    """Run the view, render it as FastAPI would, store it when storable (and ``use_store``)."""
    cache = req.bound.cache
    cache.stats.misses += use_store
    epoch = cache.invalidations
    started = time.perf_counter()
    label = "MISS" if use_store else "BYPASS"
    try:
        with _peruser.watch(req.request) as reads:  # per-user state the view reads
            value = await req.call_view()
    except Exception as exc:
        if stale is None or (isinstance(exc, HTTPException) and exc.status_code < 500):
            labelled = _labelled(exc, cache.settings.cache_status_header, label)
            if labelled is exc:
                raise
            raise labelled.with_traceback(exc.__traceback__) from exc.__cause__
        log.warning("cacheframe: view failed (%s); serving the stale entry (stale-if-error)", exc)
        cache.stats.stale += 1
        return replay(req, stale, b"STALE"), None
    response = await render(value, req.route, req.sub, req.is_coroutine)
    if response.status_code >= 500 and stale is not None:
        cache.stats.stale += 1
        return replay(req, stale, b"STALE"), None
    all_headers = [(n.lower(), v) for n, v in response.raw_headers]
    own_headers = _without(all_headers, req.dep_headers)
    # Storability looks at every header, dependencies' included (their no-store or cookie
    # counts); the entry keeps only the view's own.
    reason = _unstorable(req, response, all_headers, reads)
    if reason is not None:
        cache.stats.not_stored += 1
        log.debug("cacheframe: not storing %s: %s", req.request.url.path, reason)
        response.headers[cache.settings.cache_status_header] = label
        return response, None
    body = bytes(response.body)
    stored_headers = [h for h in http.replayable_headers(own_headers) if h[0] != b"vary"]
    info = req.info
    vary = http.merge_vary(
        http.header_values(own_headers, b"vary"),
        req.policy.vary,
        info.header_names,
        ("Cookie",) if info.cookie_names else (),
    )
    if vary:
        stored_headers.append((b"vary", vary.encode("latin-1")))
    policy = req.policy
    cost = time.perf_counter() - started
    name = req.bound.qualname
    cache.compute_cost[name] = max(cost, cache.compute_cost.get(name, 0.0))
    now = time.time()
    ttl, window = req.bound.ttl, max(policy.stale_while_revalidate, policy.stale_if_error)
    own = http.response_freshness(all_headers, now)
    if own is not http.NO_FRESHNESS:  # the view's own Cache-Control/Expires bound the entry
        ttl, window = _own_lifetime(policy, stored_headers, own, ttl, window)
    entry = ResponseEntry(
        response.status_code, stored_headers, body, http.etag_for(body), now, ttl, window, cost
    )
    if not use_store:
        return replay(req, entry, b"BYPASS"), entry
    if cache.invalidations == epoch:  # never write back over an invalidation made meanwhile
        if lock is not None:
            await lock.write(entry)  # with the lock's release, where the backend can
        else:
            await cache.write_entry(req.key, entry)
    else:
        cache.stats.not_stored += 1
    return replay(req, entry, b"MISS"), entry


def _own_lifetime(
    policy: Policy,
    stored_headers: list[tuple[bytes, bytes]],
    own: http.ResponseFreshness,
    ttl: float,
    stale: float,
) -> tuple[float, float]:
    """The entry's ttl and stale window under the view's own freshness (RFC 9111 §4.2.1).

    Its ``s-maxage`` (else ``max-age``, else ``Expires``) lowers the ttl; ``must-revalidate``
    forbids stale serving. The ``Cache-Control`` its replies send is fixed here and stored
    first among the entry's headers (``reply_headers`` then adds none): the view's directives,
    with ``max-age`` never above the view's own."""
    if own.lifetime is not None:
        ttl = min(ttl, own.lifetime)
    if own.revalidate:
        stale = 0.0
    if own.cache_control is not None:
        ours = _cache_control(policy, ttl, revalidate=own.revalidate)
        advertised = http.advertised_cache_control(ours, own, ttl)
        stored_headers.insert(0, (b"cache-control", advertised.encode("latin-1")))
    return ttl, stale


def _without(
    headers: list[tuple[bytes, bytes]], remove: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """``headers`` minus one occurrence of each pair in ``remove``."""
    if not remove:
        return headers
    pending = list(remove)
    kept = []
    for header in headers:
        if header in pending:
            pending.remove(header)
        else:
            kept.append(header)
    return kept


def _labelled(exc: Exception, header: str, label: str) -> Exception:
    """A copy of an ``HTTPException`` carrying the cache status (the original stays untouched)."""
    if not isinstance(exc, HTTPException):
        return exc
    labelled = copy.copy(exc)
    labelled.headers = {**(exc.headers or {}), header: label}
    return labelled


def _unstorable(
    req: _Request, response: Response, own_headers: list[tuple[bytes, bytes]], reads: set[str]
) -> str | None:
    if isinstance(response, StreamingResponse | FileResponse) or not hasattr(response, "body"):
        return "streaming or file response"
    if response.background is not None or any(
        isinstance(v, BackgroundTasks) and v.tasks for v in req.kwargs.values()
    ):
        return "background tasks"
    if req.sub is not None and req.sub.raw_headers:
        # What dependencies and the view set on the injected Response counts even when the view
        # returns its own Response (FastAPI then drops those headers, a Set-Cookie included).
        # (A rendered value already carries them: add only what is missing, never twice.)
        own_headers = own_headers + [
            h for h in ((n.lower(), v) for n, v in req.sub.raw_headers) if h not in own_headers
        ]
    reason = http.unstorable_reason(response.status_code, own_headers)
    if reason is not None:
        return reason
    if "method" in reads and req.request.method == "HEAD":  # HEAD shares GET's key
        return "the view read request.method on a HEAD request (it may answer HEAD apart from GET)"
    info = req.info
    private = req.policy.private or info.has_security
    cookie_keyed = private or "cookie" in req.policy.vary_lower
    keyed = set(req.policy.vary_lower) | set(info.header_names)
    if private:
        keyed |= {"authorization", "cookie", *info.credential_headers}
    scope = req.request.scope
    reason = _peruser.unkeyed_reason(scope, reads, info.reads_connection, cookie_keyed, keyed)
    if reason is not None:
        return reason
    unkeyed = [v for v in http.header_values(own_headers, b"vary") if v.lower() not in keyed]
    if unkeyed:
        return f"Vary: {', '.join(unkeyed)} is not part of the key; add it to @cache(vary=...)"
    return None


async def _bypass(cache: Cache, call_view: CallView, sub: Response | None) -> Any:
    cache.stats.bypasses += 1
    header = cache.settings.cache_status_header
    try:
        value = await call_view()
    except Exception as exc:
        labelled = _labelled(exc, header, "BYPASS")
        if labelled is exc:
            raise
        raise labelled.with_traceback(exc.__traceback__) from exc.__cause__
    if isinstance(value, Response):
        value.headers[header] = "BYPASS"
    elif sub is not None:
        sub.headers[header] = "BYPASS"
    return value


def _fresh(entry: Any) -> bool:
    return isinstance(entry, ResponseEntry) and entry.age() < entry.ttl
