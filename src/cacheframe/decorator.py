"""``@cache``: the decorator's options and the wrappers that route each call.

A call that FastAPI makes for the route this wrapper serves (a ``Request``
whose scope names the wrapper as its endpoint) takes the view path
(:mod:`cacheframe.views`); any other call, even one passing a ``Request``,
takes the plain-function path (:mod:`cacheframe.functions`).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypedDict, TypeVar, cast

import anyio.from_thread
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from . import functions, keys, routes, views
from ._signature import inject
from .cache import ttl_seconds
from .exceptions import ConfigurationError
from .types import KeyBuilder, Serializer

if TYPE_CHECKING:
    from .cache import Cache

__all__ = ["Bound", "Decorator", "DecoratorOptions", "Policy"]

P = ParamSpec("P")
R = TypeVar("R")


class DecoratorOptions(TypedDict, total=False):
    """Keyword options of ``@cache(ttl, **options)``; see :func:`cacheframe.cache`."""

    namespace: str | None
    key_builder: KeyBuilder | None
    serializer: str | Serializer | None
    vary: Sequence[str]
    private: bool
    exclude: Sequence[str]
    stale_while_revalidate: float | timedelta
    stale_if_error: float | timedelta
    xfetch_beta: float


@dataclass(frozen=True, slots=True)
class Policy:
    """The validated options of one ``@cache(...)``."""

    ttl: float | timedelta | None
    namespace: str | None
    key_builder: KeyBuilder | None
    serializer: str | Serializer | None
    vary: tuple[str, ...]
    private: bool
    exclude: tuple[str, ...]
    stale_while_revalidate: float
    stale_if_error: float
    xfetch_beta: float

    vary_lower: tuple[str, ...] = field(init=False)
    keys_auth: bool = field(init=False)  # the key includes Authorization: such requests may be cached

    def __post_init__(self) -> None:
        lower = tuple(v.lower() for v in self.vary)
        object.__setattr__(self, "vary_lower", lower)
        object.__setattr__(self, "keys_auth", self.private or "authorization" in lower)


@dataclass(frozen=True, slots=True)
class Bound:
    """What one decorated function needs from its current ``Cache``, computed once per cache."""

    cache: Cache
    namespace: str
    qualname: str  # module.qualname of the function
    ttl: float
    serializer: Serializer
    status_header: bytes
    identity: str = ""  # keys.function_identity: part of every plain-function key ("" = qualname)
    local_only: bool = False  # the identity holds a per-process token: entries are not shared
    # The one-time warnings already logged for this function (a few short names).
    warned: set[str] = field(default_factory=set, compare=False, hash=False)


def _seconds(name: str, value: float | timedelta) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise ConfigurationError(f"{name} must not be negative, got {value!r}")
    return seconds


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
        stale_while_revalidate: float | timedelta = 0,
        stale_if_error: float | timedelta = 0,
        xfetch_beta: float = 0,
    ) -> None:
        if isinstance(vary, str):
            raise ConfigurationError(f"vary takes a list of header names, got the string {vary!r}")
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
            stale_while_revalidate=_seconds("stale_while_revalidate", stale_while_revalidate),
            stale_if_error=_seconds("stale_if_error", stale_if_error),
            xfetch_beta=_seconds("xfetch_beta", xfetch_beta),
        )
        self._bound: dict[Callable[..., Any], Bound] = {}

    def bind(self, func: Callable[..., Any]) -> Bound:
        """The current cache's view of ``func``; recomputed only when the default is replaced."""
        cache = self._resolve()
        bound = self._bound.get(func)
        if bound is None or bound.cache is not cache:
            policy = self.policy
            qualname = keys.namespace_for(func)
            # An explicit namespace names a function whose closure cannot be keyed.
            identity, shared = keys.function_identity(func, named=policy.namespace is not None)
            bound = Bound(
                cache=cache,
                namespace=cache.namespace_key(policy.namespace or qualname),
                qualname=qualname,
                ttl=ttl_seconds(policy.ttl, cache.settings.default_ttl),
                serializer=cache.resolve_serializer(policy.serializer),
                status_header=cache.settings.cache_status_header.lower().encode("latin-1"),
                identity=identity,
                local_only=not shared,
            )
            self._bound[func] = bound
        return bound

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        if self.policy.keys_auth:  # per-user entries: every credential must be keyable
            routes.check_credentials(func)
        injection = inject(func)
        strip = injection.strip
        request_name, response_name = injection.request_name, injection.response_name
        # Parameters added for FastAPI are taken out of kwargs; the view's own stay in.
        pop_request, pop_response = request_name in strip, response_name in strip
        signature = injection.original
        return_type = _return_type(func)
        policy = self.policy

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                request = kwargs.pop(request_name, None) if pop_request else kwargs.get(request_name)
                sub = kwargs.pop(response_name, None) if pop_response else kwargs.get(response_name)
                bound = self.bind(func)
                if isinstance(request, Request) and request.scope.get("endpoint") is async_wrapper:
                    # No view call is built here: a hit never needs one (serve makes it on a miss).
                    return await views.serve(policy, bound, func, request, sub, None, True, args, kwargs)
                return await functions.call_async(policy, bound, func, signature, return_type, args, kwargs)

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                request = kwargs.pop(request_name, None) if pop_request else kwargs.get(request_name)
                sub = kwargs.pop(response_name, None) if pop_response else kwargs.get(response_name)
                bound = self.bind(func)
                if isinstance(request, Request) and request.scope.get("endpoint") is sync_wrapper:

                    async def call_view() -> Any:
                        return await run_in_threadpool(func, *args, **kwargs)

                    # FastAPI runs this sync wrapper in a worker thread: hop to the event loop.
                    return anyio.from_thread.run(
                        views.serve, policy, bound, func, request, sub, call_view, False, args, kwargs
                    )
                return functions.call_sync(policy, bound, func, signature, return_type, args, kwargs)

            wrapper = sync_wrapper
        wrapper.__signature__ = injection.signature
        wrapper.__cacheframe__ = self
        return cast(Callable[P, R], wrapper)


def _return_type(func: Callable[..., Any]) -> Any:
    try:
        hint = typing.get_type_hints(func).get("return", Any)
    except Exception:  # unresolvable annotations: decode without type information
        return Any
    return Any if hint is None or hint is type(None) else hint
