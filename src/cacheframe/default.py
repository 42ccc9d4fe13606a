"""The process-wide default cache, used by the top-level ``@cache``."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from .cache import Cache
from .decorator import Decorator
from .types import KeyBuilder, Serializer

__all__ = ["cache", "configure", "get_cache", "lifespan"]

_lock = threading.Lock()
_default: Cache | None = None


def configure(url: str | None = None, **options: Any) -> Cache:
    """Replace the process-wide default cache; no arguments: read ``CACHEFRAME_*``.

    Functions decorated with the top-level ``cache`` before this call use the
    new default from then on.
    """
    global _default
    new = Cache(url, **options)
    with _lock:
        _default = new
    return new


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


def cache(
    ttl: float | timedelta | None = None,
    *,
    namespace: str | None = None,
    key_builder: KeyBuilder | None = None,
    serializer: str | Serializer | None = None,
    vary: Sequence[str] = (),
    private: bool = False,
    exclude: Sequence[str] = (),
) -> Decorator:
    """Cache a FastAPI view's rendered response, or a function's return value.

    Place it under ``@app.get(...)``. ``ttl`` in seconds or a ``timedelta``
    (default: the ``default_ttl`` setting); ``namespace`` defaults to the
    function's ``module.qualname``; ``vary`` names request headers that are
    keyed and listed in ``Vary``; ``private=True`` keys each user's
    Authorization/Cookie (hashed) and answers ``Cache-Control: private``;
    ``exclude`` names function parameters left out of the key;
    ``key_builder(func, request, args, kwargs)`` replaces the default key.
    """
    return Decorator(
        get_cache,
        ttl=ttl,
        namespace=namespace,
        key_builder=key_builder,
        serializer=serializer,
        vary=vary,
        private=private,
        exclude=exclude,
    )


@asynccontextmanager
async def lifespan(app: Any = None) -> AsyncIterator[None]:
    """FastAPI lifespan for the default cache: ``FastAPI(lifespan=cacheframe.lifespan)``."""
    try:
        yield
    finally:
        if _default is not None:
            await _default.close()
