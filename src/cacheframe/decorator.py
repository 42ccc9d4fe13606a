"""``@cache``: the decorator's options and the wrappers that route each call.

A call that FastAPI makes for the route this wrapper serves (a ``Request``
whose scope names the wrapper, or a decorator wrapping it, as its endpoint)
takes the view path (:mod:`cacheframe._views`); any other call, even one
passing a ``Request``, takes the plain-function path
(:mod:`cacheframe._functions`).

Sync functions and the thread pool. FastAPI runs a ``def`` endpoint or
dependency in anyio's thread pool (40 slots). A slot held while waiting on the
store, or on another request computing the same key, can starve the very
computation it waits for: 40 concurrent misses once hung a server for good.
So no slot is ever held while waiting:

- The ``def`` wrapper is marked as a coroutine function (asyncio's and
  inspect's markers), so FastAPI calls it on the event loop and awaits what it
  returns. It knows FastAPI made the call by a hidden parameter only FastAPI
  fills (see :mod:`cacheframe._signature`); then, on the event-loop thread, it
  returns a coroutine: the lookup, single-flight and store I/O run on the loop,
  and only the function's own computation goes to a worker thread.
- Any other call (your code, a test, a thread, an async function calling it
  directly) returns the value, as a plain ``def`` does.
- Called by FastAPI from a worker thread (a ``def`` decorator stacked above
  ``@cache`` that FastAPI runs in the pool, or a FastAPI that ignores the
  marker) the view runs in that same thread, never in a second slot, so even
  then nothing can deadlock.

What the marker changes for other code: ``asyncio.iscoroutinefunction`` and
``inspect.iscoroutinefunction`` report True for a cached ``def`` function, and
``functools.wraps`` copies the marker to decorators stacked above it. Such a
decorator must hand the wrapped call's result back unchanged (a gate or rate
limiter does); one that inspects the result must be ``async def`` and await it.
Code that awaits whatever a "coroutine function" returns gets the plain value
when it calls the function itself; call it through ``lambda`` there.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import typing
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any, ParamSpec, Protocol, TypeVar, cast

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.websockets import WebSocket

from . import _functions, _views, keys, routes, unsafe
from ._engine import Binding, Engine
from ._signature import CONNECTION_PARAM, inject
from ._stamps import MAX_TAGS, check_tag
from ._sync import run_sync, serve_from_worker
from .exceptions import ConfigurationError, KeyBuildError
from .policy import (
    DecoratorOptions,
    Policy,
    non_negative_seconds,
    tag_fields,
    tag_header_names,
    ttl_seconds,
)
from .types import KeyBuilder, Serializer

__all__ = ["Cached", "Decorator", "DecoratorOptions", "Policy"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class Cached(Protocol[P, R_co]):
    """A function decorated with ``@cache``: called as before, plus ``invalidate(...)``
    (awaited for an async function or a view, plain for a sync function)."""

    invalidate: Callable[..., Any]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...


class Decorator:
    """The configured ``@cache(...)``; calling it on a function returns the wrapper."""

    def __init__(
        self,
        resolve: Callable[[], Engine],
        *,
        ttl: float | timedelta | None = None,
        namespace: str | None = None,
        key_builder: KeyBuilder | None = None,
        serializer: str | Serializer | None = None,
        vary: Sequence[str] = (),
        private: bool = False,
        exclude: Sequence[str] = (),
        stale_while_revalidate: float | timedelta = 0,
        stale_if_error: float | timedelta = 0,
        xfetch_beta: float = 0,
        tags: Sequence[str] = (),
        result_tags: Callable[[Any], Iterable[str]] | None = None,
        tag_headers: Sequence[str] = (),
    ) -> None:
        if isinstance(vary, str):
            raise ConfigurationError(f"vary takes a list of header names, got the string {vary!r}")
        if result_tags is not None and not callable(result_tags):
            raise ConfigurationError(f"result_tags takes a function of the result, got {result_tags!r}")
        if isinstance(tags, str):
            raise ConfigurationError(f"tags takes a list of tag templates, got the string {tags!r}")
        if len(tags) > MAX_TAGS:
            raise ConfigurationError(f"at most {MAX_TAGS} tags per entry, got {len(tags)}")
        for template in tags:
            check_tag(template)
            tag_fields(template)
        if isinstance(exclude, str):
            raise ConfigurationError(f"exclude takes a list of parameter names, got the string {exclude!r}")
        if ttl is not None:
            ttl_seconds(ttl, 1.0)  # validate now, at decoration time
        self._resolve = resolve
        self.policy = Policy(
            ttl=ttl,
            namespace=namespace,
            key_builder=key_builder,
            serializer=serializer,
            vary=tuple(dict.fromkeys(v.strip() for v in vary)),
            private=private,
            exclude=tuple(exclude),
            stale_while_revalidate=non_negative_seconds("stale_while_revalidate", stale_while_revalidate),
            stale_if_error=non_negative_seconds("stale_if_error", stale_if_error),
            xfetch_beta=non_negative_seconds("xfetch_beta", xfetch_beta),
            tags=tuple(dict.fromkeys(tags)),
            result_tags=result_tags,
            tag_headers=tag_header_names(tag_headers),
        )
        self._bound: dict[Callable[..., Any], Binding] = {}

    def bind(self, func: Callable[..., Any]) -> Binding:
        """The current cache's view of ``func``; recomputed only when the default is replaced."""
        engine = self._resolve()
        binding = self._bound.get(func)
        if binding is None or binding.engine is not engine:
            policy = self.policy
            # An explicit namespace names a function whose closure cannot be keyed.
            identity, shared = keys.function_identity(func, named=policy.namespace is not None)
            binding = engine.bind(policy, keys.namespace_for(func), identity, shared)
            self._bound[func] = binding
        return binding

    def __call__(self, func: Callable[P, R]) -> Cached[P, R]:
        _refuse_inner_gate(func)
        _refuse_websocket(func, self.policy.exclude)
        if self.policy.keys_auth:  # per-user entries: every credential must be keyable
            routes.check_credentials(func)
        injection = inject(func, marked=not inspect.iscoroutinefunction(func))
        strip = injection.strip
        request_name, response_name = injection.request_name, injection.response_name
        # Parameters added for FastAPI are taken out of kwargs; the view's own stay in.
        pop_request, pop_response = request_name in strip, response_name in strip
        marker = injection.marker
        pop_connection = marker == CONNECTION_PARAM
        signature = injection.original
        for template in self.policy.tags:  # a placeholder names a parameter of the function
            missing = [name for name in tag_fields(template) if name not in signature.parameters]
            if missing:
                raise ConfigurationError(
                    f"@cache(tags=[{template!r}]) on {func.__qualname__}: {', '.join(missing)} names "
                    f"no parameter of it (its parameters: {', '.join(signature.parameters) or 'none'})"
                )
        return_type = _return_type(func)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                request = kwargs.pop(request_name, None) if pop_request else kwargs.get(request_name)
                sub = kwargs.pop(response_name, None) if pop_response else kwargs.get(response_name)
                binding = self.bind(func)
                if isinstance(request, Request) and (
                    (endpoint := request.scope.get("endpoint")) is async_wrapper
                    or _wraps(endpoint, async_wrapper)
                ):
                    # No view call is built here: a hit never needs one (serve makes it on a miss).
                    return await _views.serve(binding, func, request, sub, None, True, args, kwargs)
                return await _functions.call_async(binding, func, signature, return_type, args, kwargs)

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(func)
            async def in_thread(*args: Any, **kwargs: Any) -> Any:
                """The function's own computation: the one thing that takes a worker thread."""
                return await run_in_threadpool(func, *args, **kwargs)

            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                by_fastapi = marker is not None and marker in kwargs  # only FastAPI fills it
                request = kwargs.pop(request_name, None) if pop_request else kwargs.get(request_name)
                sub = kwargs.pop(response_name, None) if pop_response else kwargs.get(response_name)
                if pop_connection:
                    kwargs.pop(CONNECTION_PARAM, None)
                binding = self.bind(func)
                view = request if isinstance(request, Request) and _serves(request, sync_wrapper) else None
                if by_fastapi and _in_event_loop():  # FastAPI awaits the result (the marker)
                    if view is not None:
                        return _views.serve(binding, func, view, sub, None, False, args, kwargs)
                    return _functions.call_async(binding, in_thread, signature, return_type, args, kwargs)
                if view is not None:  # a worker thread: the view runs here, the store I/O on the loop
                    request_ = view

                    def serve(call_view: _views.CallView) -> Any:
                        # is_coroutine: the response model is validated on the loop, not in a second slot.
                        return _views.serve(binding, func, request_, sub, call_view, True, args, kwargs)

                    return serve_from_worker(serve, functools.partial(func, *args, **kwargs))
                return _functions.call_sync(binding, func, signature, return_type, args, kwargs)

            if marker is not None:  # FastAPI's calls can be told apart: let it await them
                _mark_coroutine_function(sync_wrapper)
            wrapper = sync_wrapper
        wrapper.__signature__ = injection.signature
        wrapper.__cacheframe__ = self
        wrapper.invalidate = self._invalidator(func, signature, sync=not inspect.iscoroutinefunction(func))
        return cast(Cached[P, R], wrapper)

    def _invalidator(self, func: Callable[..., Any], signature: inspect.Signature, sync: bool) -> Any:
        """``func.invalidate(...)``: replaces the stamps of what it names, so that every stored
        variant of it (any Host, query, varied header or user) is a miss in every process.

        - no arguments: every entry of the decorated function;
        - a view's path parameters by name (``read_item.invalidate(item_id=3)``): that resource;
        - a plain function's own arguments (``fetch_rate.invalidate("EUR")``): that call.

        Async (awaited) for an async function or a view; a sync function's is sync. It returns
        once the store holds the new stamps, and raises :class:`BackendError` when it cannot
        reach the store, whatever ``fail_open`` says about reads."""

        async def invalidate(*args: Any, **kwargs: Any) -> None:
            binding = self.bind(func)
            engine = binding.engine
            stamps = engine.stamps
            if not args and not kwargs:
                await engine.invalidate([stamps.namespace(binding.namespace)], binding.stats_name)
                return
            # A view's path parameters may go by another name than its own parameters' (an
            # alias) or be read by a dependency only: the names requests showed count too.
            known = set(signature.parameters).union(*binding.path_names)
            unknown = sorted(set(kwargs) - known)
            if unknown:
                raise ConfigurationError(
                    f"{binding.qualname}.invalidate(): no parameter {', '.join(map(repr, unknown))}; "
                    f"it takes {', '.join(signature.parameters)}"
                )
            targets = []
            if not args:  # a view's resource: its path parameters, by name
                names = tuple(sorted(kwargs))
                if binding.path_names and names not in binding.path_names:
                    raise ConfigurationError(
                        f"{binding.qualname}.invalidate(): a view's resource is named by its path "
                        f"parameters {' or '.join(map(str, sorted(binding.path_names)))}, got {names}"
                    )
                # By the values the view receives (FastAPI converts "3" to 3 for an int parameter).
                targets.append(unsafe.resource_stamp(binding, func, kwargs))
            try:  # a plain call's own entry, by the key that call has
                custom = None
                if self.policy.key_builder is not None:
                    custom = await keys.custom_key(self.policy.key_builder, func, None, args, kwargs)
                key = _functions.call_key(binding, signature, args, kwargs, custom)
                targets.append(stamps.resource(binding.namespace, key.encode("utf-8", "surrogatepass")))
            except (TypeError, KeyBuildError):
                if args:  # the arguments do not make a call of it
                    raise
            await engine.invalidate(targets, binding.stats_name)

        if not sync:
            return invalidate

        @functools.wraps(invalidate)
        def invalidate_sync(*args: Any, **kwargs: Any) -> None:
            run_sync(invalidate(*args, **kwargs))

        return invalidate_sync


