"""The view path of ``@cache``: key a request, replay a stored response, or fill a miss.

A hit replays the stored rendered response (status, headers, body) without
calling the view, validating a response model or encoding JSON. A miss renders
exactly what FastAPI would send, stores it when the HTTP rules allow, and
answers with the same headers a hit would carry.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.exceptions import ResponseValidationError
from starlette.background import BackgroundTask, BackgroundTasks
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, Response, StreamingResponse

from . import _peruser, http, keys, stats, unsafe
from ._authority import request_authority
from ._engine import (
    BYPASS,
    COLLAPSED,
    DOWN,
    EXPIRED,
    FRESH,
    HIT,
    INVALID,
    MISS,
    RECHECK,
    SOFT,
    STALE,
    STALE_IF_ERROR,
    STALE_LABEL,
    X_CACHE,
    Binding,
)
from ._gateway import NEEDS_IO, Entry, down
from ._render import render
from ._replies import CHECKED, bypass_status, cache_status, hit_headers, remaining, reply
from ._stamps import Deps, collecting, tag
from .envelope import ResponseEntry
from .exceptions import BackendError, EntryError
from .policy import Policy, tag_header_value
from .routes import RouteInfo, effective_route, path_values, route_info

__all__ = ["ReplayResponse", "serve"]

log = logging.getLogger("cacheframe.views")
CallView = Callable[[], Awaitable[Any]]


class ReplayResponse(Response):
    """A response rebuilt from stored parts, skipping ``Response.__init__``'s work."""

    def __init__(self, status_code: int, raw_headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code = status_code
        self.raw_headers = raw_headers
        self.body = body
        self.background = None


def _dep_headers(sub: Response | None) -> list[tuple[bytes, bytes]]:
    """Headers dependencies set on the shared ``Response`` (lower-cased names)."""
    if sub is None or not sub.raw_headers:
        return []
    return [(n.lower(), v) for n, v in sub.raw_headers]


async def serve(
    binding: Binding,
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
        engine = binding.engine
        settings = engine.settings
        policy = binding.policy
        scope = request.scope
        route = effective_route(scope)
        info = route_info(route)
        host, authorization, cache_control, pragma, if_none_match = http.scan_request_headers(
            scope["headers"]
        )
        if (
            not settings.enabled
            or scope["method"] not in ("GET", "HEAD")
            or host is None  # several Host headers: whose page would this be?
            or info.uncacheable is not None
            or (not policy.keys_auth and (info.has_security or authorization))
            or (policy.keys_auth and info.opaque_security)
        ):
            reason = _bypass_reason(settings.enabled, scope["method"], host, info, policy, authorization)
            if reason == stats.UNKEYABLE_CREDENTIALS:
                log.debug("cacheframe: not caching %s: %s", binding.qualname, info.opaque_security)
            value = await _bypass(
                binding, (view := _ViewCall(call_view, func, args, kwargs, is_coroutine)), sub, reason
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
                    binding,
                    (view := _ViewCall(call_view, func, args, kwargs, is_coroutine)),
                    sub,
                    stats.REQUEST_NO_STORE,
                )

        if policy.key_builder is None and not (policy.vary or policy.private or info.keyed_by_request):
            key = keys.url_key(binding.url_keys, binding.namespace, scope, host, engine.stamps.place)
        else:
            custom = None
            if policy.key_builder is not None:
                custom = await keys.custom_key(policy.key_builder, func, request, args, kwargs)
            # A secured route gets here only when the key holds Authorization: key every credential.
            private = policy.private or info.has_security
            keyed_headers = policy.vary or info.header_names or private
            key = engine.stamps.place(
                keys.view_key(
                    binding.namespace,
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
            )
        if getattr(scope.get("endpoint"), "__wrapped__", func) is not func:
            # A decorator stacked above @cache may have changed the arguments FastAPI solved from
            # the request (injected a user, say): key the arguments the view receives as well.
            arguments = _stacked_arguments(args, kwargs)
            if arguments is None:
                log.debug(
                    "cacheframe: not caching %s: a stacked decorator passes unkeyable arguments",
                    binding.qualname,
                )
                return await _bypass(
                    binding,
                    (view := _ViewCall(call_view, func, args, kwargs, is_coroutine)),
                    sub,
                    stats.STACKED_ARGUMENTS,
                )
            key += "~" + arguments
        deps = _deps(binding, scope, kwargs, key, info)
        state = EXPIRED  # request no-cache: look no further, fill (and store) anew
        entry: Any = None
        checked = scope.get(CHECKED)
        if checked is not None and checked[0] == key and checked[3] == deps:
            entry, tokens = checked[1], checked[2]  # what the fast path read
        else:
            gateway = engine.gateway
            found = gateway.peek_stamped(key, deps.keys)
            if found is NEEDS_IO:
                found = await gateway.read_stamped(key, deps.keys)
            entry, tokens = found  # type: ignore[misc]
        sealing = (deps, tokens)
        if directives.no_cache:  # read for the stamps' tokens only: the entry is passed over
            if down(entry) is not None:
                state = DOWN
            else:
                entry = None
        else:
            state = engine.classify(binding, key, entry, ResponseEntry, directives.max_age, sealing=sealing)
            if state == RECHECK:  # tagged from its result: read those tags' stamps, then judge
                tag_tokens = await engine.result_tag_tokens(entry, deps.bucket)
                state = engine.classify(
                    binding,
                    key,
                    entry,
                    ResponseEntry,
                    directives.max_age,
                    sealing=sealing,
                    tag_tokens=tag_tokens,
                )
            if state == FRESH:  # the hot path: no per-request state beyond the reply
                age = int(entry.age())
                if (
                    if_none_match is None
                    and scope["method"] == "GET"
                    and (sub is None or not sub.raw_headers)
                ):
                    return ReplayResponse(entry.status, hit_headers(binding, key, entry, age), entry.body)
                head = scope["method"] == "HEAD"
                return ReplayResponse(
                    *reply(binding, entry, HIT, age, if_none_match, head, _dep_headers(sub))
                )
        sealing = (deps, list(tokens))  # the computation's own: its seal may fill in a tag epoch
        view = _ViewCall(call_view, func, args, kwargs, is_coroutine)
        fill = _ViewFill(binding, request, sub, view, route, info, is_coroutine, kwargs, if_none_match)
        if state == DOWN:  # fail open: compute (once per key here), never write
            fill.fwd, fill.detail = "bypass", down(entry)
            engine.observer.on_bypass(binding.stats_name, fill.detail or stats.STORE_DOWN)
            return await engine.fill(binding, key, fill, None, use_store=False)
        if state == INVALID:  # invalidated: a miss, and never a stand-in for a failure
            state, entry = EXPIRED, None
        if state == EXPIRED:  # forwarded with a stored response, or passed over by the request
            fresh = entry is not None and directives.max_age is not None and entry.age() < entry.ttl
            fill.fwd = "request" if entry is None or fresh else "stale"
        if state in (STALE, SOFT):
            reason = stats.WHILE_REVALIDATE if state == STALE else stats.SOFT_INVALIDATION
            response, refresh = engine.serve_stale(binding, key, entry, fill, reason)
            if refresh:  # after the reply is sent
                response.background = BackgroundTask(engine.refresh, binding, key, fill, sealing)
            return response
        stale = None
        reread = not directives.no_cache  # a plain miss re-checks the store once it leads
        if state == EXPIRED and entry is not None:
            if entry.age() < entry.ttl:  # fresh but picked for early refresh (XFetch)
                reread = False
            stale = engine.usable_on_error(binding, entry)
        return await engine.fill(binding, key, fill, stale, reread=reread, sealing=sealing)
    except Exception as exc:
        if view is not None and view.state is not _RETURNED and view.state is not _NOT_RUN:
            raise  # the view's own exception (or its labelled copy): the app's, not ours
        if isinstance(exc, ResponseValidationError):
            raise  # FastAPI's check of what the view returned: it raises the same uncached
        if isinstance(exc, BackendError) and not binding.engine.settings.fail_open:
            raise  # store errors were asked for (fail_open=False)
        log.error("cacheframe: internal error serving %s; answering uncached", binding.qualname, exc_info=exc)
        if view is None or view.state is _NOT_RUN:
            if view is None:
                view = _ViewCall(call_view, func, args, kwargs, is_coroutine)
            return await _bypass(binding, view, sub, stats.INTERNAL_ERROR)
        binding.engine.observer.on_bypass(binding.stats_name, stats.INTERNAL_ERROR)
        value = view.value  # the view ran once already: FastAPI renders its value, uncached
        _label(binding, value if isinstance(value, Response) else sub, stats.INTERNAL_ERROR)
        return value


def _bypass_reason(
    enabled: bool, method: str, host: str | None, info: RouteInfo, policy: Policy, authorization: bool
) -> str:
    """Why a request is answered uncached, once ``serve`` found that it is."""
    if not enabled:
        return stats.DISABLED
    if method not in ("GET", "HEAD"):
        return stats.UNSAFE_METHOD if method in unsafe.METHODS else stats.METHOD
    if host is None:
        return stats.SEVERAL_HOSTS
    if info.uncacheable is not None:
        return stats.UNCACHEABLE_ROUTE
    if policy.keys_auth and info.opaque_security:
        return stats.UNKEYABLE_CREDENTIALS
    return stats.AUTHORIZATION


_NOT_RUN, _RUNNING, _RETURNED = "not run", "running", "returned"


def _deps(binding: Binding, scope: Any, kwargs: dict[str, Any], key: str, info: RouteInfo) -> Deps:
    """The stamps an entry of this request depends on: the cache's and the view's, its resource
    (the path parameters, by the values the route's code receives: ``routes.path_values``)
    and its tags (the view's templates, filled from its arguments). Kept by store key for
    the fast path."""
    engine = binding.engine
    path_params = scope.get("path_params")
    resource = None
    if path_params:
        params = path_values(info, path_params, kwargs)
        resource = engine.stamps.params_identity(params)
        names = tuple(sorted(params))
        if names not in binding.path_names:
            binding.path_names.add(names)
            for name in names:
                field = info.path_fields.get(name)
                if field is not None:
                    binding.path_fields.setdefault(name, field[1])
    tags = [template.format_map(kwargs) for template in binding.policy.tags]
    stamps = engine.stamps
    deps = stamps.deps(binding.namespace, resource, tags, binding.tags_results, stamps.bucket_of(key))
    engine.remember_deps(key, deps)
    return deps


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


class _ViewFill:
    """The engine's producer for one request to a view: run the view and render it as
    FastAPI would, turn the response into an entry when the HTTP rules allow, and
    answer with a stored entry's reply."""

    __slots__ = (
        "binding",
        "call_view",
        "dep_headers",
        "detail",
        "fwd",
        "fwd_status",
        "if_none_match",
        "info",
        "is_coroutine",
        "kwargs",
        "request",
        "route",
        "sub",
    )

    def __init__(
        self,
        binding: Binding,
        request: Request,
        sub: Response | None,
        call_view: _ViewCall,
        route: Any,
        info: RouteInfo,
        is_coroutine: bool,
        kwargs: dict[str, Any],
        if_none_match: str | None,
    ) -> None:
        self.binding, self.request, self.sub = binding, request, sub
        self.call_view, self.route, self.info = call_view, route, info
        self.is_coroutine, self.kwargs = is_coroutine, kwargs
        self.if_none_match = if_none_match
        # Headers dependencies set on the shared Response before the view ran: per request,
        # never stored, added to every reply (hit or miss) of this request.
        self.dep_headers = _dep_headers(sub)
        # Why the request went forward to the view (RFC 9211 ``fwd``), a bypass reason as its
        # ``detail``, and the status the view answered (``fwd-status``, for stale-if-error).
        self.fwd = "uri-miss"
        self.detail: str | None = None
        self.fwd_status: int | None = None

    def _forwarded(self, label: bytes, not_stored: str | None) -> bytes | None:
        """The Cache-Status of an answer the view computed for this request."""
        if label is BYPASS:
            return cache_status(self.binding, self.fwd, detail=self.detail)
        return cache_status(self.binding, self.fwd, stored=not_stored is None, detail=not_stored)

    async def compute(self, label: bytes) -> tuple[Response, set[str]]:
        """Run the view (watching the per-user state it reads) and render its value."""
        try:
            with _peruser.watch(self.request) as reads:
                value = await self.call_view()
            if self.binding.policy.result_tags is not None:
                tag(*self.binding.policy.result_tags(value))
        except Exception as exc:
            status = self._forwarded(label, stats.NS_STATUS)
            labelled = _labelled(exc, self.binding, label, status)
            if labelled is exc:
                raise
            raise labelled.with_traceback(exc.__traceback__) from exc.__cause__
        response = await render(value, self.route, self.sub, self.is_coroutine)
        self.fwd_status = response.status_code
        if self.binding.policy.tag_headers:
            self._tag_headers(response)
        return response, reads

    def _tag_headers(self, response: Response) -> None:
        """List the response's tags (its arguments' and those it took) in the headers the
        view opted in to (``tag_headers``), for a cache in front; a header the view set stays."""
        policy = self.binding.policy
        names = [template.format_map(self.kwargs) for template in policy.tags]
        names += collecting() or ()
        for header in policy.tag_headers:
            value = tag_header_value(header, names)
            if value is not None and header not in response.headers:
                response.headers[header] = value

    def failed(self, result: tuple[Response, set[str]]) -> bool:
        return result[0].status_code >= 500

    def stale_on_error(self, exc: Exception) -> bool:
        # The view's own failure (not rendering's), but not a client error it chose to raise.
        return self.call_view.state is _RUNNING and not (
            isinstance(exc, HTTPException) and exc.status_code < 500
        )

    def answer(self, entry: Entry, label: bytes, status: bytes | None = None) -> Response:
        if type(entry) is not ResponseEntry:
            raise EntryError("a value entry where a response was expected")
        age = None if label in (MISS, BYPASS) else int(entry.age())
        if label is COLLAPSED:
            status = cache_status(self.binding, self.fwd, collapsed=True)
        elif label is STALE_IF_ERROR:  # forwarded, failed, and the stale entry stood in
            ttl = remaining(entry, int(entry.age()), STALE_LABEL)
            status = cache_status(
                self.binding, self.fwd, fwd_status=self.fwd_status, ttl=ttl, detail="stale-if-error"
            )
        head = self.request.method == "HEAD"
        return ReplayResponse(
            *reply(
                self.binding, entry, X_CACHE[label], age, self.if_none_match, head, self.dep_headers, status
            )
        )

    def answer_result(
        self, result: tuple[Response, set[str]], entry: Entry | None, label: bytes, not_stored: str | None
    ) -> Response:
        status = self._forwarded(label, not_stored)
        if entry is not None:
            return self.answer(entry, label, status)
        response = result[0]
        response.headers[self.binding.engine.settings.cache_status_header] = label.decode()
        if status is not None:
            response.headers["cache-status"] = status.decode()
        return response

    def to_entry(self, result: tuple[Response, set[str]], cost: float) -> ResponseEntry | str:
        """The entry of a rendered response, or why it may not be stored (a reason code; the
        reason in words is logged at DEBUG)."""
        response, reads = result
        all_headers = [(n.lower(), v) for n, v in response.raw_headers]
        own_headers = _without(all_headers, self.dep_headers)
        # Storability looks at every header, dependencies' included (their no-store or cookie
        # counts); the entry keeps only the view's own.
        unstorable = _unstorable(self, response, all_headers, reads)
        if unstorable is not None:
            log.debug("cacheframe: not storing a response of %s: %s", self.binding.qualname, unstorable[1])
            return unstorable[0]
        body = bytes(response.body)
        stored_headers = [h for h in http.replayable_headers(own_headers) if h[0] != b"vary"]
        info = self.info
        policy = self.binding.policy
        vary = http.merge_vary(
            http.header_values(own_headers, b"vary"),
            policy.vary,
            info.header_names,
            ("Cookie",) if info.cookie_names else (),
        )
        if vary:
            stored_headers.append((b"vary", vary.encode("latin-1")))
        now = time.time()
        ttl, window = self.binding.ttl, policy.stale_window
        own = http.response_freshness(all_headers, now)
        if own is not http.NO_FRESHNESS:  # the view's own Cache-Control/Expires bound the entry
            ttl, window = _own_lifetime(policy, stored_headers, own, ttl, window)
        return ResponseEntry(
            response.status_code, stored_headers, body, http.etag_for(body), now, ttl, window, cost
        )


def _cache_control(policy: Policy, ttl: float, *, revalidate: bool = False) -> str:
    """Our ``Cache-Control`` for an entry living ``ttl`` seconds (memoised in ``http``);
    no stale extensions for a view that said ``must-revalidate``."""
    return http.cache_control(
        ttl,
        private=policy.keys_auth,
        stale_while_revalidate=0 if revalidate else policy.stale_while_revalidate,
        stale_if_error=0 if revalidate else policy.stale_if_error,
    )


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
    first among the entry's headers (``_replies.reply_headers`` then adds none): the view's directives,
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


def _labelled(exc: Exception, binding: Binding, label: bytes, status: bytes | None) -> Exception:
    """A copy of an ``HTTPException`` carrying the cache status, X-Cache ``label`` and
    Cache-Status ``status`` (the original stays untouched)."""
    if not isinstance(exc, HTTPException):
        return exc
    labelled = copy.copy(exc)
    headers = {**(exc.headers or {}), binding.engine.settings.cache_status_header: label.decode()}
    if status is not None:
        headers["Cache-Status"] = status.decode()
    labelled.headers = headers
    return labelled


def _label(binding: Binding, response: Response | None, reason: str) -> None:
    """Mark ``response`` (a view's own, or the injected one) as answered uncached for ``reason``."""
    if response is None:
        return
    response.headers[binding.engine.settings.cache_status_header] = "BYPASS"
    status = bypass_status(binding, reason)
    if status is not None:
        response.headers["cache-status"] = status.decode()


# The not-stored code of each reason ``http.unstorable_reason`` gives, by its first word(s).
_HTTP_REASONS = (
    ("status", stats.NS_STATUS),
    ("Set-Cookie", stats.NS_SET_COOKIE),
    ("Cache-Control: no-store", stats.NS_NO_STORE),
    ("Cache-Control: private", stats.NS_PRIVATE),
    ("Cache-Control: no-cache", stats.NS_NO_CACHE),
    ("Vary", stats.NS_VARY_UNKEYED),
    ("no freshness lifetime", stats.NS_ZERO_LIFETIME),
)


def _unstorable(
    req: _ViewFill, response: Response, own_headers: list[tuple[bytes, bytes]], reads: set[str]
) -> tuple[str, str] | None:
    """Why a rendered response may not be stored: (a not-stored code, the reason in words)."""
    if isinstance(response, StreamingResponse | FileResponse) or not hasattr(response, "body"):
        return stats.NS_STREAMING, "streaming or file response"
    if response.background is not None or any(
        isinstance(v, BackgroundTasks) and v.tasks for v in req.kwargs.values()
    ):
        return stats.NS_BACKGROUND_TASKS, "background tasks"
    if req.sub is not None and req.sub.raw_headers:
        # What dependencies and the view set on the injected Response counts even when the view
        # returns its own Response (FastAPI then drops those headers, a Set-Cookie included).
        # (A rendered value already carries them: add only what is missing, never twice.)
        own_headers = own_headers + [
            h for h in ((n.lower(), v) for n, v in req.sub.raw_headers) if h not in own_headers
        ]
    reason = http.unstorable_reason(response.status_code, own_headers)
    if reason is not None:
        return next(code for start, code in _HTTP_REASONS if reason.startswith(start)), reason
    if "method" in reads and req.request.method == "HEAD":  # HEAD shares GET's key
        text = "the view read request.method on a HEAD request (it may answer HEAD apart from GET)"
        return stats.NS_PER_USER_READ, text
    info = req.info
    private = req.binding.policy.private or info.has_security
    cookie_keyed = private or "cookie" in req.binding.policy.vary_lower
    keyed = set(req.binding.policy.vary_lower) | set(info.header_names)
    if private:
        keyed |= {"authorization", "cookie", *info.credential_headers}
    scope = req.request.scope
    reason = _peruser.unkeyed_reason(scope, reads, info.reads_connection, cookie_keyed, keyed)
    if reason is not None:
        return stats.NS_PER_USER_READ, reason
    unkeyed = [v for v in http.header_values(own_headers, b"vary") if v.lower() not in keyed]
    if unkeyed:
        text = f"Vary: {', '.join(unkeyed)} is not part of the key; add it to @cache(vary=...)"
        return stats.NS_VARY_UNKEYED, text
    return None


async def _bypass(binding: Binding, call_view: CallView, sub: Response | None, reason: str) -> Any:
    """Run the view uncached for a bypass ``reason`` (counted), its answer labelled so."""
    binding.engine.observer.on_bypass(binding.stats_name, reason)
    try:
        value = await call_view()
    except Exception as exc:
        labelled = _labelled(exc, binding, BYPASS, bypass_status(binding, reason))
        if labelled is exc:
            raise
        raise labelled.with_traceback(exc.__traceback__) from exc.__cause__
    _label(binding, value if isinstance(value, Response) else sub, reason)
    return value
