"""Process B of the two-tier bound test (tests/app/test_local_tier_bound.py), and its views.

``uvicorn local_worker:asgi`` serves, with a cacheframe ``Cache`` whose in-process tier is
on, three cached views that answer the current "data version" read from a plain Redis
key (the database), so an answer computed before a change is told apart from one
computed after it:

- ``/r/{item_id}``: invalidated by its path parameters (``read_item.invalidate(item_id=...)``);
- ``/t/{item_id}``: tagged ``item:{item_id}`` (``cache.invalidate_tags(...)``);
- ``/n/{item_id}``: in the namespace ``bound-ns`` (``cache.clear("bound-ns")``).

Each answer carries ``X-Recv``: ``time.monotonic()`` when the request reached the process
(CLOCK_MONOTONIC is one clock for every process of a Linux machine). ``/local`` reports
the tier's counters. The test process builds the same views on its own ``Cache`` with
:func:`build` to invalidate them by their arguments. Configured by environment variables:
``BOUND_STORE`` (the cache's URL), ``BOUND_DB`` (the database's ``redis://`` URL),
``BOUND_PREFIX`` (the cache prefix and the database key's), ``BOUND_LOCAL`` (the tier's
``local_max_entries``: 10,000; 0 turns it off, to compare by hand).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from cacheframe import Cache, fastpath

NAMESPACE = "bound-ns"


def version_key(prefix: str) -> str:
    """The database key holding the data version."""
    return f"{prefix}:db:version"


@dataclass
class Views:
    """The app and its cached views, bound to one ``Cache``."""

    app: FastAPI
    read_item: Any
    tagged: Any
    in_namespace: Any


def build(cache: Cache, db: aioredis.Redis, prefix: str) -> Views:
    """The app serving the three views on ``cache``, reading the version from ``db``."""
    app = FastAPI(lifespan=cache.lifespan)
    key = version_key(prefix)

    async def version() -> int:
        return int(await db.get(key) or 0)

    @app.get("/r/{item_id}")
    @cache.cache(ttl=600, namespace="bound-r")
    async def read_item(item_id: int) -> dict[str, int]:
        return {"v": await version()}

    @app.get("/t/{item_id}")
    @cache.cache(ttl=600, namespace="bound-t", tags=["item:{item_id}"])
    async def tagged(item_id: int) -> dict[str, int]:
        return {"v": await version()}

    @app.get("/n/{item_id}")
    @cache.cache(ttl=600, namespace=NAMESPACE)
    async def in_namespace(item_id: int) -> dict[str, int]:
        return {"v": await version()}

    @app.get("/local")
    async def local() -> dict[str, int]:
        tier = cache._gateway.local
        hits = {"local": 0, "store": 0}
        for (_, outcome, reason), count in cache.stats.requests.items():
            if outcome == "hit" and reason in hits:
                hits[reason] += count
        return {
            "local_hits": hits["local"],
            "store_hits": hits["store"],
            "tier_hits": 0 if tier is None else tier.hits,
            "bypassed": 0 if tier is None else tier.bypassed,
            "resets": 0 if tier is None else tier.resets,
        }

    fastpath.install(app)
    return Views(app, read_item, tagged, in_namespace)


class ReceiptTime:
    """ASGI wrapper adding ``X-Recv`` (monotonic time the request arrived) to every answer."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = b"%.6f" % time.monotonic()

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-recv", received)]
            await send(message)

        await self.app(scope, receive, stamped)


def _from_environment() -> Any:
    prefix = os.environ.get("BOUND_PREFIX")
    if prefix is None:  # imported by the test process: it builds its own views
        return None
    cache = Cache(
        os.environ["BOUND_STORE"],
        prefix=prefix,
        timeout=5.0,
        local_max_entries=int(os.environ.get("BOUND_LOCAL", "10000")),
    )
    db = aioredis.Redis.from_url(os.environ["BOUND_DB"])
    return ReceiptTime(build(cache, db, prefix).app)


asgi = _from_environment()
