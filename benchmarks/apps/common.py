"""What every benchmark app shares: the item model, the payload and the bookkeeping routes.

Every app answers ``GET /items?n=100&k=0`` with the same ~10.7 kB JSON (100 items
through ``response_model=list[Item]``), plus:

- ``GET /health`` → ``ok`` (readiness probe);
- ``GET /runs`` → how many times a view body built the items in this process.

Environment (set by ``run.py``): ``BENCH_URL`` (cacheframe backend URL),
``BENCH_PREFIX`` (key prefix, fresh per server so a shared store starts empty),
``BENCH_STORE`` (``memory``/``redis``/``memcached``), ``BENCH_REDIS_URL``,
``BENCH_FASTPATH`` (``1``: install cacheframe's ASGI fast path).
"""

from __future__ import annotations

import datetime as dt
import gc
import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Response
from pydantic import BaseModel, TypeAdapter

TTL = 60
PREFIX = os.environ.get("BENCH_PREFIX", "bench")
STORE = os.environ.get("BENCH_STORE", "memory")
CACHEFRAME_URL = os.environ.get("BENCH_URL", "memory://")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "")


class Item(BaseModel):
    id: int
    name: str
    price: float
    tags: list[str]
    created: dt.datetime


EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def build_items(n: int = 100, k: int = 0) -> list[Item]:
    """The view's data: ``n`` items whose names depend on ``k`` (one key per ``k``)."""
    return [
        Item(
            id=i,
            name=f"item-{k}-{i}",
            price=round(1.25 * i + 0.99, 2),
            tags=["alpha", f"t{i % 7}", "omega"],
            created=EPOCH + dt.timedelta(seconds=i),
        )
        for i in range(n)
    ]


def encode(items: list[Item]) -> bytes:
    """The bytes FastAPI sends for ``response_model=list[Item]``."""
    return TypeAdapter(list[Item]).dump_json(items)


PAYLOAD = encode(build_items(100, 0))


class _Runs:
    count = 0


def view_body(n: int, k: int) -> list[Item]:
    """Count one run and build the data (no simulated I/O: a miss costs only CPU)."""
    _Runs.count += 1
    return build_items(n, k)


def constant_response() -> Response:
    return Response(PAYLOAD, media_type="application/json")


def make_app(lifespan: Callable[[Any], AbstractAsyncContextManager[None]] | None = None) -> FastAPI:
    """A FastAPI app with the bookkeeping routes; the setup adds ``/items``.

    ``BENCH_GC_FREEZE=1`` (``run.py --gc-freeze``) moves everything imported so far out
    of the garbage collector's reach (``gc.freeze()``), the same in every setup.
    """
    if os.environ.get("BENCH_GC_FREEZE") == "1":
        gc.collect()
        gc.freeze()
    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/health")
    async def health() -> Response:
        return Response(b"ok", media_type="text/plain")

    @app.get("/runs")
    async def runs() -> dict[str, int]:
        return {"runs": _Runs.count}

    return app