def _in_event_loop() -> bool:
    """Whether this thread is running an event loop (FastAPI's calls come from there)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _mark_coroutine_function(wrapper: Callable[..., Any]) -> None:
    """Make FastAPI (asyncio's test on Python < 3.13, inspect's from 3.13) await ``wrapper``."""
    legacy = getattr(asyncio.coroutines, "_is_coroutine", None)  # asyncio's marker (Python < 3.16)
    if legacy is not None:
        wrapper._is_coroutine = legacy  # type: ignore[attr-defined]
    mark = getattr(inspect, "markcoroutinefunction", None)  # Python >= 3.12
    if mark is not None:
        mark(wrapper)


_MAX_WRAPPERS = 32  # decorators stacked between the route decorator and @cache, at most


def _serves(request: Request, wrapper: Callable[..., Any]) -> bool:
    """Whether the request's endpoint is ``wrapper``, or decorators wrapping it."""
    endpoint = request.scope.get("endpoint")
    return endpoint is wrapper or _wraps(endpoint, wrapper)


def _wraps(endpoint: Any, wrapper: Callable[..., Any]) -> bool:
    """Whether ``endpoint`` is a decorator stacked above ``wrapper`` (``functools.wraps``
    records each one's ``__wrapped__``)."""
    for _ in range(_MAX_WRAPPERS):
        endpoint = getattr(endpoint, "__wrapped__", None)
        if endpoint is None:
            return False
        if endpoint is wrapper:
            return True
    return False


