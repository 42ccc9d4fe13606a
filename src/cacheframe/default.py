"""The process-wide default cache, used by the top-level ``@cache``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, Unpack

from ._engine import Engine
from .cache import Cache
from .decorator import Decorator
from .policy import DecoratorOptions
from .startup import check_store

__all__ = ["cache", "configure", "get_cache", "lifespan"]

_lock = threading.Lock()
_default: Cache | None = None
_closing: set[asyncio.Task[None]] = set()


def configure(url: str | None = None, **options: Any) -> Cache:
    """Replace the process-wide default cache; no arguments: read ``CACHEFRAME_*``.

    Functions decorated with the top-level ``cache`` before this call use the
    new default from then on.
    """
    global _default
    new = Cache(url, **options)
    with _lock:
        old, _default = _default, new
    if old is not None:
        _close_later(old)
    return new


def _close_later(old: Cache) -> None:
    """Close a replaced default without blocking: on the running loop, else right away."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(old.close())
        return
    task = loop.create_task(old.close())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


def get_cache() -> Cache:
    """The default cache, created from the environment on first use (``memory://``)."""
    global _default
    current = _default
    if current is None:
        with _lock:
            if _default is None:
                _default = Cache()
            current = _default
    return current


def cache(ttl: float | timedelta | None = None, **options: Unpack[DecoratorOptions]) -> Decorator:
    """Cache a FastAPI view's rendered response, or a function's return value.

    Place it under ``@app.get(...)``. ``ttl`` in seconds or a ``timedelta``
    (default: the ``default_ttl`` setting). Options:

    - ``namespace``: key segment, default the function's ``module.qualname``;
    - ``vary``: request headers that are keyed and listed in ``Vary``;
    - ``private=True``: key each user's Authorization, Cookie and security-scheme
      credentials (hashed), answer ``Cache-Control: private``;
    - ``key_builder(func, request, args, kwargs)``: replaces the default key;
    - ``exclude``: function parameters left out of the key;
    - ``serializer``: name or object for function values;
    - ``stale_while_revalidate=S``: for S seconds after ``ttl`` serve the stale
      entry (``X-Cache: STALE``) while one background refresh runs;
    - ``stale_if_error=S``: for S seconds after ``ttl`` serve the stale entry
      when the view raises or answers 5xx;
    - ``xfetch_beta=B``: probabilistic early refresh of hot keys (1.0 is typical);
    - ``tags=["item:{item_id}"]``: tag templates over the parameters, for
      ``invalidate_tags``; ``result_tags=fn``: tags taken from the result;
    - ``tag_headers=["Cache-Groups", "Surrogate-Key", "Cache-Tag"]``: list the response's
      tags in these headers, for a cache or CDN in front (opt-in: tags can reveal data).
    """
    return Decorator(_default_engine, ttl=ttl, **options)


def _default_engine() -> Engine:
    return get_cache()._engine  # the package's own façade: its engine is ours to hand on


@asynccontextmanager
async def lifespan(app: Any = None) -> AsyncIterator[None]:
    """FastAPI lifespan for the default cache: ``FastAPI(lifespan=cacheframe.lifespan)``.

    Builds the default cache at startup, so bad configuration stops the app before it
    serves, and checks that the store answers (see ``Cache.lifespan``).
    """
    current = get_cache()
    await check_store(current.backend, current.settings)
    try:
        yield
    finally:
        if _default is not None:
            await _default.close()
