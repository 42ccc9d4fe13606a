"""Startup checks run by the lifespans: a store that cannot be reached is a warning, not a crash.

Bad configuration (unknown scheme, malformed URL, wrong option name) already fails when the
``Cache`` is built, which the lifespans do before the app serves; this module adds the one
round trip that tells an operator, at startup, that the store is not there.
"""

from __future__ import annotations

import asyncio
import logging

from .backends.options import _redact
from .exceptions import BackendError, CacheframeError
from .settings import CacheSettings
from .types import Backend

__all__ = ["PROBE_KEY", "check_store", "redact"]

log = logging.getLogger("cacheframe.startup")

# Read at startup: a key no entry ever has (entry keys are prefixed), so the read is a miss.
PROBE_KEY = "cacheframe-startup-probe"
_MARGIN = 1.0  # seconds past the store deadline before a hanging backend counts as unreachable


def redact(url: str) -> str:
    """``url`` without its password or password-like options (``redis://user:***@host``), for logs."""
    return _redact(url)


async def check_store(backend: Backend, settings: CacheSettings) -> None:
    """Read one key: an unreachable store is logged as a warning (``fail_open``) or raised."""
    if not settings.enabled:  # a disabled cache never calls its store: nothing to check
        return
    try:
        await asyncio.wait_for(backend.get(PROBE_KEY), settings.timeout + _MARGIN)
    except (CacheframeError, OSError, TimeoutError) as exc:
        url = redact(settings.url)
        if not settings.fail_open:
            await backend.close()  # startup stops here: the lifespan's shutdown never runs
            raise BackendError(
                f"cache store {url} is unreachable at startup ({type(exc).__name__}: {exc}); "
                "start it or fix CACHEFRAME_URL (fail_open=false stops startup)"
            ) from exc
        log.warning(
            "cacheframe: cache store %s is unreachable at startup (%s: %s); "
            "the app starts and serves uncached until it answers",
            url,
            type(exc).__name__,
            exc,
        )