def _refuse_inner_gate(func: Callable[..., Any]) -> None:
    """Refuse Starlette's ``@requires`` below ``@cache``: hits would skip the check."""
    for _ in range(_MAX_WRAPPERS):
        code = getattr(func, "__code__", None)
        if (
            code is not None
            and code.co_qualname.startswith("requires.")
            and code.co_filename.endswith(("starlette/authentication.py", "starlette\\authentication.py"))
        ):
            raise ConfigurationError(
                f"@cache is applied over Starlette's @requires on {func.__qualname__}: a cache hit "
                "would skip the permission check. Put @requires above @cache (route decorator, then "
                "@requires, then @cache)."
            )
        func = getattr(func, "__wrapped__", None)  # type: ignore[assignment]
        if func is None:
            return


def _refuse_websocket(func: Callable[..., Any], exclude: Sequence[str]) -> None:
    """Refuse a WebSocket endpoint at decoration time: it has no response to cache, and its
    connections would otherwise fail when the socket is keyed as an argument (a function
    excluding that parameter from its key is left alone)."""
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable annotations: nothing to tell
        return
    for name, hint in hints.items():
        if isinstance(hint, type) and issubclass(hint, WebSocket) and name not in exclude:
            raise ConfigurationError(
                f"@cache on {func.__qualname__}: parameter {name!r} is a WebSocket, and a "
                "WebSocket endpoint has no response to cache. Remove @cache from it (cache the "
                "functions it calls instead)."
            )


def _return_type(func: Callable[..., Any]) -> Any:
    try:
        hint = typing.get_type_hints(func).get("return", Any)
    except Exception:  # unresolvable annotations: decode without type information
        return Any
    return Any if hint is None or hint is type(None) else hint
