"""The ``Cache`` object: what a user holds. A thin façade over the engine and the store gateway.

``Cache`` builds a backend, a serialiser and settings into a
:class:`~cacheframe._gateway.StoreGateway` (the one door to the store) and an
:class:`~cacheframe._engine.Engine` (lookup and fill), and offers the key/value
API, the lifespan and ``cache(...)`` on top of them. Nothing else is public.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar, Unpack

from . import envelope
from ._engine import Engine
from ._gateway import StoreGateway
from ._stamps import check_tag
from .decorator import Decorator
from .exceptions import ConfigurationError, EntryError
from .policy import DecoratorOptions, ttl_seconds
from .registry import load_backend_factory, load_serializer_factory
from .serializers import dumps_for, loads_for
from .settings import CacheSettings, load_settings
from .startup import check_store
from .stats import NS_TOO_LARGE, CacheStats
from .types import Backend

H = TypeVar("H", bound=Callable[[list[str], bool], Awaitable[None] | None])

__all__ = ["Cache", "CacheStats"]

KV_NAMESPACE = "kv"


class Cache:
    """A cache: owns its backend, serialiser and settings; offers ``@cache`` and a KV API.

    ``Cache(url="redis://127.0.0.1:6379/0", prefix="app")``; options mirror
    :class:`~cacheframe.settings.CacheSettings` and override ``CACHEFRAME_*``.
    ``backend=`` takes a ready backend object instead of a URL.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        backend: Backend | None = None,
        settings: CacheSettings | None = None,
        **options: Any,
    ) -> None:
        if url is not None:
            options["url"] = url
        if settings is not None and options:  # re-validate the merged values
            settings = load_settings(**{**settings.model_dump(), **options})
        self.settings = settings if settings is not None else load_settings(**options)
        secret = self.settings.secret.get_secret_value().encode() if self.settings.secret else None
        serializer = load_serializer_factory(self.settings.serializer)(secret=secret)
        if backend is None:
            factory = load_backend_factory(self.settings.url)
            backend = factory.from_url(self.settings.url, self.settings)
        self.backend: Backend = backend
        self.stats = CacheStats()  # the observer of everything this cache does (its counters)
        self._gateway = StoreGateway(backend, self.settings, self.stats, repr(self))
        self._engine = Engine(self._gateway, self.settings, serializer)

    def __repr__(self) -> str:
        return f"Cache(backend={self.backend!r}, prefix={self.settings.prefix!r})"

    # -- key/value API ------------------------------------------------------------------

    async def get(self, key: str, default: Any = None, *, namespace: str = KV_NAMESPACE) -> Any:
        """The value stored under ``key``, or ``default``."""
        full = self._engine.key(namespace, key)
        entry = await self._gateway.read_once(full)
        if not isinstance(entry, envelope.ValueEntry) or entry.age() >= entry.ttl:
            return default
        serializer = self._engine.serializer
        if entry.serializer != serializer.name:
            return default
        try:
            return loads_for(serializer, entry.payload, full)
        except EntryError as exc:
            self._gateway.bad_entry(full, exc)
            return default

    async def set(
        self, key: str, value: Any, ttl: float | timedelta | None = None, *, namespace: str = KV_NAMESPACE
    ) -> bool:
        """Store ``value`` under ``key``; return whether the store accepted it."""
        seconds = ttl_seconds(ttl, self.settings.default_ttl)
        full = self._engine.key(namespace, key)
        serializer = self._engine.serializer
        payload = dumps_for(serializer, value, full)
        entry = envelope.ValueEntry(serializer.name, payload, time.time(), seconds)
        why = await self._gateway.write(full, entry)
        if why == NS_TOO_LARGE:
            self.stats.on_not_stored(namespace, why)
        return why is None

    async def delete(self, key: str, *, namespace: str = KV_NAMESPACE) -> bool:
        """Remove ``key``; return whether something was removed (always tried, even when open)."""
        self._engine.invalidated()
        self.stats.on_invalidation(namespace)
        return await self._gateway.delete(self._engine.key(namespace, key))

    async def clear(self, namespace: str | None = None) -> None:
        """Remove every entry of ``namespace`` (a decorated function's, or ``"kv"``), or all.

        The namespace's stamp (the prefix's, for all) is replaced first, so entries that any
        process is computing right now never read as valid once written; the entries are then
        removed from the store to free it. Fails open like reads (``fail_open``)."""
        engine = self._engine
        stamp = (
            engine.stamps.global_key
            if namespace is None
            else engine.stamps.namespace(engine.namespace_key(namespace))
        )
        await engine.invalidate([stamp], namespace or "*", fail_open=self.settings.fail_open)
        await self._gateway.clear(engine.namespace_key(namespace))

    async def invalidate_tags(self, *tags: str, soft: bool = False) -> None:
        """Invalidate every entry tagged with any of ``tags``, in every process sharing the store.

        ``soft=True`` marks them stale instead: the next request is answered from the stale
        entry (``X-Cache: STALE``) while exactly one refresh runs. Returns once the store holds
        the invalidation; raises :class:`~cacheframe.BackendError` when it cannot reach the
        store, whatever ``fail_open`` says about reads (an invalidation never fails silently)."""
        if not tags:
            raise ConfigurationError("invalidate_tags() needs at least one tag")
        await self._engine.invalidate_tags([check_tag(tag) for tag in tags], soft)

    def on_invalidate(self, hook: H) -> H:
        """Register ``hook(tags, soft)``, sync or async: called with the tag names after each
        tag invalidation of this cache (``invalidate_tags``, ``@invalidates(tags=...)``, a
        ``Cache-Group-Invalidation`` header) is durable, to forward the purge to a CDN. Usable
        as a decorator. A failing hook is logged at WARNING; the invalidation still holds."""
        if not callable(hook):
            raise ConfigurationError(f"on_invalidate takes a function of (tags, soft), got {hook!r}")
        self._engine.invalidation_hooks.append(hook)
        return hook

    async def close(self) -> None:
        """Close the backend's connections (and the local tier's channel)."""
        local = self._gateway.local
        if local is not None:
            await local.close()
        await self.backend.close()

    @asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """FastAPI lifespan: ``FastAPI(lifespan=my_cache.lifespan)``; checks the store at startup
        (unreachable: a warning, or an error when ``fail_open`` is false), closes on shutdown."""
        await check_store(self.backend, self.settings)
        try:
            yield
        finally:
            await self.close()

    # -- decorator ----------------------------------------------------------------------

    def cache(self, ttl: float | timedelta | None = None, **options: Unpack[DecoratorOptions]) -> Decorator:
        """``@cache`` bound to this cache instead of the process default (same options)."""
        return Decorator(lambda: self._engine, ttl=ttl, **options)
