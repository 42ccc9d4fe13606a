"""``@cache``: glue between a view (or plain function), the HTTP rules and a ``Cache``.

A view's hit replays the stored rendered response (status, headers, body)
without calling the view, validating a response model or encoding JSON. A
miss renders exactly what FastAPI would send, stores it and returns it.
Plain async and sync functions cache their return value, keyed on their
arguments.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
import typing
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

import anyio.from_thread
from starlette.background import BackgroundTasks
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse

from . import http, keys
from ._render import render
from ._signature import inject
from ._sync import run_sync
from .cache import STORE_DOWN, ttl_seconds
from .envelope import ResponseEntry, ValueEntry
from .exceptions import ConfigurationError, EntryError
from .routes import RouteInfo, route_info
from .stampede import follow, store_lock, wait_for_entry

if TYPE_CHECKING:
    from .cache import Cache
    from .types import KeyBuilder, Serializer

__all__ = ["Decorator"]

log = logging.getLogger("cacheframe")
P = ParamSpec("P")
R = TypeVar("R")
_MISSING: Any = object()


class ReplayResponse(Response):
    """A response rebuilt from stored parts, skipping ``Response.__init__``'s work."""

    def __init__(self, status_code: int, raw_headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code = status_code
        self.raw_headers = raw_headers
        self.body = body
        self.background = None


class Decorator:
    """The configured ``@cache(...)``; calling it on a function returns the wrapper."""

    def __init__(
        self,
        resolve: Callable[[], Cache],
        *,
        ttl: float | timedelta | None = None,
        namespace: str | None = None,
        key_builder: KeyBuilder | None = None,
        serializer: str | Serializer | None = None,
        vary: Sequence[str] = (),
        private: bool = False,
        exclude: Sequence[str] = (),
    ) -> None:
        if isinstance(vary, str):
            raise ConfigurationError(f"vary takes a list of header names, got the string {vary!r}")
        if ttl is not None:
            ttl_seconds(ttl, 1.0)  # validate now, at decoration time
        self._resolve = resolve
        self.ttl = ttl
        self.namespace = namespace
        self.key_builder = key_builder
        self.serializer = serializer
        self.vary = tuple(dict.fromkeys(v.strip() for v in vary))
        self._vary_lower = tuple(v.lower() for v in self.vary)
        self.private = private
        self.exclude = tuple(exclude)
        self._keys_auth = private or "authorization" in self._vary_lower
        self._bound: dict[Callable[..., Any], tuple[Cache, str, float, Serializer]] = {}

    # -- per-cache state, recomputed only when the default cache is replaced -----------

    def _state(self, func: Callable[..., Any]) -> tuple[Cache, str, float, Serializer]:
        cache = self._resolve()
        bound = self._bound.get(func)
        if bound is None or bound[0] is not cache:
            namespace = self.namespace or keys.namespace_for(func)
            bound = (
                cache,
                cache.namespace_key(namespace),
                ttl_seconds(self.ttl, cache.settings.default_ttl),
                cache.resolve_serializer(self.serializer),
            )
            self._bound[func] = bound
        return bound

    # -- wrapping ---------------------------------------------------------------------

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        injection = inject(func)
        strip = injection.strip
        request_name, response_name = injection.request_name, injection.response_name
        signature = injection.original
        return_type = _return_type(func)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                request = kwargs.get(request_name)
                if isinstance(request, Request):
                    sub = kwargs.get(response_name)
                    for name in strip:
                        kwargs.pop(name, None)
                    return await self._serve(
                        func, request, sub, lambda: func(*args, **kwargs), True, args, kwargs
                    )
                for name in strip:
                    kwargs.pop(name, None)
                return await self._call_async(func, signature, return_type, args, kwargs)

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                request = kwargs.get(request_name)
                if isinstance(request, Request):
                    sub = kwargs.get(response_name)
                    for name in strip:
                        kwargs.pop(name, None)

                    async def call_view() -> Any:
                        return await run_in_threadpool(func, *args, **kwargs)

                    # FastAPI runs this sync wrapper in a worker thread: hop to the loop.
                    return anyio.from_thread.run(
                        self._serve, func, request, sub, call_view, False, args, kwargs
                    )
                for name in strip:
                    kwargs.pop(name, None)
                return self._call_sync(func, signature, return_type, args, kwargs)

            wrapper = sync_wrapper
        wrapper.__signature__ = injection.signature
        wrapper.__cacheframe__ = self
        return cast(Callable[P, R], wrapper)

    # -- views ------------------------------------------------------------------------

    async def _serve(
        self,
        func: Callable[..., Any],
        request: Request,
        sub: Response | None,
        call_view: Callable[[], Awaitable[Any]],
        is_coroutine: bool,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        cache, namespace, ttl, _ = self._state(func)
        settings = cache.settings
        status_header = settings.cache_status_header
        route = request.scope.get("route")
        info = route_info(route)
        method = request.method
        headers = request.headers
        if (
            not settings.enabled
            or method not in ("GET", "HEAD")
            or (not self._keys_auth and (info.has_security or "authorization" in headers))
        ):
            return await self._bypass(cache, call_view, sub, status_header)
        directives = http.NO_DIRECTIVES
        if settings.honor_request_cache_control:
            directives = http.request_directives(headers.get("cache-control"), headers.get("pragma"))
            if directives.no_store:
                return await self._bypass(cache, call_view, sub, status_header)

        custom = await self._custom_key(func, request, args, kwargs) if self.key_builder else None
        key = namespace + keys.request_digest(
            method=method,
            root_path=request.scope.get("root_path", ""),
            path=request.scope["path"],
            query_string=request.scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            cookies=request.cookies if info.cookie_names else {},
            vary=self._vary_lower,
            header_params=info.header_names,
            cookie_params=info.cookie_names,
            private=self.private,
            custom=custom,
        )
        if not directives.no_cache:
            entry = await cache.read_entry(key)
            if entry is STORE_DOWN:  # fail open: serve uncached, do not try to write either
                return await self._bypass(cache, call_view, sub, status_header)
            if isinstance(entry, ResponseEntry):
                age = entry.age()
                if age < entry.ttl and (directives.max_age is None or age <= directives.max_age):
                    cache.stats.hits += 1
                    return self._replay(entry, age, request, b"HIT", status_header)
            elif entry is not None:
                cache.bad_entry(key, EntryError("a value entry where a response was expected"))

        return await self._fill(cache, key, ttl, request, sub, call_view, route, info, is_coroutine, kwargs)

    async def _fill(
        self,
        cache: Cache,
        key: str,
        ttl: float,
        request: Request,
        sub: Response | None,
        call_view: Callable[[], Awaitable[Any]],
        route: Any,
        info: RouteInfo,
        is_coroutine: bool,
        kwargs: dict[str, Any],
    ) -> Response:
        """A miss: share a computation already in flight, or lead one (under the store lock)."""
        header = cache.settings.cache_status_header
        compute = functools.partial(
            self._compute, cache, key, ttl, request, sub, call_view, route, info, is_coroutine, kwargs
        )
        pending = cache.flights.pending(key)
        if pending is not None:
            shared = await follow(pending, cache.settings.stampede_wait)
            if isinstance(shared, ResponseEntry):
                cache.stats.hits += 1
                return self._replay(shared, shared.age(), request, b"HIT", header)
            return (await compute())[0]
        async with cache.flights.lead(key) as future, store_lock(cache, key) as held:
            if not held:
                entry = await wait_for_entry(cache, key, _fresh_response)
                if entry is not None:
                    future.set_result(entry)
                    cache.stats.hits += 1
                    return self._replay(entry, entry.age(), request, b"HIT", header)
            response, stored = await compute()
            future.set_result(stored)
            return response

    async def _compute(
        self,
        cache: Cache,
        key: str,
        ttl: float,
        request: Request,
        sub: Response | None,
        call_view: Callable[[], Awaitable[Any]],
        route: Any,
        info: RouteInfo,
        is_coroutine: bool,
        kwargs: dict[str, Any],
    ) -> tuple[Response, ResponseEntry | None]:
        """Run the view, render it as FastAPI would, store it when storable."""
        cache.stats.misses += 1
        header = cache.settings.cache_status_header
        response = await render(await call_view(), route, sub, is_coroutine)
        reason = self._unstorable(response, info, kwargs)
        if reason is not None:
            cache.stats.not_stored += 1
            log.debug("cacheframe: not storing %s: %s", request.url.path, reason)
            response.headers[header] = "MISS"
            return response, None
        body = bytes(response.body)
        stored_headers = http.replayable_headers(response.raw_headers)
        vary = http.merge_vary(http.header_values(response.raw_headers, b"vary"), self.vary)
        if vary:
            stored_headers.append((b"vary", vary.encode("latin-1")))
        entry = ResponseEntry(
            response.status_code, stored_headers, body, http.etag_for(body), time.time(), ttl
        )
        await cache.write_entry(key, entry)
        return self._replay(entry, 0.0, request, b"MISS", header), entry

    def _replay(
        self, entry: ResponseEntry, age: float, request: Request, status: bytes, header: str
    ) -> Response:
        whole_age = int(age)
        extra = [
            (b"cache-control", http.cache_control(entry.ttl, whole_age, private=self.private).encode()),
            (b"etag", entry.etag),
            (header.lower().encode("latin-1"), status),
        ]
        if status == b"HIT":
            extra.append((b"age", str(whole_age).encode()))
        if http.none_match(request.headers.get("if-none-match"), entry.etag):
            kept = [h for h in entry.headers if h[0] == b"vary"]
            return ReplayResponse(304, kept + extra, b"")
        body = b"" if request.method == "HEAD" else entry.body
        return ReplayResponse(entry.status, entry.headers + extra, body)

    def _unstorable(self, response: Response, info: RouteInfo, kwargs: dict[str, Any]) -> str | None:
        if isinstance(response, StreamingResponse | FileResponse) or not hasattr(response, "body"):
            return "streaming or file response"
        if response.background is not None or any(
            isinstance(v, BackgroundTasks) and v.tasks for v in kwargs.values()
        ):
            return "background tasks"
        reason = http.unstorable_reason(response.status_code, response.raw_headers)
        if reason is not None:
            return reason
        keyed = set(self._vary_lower) | set(info.header_names)
        if self.private:
            keyed |= {"authorization", "cookie"}
        unkeyed = [v for v in http.header_values(response.raw_headers, b"vary") if v.lower() not in keyed]
        if unkeyed:
            return f"Vary: {', '.join(unkeyed)} is not part of the key; add it to @cache(vary=...)"
        return None

    async def _bypass(
        self, cache: Cache, call_view: Callable[[], Awaitable[Any]], sub: Response | None, header: str
    ) -> Any:
        cache.stats.bypasses += 1
        value = await call_view()
        if isinstance(value, Response):
            value.headers[header] = "BYPASS"
        elif sub is not None:
            sub.headers[header] = "BYPASS"
        return value

    async def _custom_key(
        self, func: Callable[..., Any], request: Request | None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> bytes:
        assert self.key_builder is not None
        result = self.key_builder(func, request, args, kwargs)
        if inspect.isawaitable(result):
            result = await result
        return _key_bytes(result)

    # -- plain functions --------------------------------------------------------------

    def _function_key(
        self, namespace: str, signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> str:
        return namespace + keys.function_digest(signature, args, kwargs, self.exclude)

    async def _lookup(self, cache: Cache, serializer: Serializer, key: str, return_type: Any) -> Any:
        entry = await cache.read_entry(key)
        if entry is STORE_DOWN:
            cache.stats.bypasses += 1
            return STORE_DOWN
        if entry is None:
            cache.stats.misses += 1
            return _MISSING
        if not isinstance(entry, ValueEntry) or entry.serializer != serializer.name:
            cache.bad_entry(key, EntryError("entry of another kind or serializer"))
            return _MISSING
        if entry.age() >= entry.ttl:
            cache.stats.misses += 1
            return _MISSING
        try:
            value = serializer.loads(entry.payload, return_type)
        except EntryError as exc:
            cache.bad_entry(key, exc)
            return _MISSING
        cache.stats.hits += 1
        return value

    async def _store(
        self, cache: Cache, serializer: Serializer, key: str, ttl: float, value: Any
    ) -> ValueEntry | None:
        try:
            payload = serializer.dumps(value)
        except (TypeError, ValueError) as exc:
            cache.stats.not_stored += 1
            log.warning(
                "cacheframe: cannot serialise the value for %s with %s: %s", key, serializer.name, exc
            )
            return None
        entry = ValueEntry(serializer.name, payload, time.time(), ttl)
        await cache.write_entry(key, entry)
        return entry

    async def _call_async(
        self,
        func: Callable[..., Awaitable[Any]],
        signature: inspect.Signature,
        return_type: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        cache, namespace, ttl, serializer = self._state(func)
        if not cache.settings.enabled:
            return await func(*args, **kwargs)
        if self.key_builder is not None:
            key = namespace + keys.digest(await self._custom_key(func, None, args, kwargs))
        else:
            key = self._function_key(namespace, signature, args, kwargs)
        value = await self._lookup(cache, serializer, key, return_type)
        if value is STORE_DOWN:
            return await func(*args, **kwargs)
        if value is not _MISSING:
            return value
        pending = cache.flights.pending(key)
        if pending is not None:  # the same call is running: share its stored value
            shared = await follow(pending, cache.settings.stampede_wait)
            if isinstance(shared, ValueEntry):
                try:
                    return serializer.loads(shared.payload, return_type)
                except EntryError:
                    pass
            return await func(*args, **kwargs)
        async with cache.flights.lead(key) as future:
            value = await func(*args, **kwargs)
            future.set_result(await self._store(cache, serializer, key, ttl, value))
        return value

    def _call_sync(
        self,
        func: Callable[..., Any],
        signature: inspect.Signature,
        return_type: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        cache, namespace, ttl, serializer = self._state(func)
        if not cache.settings.enabled:
            return func(*args, **kwargs)
        if self.key_builder is not None:
            key = namespace + keys.digest(run_sync(self._custom_key(func, None, args, kwargs)))
        else:
            key = self._function_key(namespace, signature, args, kwargs)
        value = run_sync(self._lookup(cache, serializer, key, return_type))
        if value is STORE_DOWN:
            return func(*args, **kwargs)
        if value is not _MISSING:
            return value
        value = func(*args, **kwargs)
        run_sync(self._store(cache, serializer, key, ttl, value))
        return value


def _fresh_response(entry: Any) -> bool:
    return isinstance(entry, ResponseEntry) and entry.age() < entry.ttl


def _key_bytes(result: Any) -> bytes:
    if isinstance(result, str):
        return result.encode("utf-8", "surrogatepass")
    if isinstance(result, bytes):
        return result
    raise ConfigurationError(f"a key_builder must return str or bytes, got {type(result).__qualname__}")


def _return_type(func: Callable[..., Any]) -> Any:
    try:
        hint = typing.get_type_hints(func).get("return", Any)
    except Exception:  # unresolvable annotations: decode without type information
        return Any
    return Any if hint is None or hint is type(None) else hint
