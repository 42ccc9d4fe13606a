"""``cacheframe.install(app)``: the app-wide parts, in one call."""

from __future__ import annotations

from typing import Any

from . import fastpath
from .exceptions import ConfigurationError
from .unsafe import UnsafeInvalidation

__all__ = ["install"]


def install(app: Any, *, fast_path: bool = True, invalidate_unsafe: bool = True) -> None:
    """Install cacheframe's middleware on a FastAPI (or Starlette) app; call it once, after
    adding your own middleware.

    - ``invalidate_unsafe``: RFC 9111 §4.4 for every route, decorated or not. A 2xx or 3xx
      answer to POST, PUT, PATCH or DELETE invalidates the cached GET entries of its path,
      of its ``Location`` and ``Content-Location`` targets in the app, and the tags named by
      its ``Cache-Group-Invalidation`` header (RFC 9875), before it is sent.
    - ``fast_path``: serve eligible hits before FastAPI's routing
      (:func:`cacheframe.fastpath.install`).
    """
    if getattr(app, "middleware_stack", None) is not None:  # built on the first request, or startup
        raise ConfigurationError(
            "cacheframe.install(app) must be called before the app starts serving: its middleware "
            "stack is built already, so the middleware would never run"
        )
    if invalidate_unsafe and not any(m.cls is UnsafeInvalidation for m in app.user_middleware):
        from starlette.middleware import Middleware

        app.user_middleware.append(Middleware(UnsafeInvalidation))
    if fast_path:
        fastpath.install(app)
