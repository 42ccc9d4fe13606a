"""Run cache coroutines from synchronous code: one private event-loop thread.

A sync function decorated with ``@cache`` stays sync for its caller, even when
the backend is async. Its store calls run on this loop, in its own thread, so
calling it from a thread that is itself running an event loop never
deadlocks. Backends keep connections per loop, so this loop gets its own.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_sync"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_pid = 0


def _portal() -> asyncio.AbstractEventLoop:
    global _loop, _pid
    with _lock:
        if _loop is None or _pid != os.getpid() or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="cacheframe-sync-portal", daemon=True)
            thread.start()
            _loop, _pid = loop, os.getpid()
        return _loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the portal loop and wait for its result."""
    loop = _portal()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:  # called from inside the portal itself: cannot block on it
        coro.close()
        raise RuntimeError("cacheframe: a sync cached function was called from its own portal")
    return asyncio.run_coroutine_threadsafe(coro, loop).result()
