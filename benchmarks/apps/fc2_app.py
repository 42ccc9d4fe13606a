"""Peer: fastapi-cache2 (`@cache(expire=60)`) on its in-memory or Redis backend, as its README shows."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi_cache import FastAPICache
from fastapi_cache.decorator import cache

from apps.common import PREFIX, REDIS_URL, STORE, TTL, Item, make_app, view_body


@asynccontextmanager
async def lifespan(_app: Any) -> AsyncIterator[None]:
    if STORE == "redis":
        from fastapi_cache.backends.redis import RedisBackend
        from redis import asyncio as aioredis

        client = aioredis.from_url(REDIS_URL)
        FastAPICache.init(RedisBackend(client), prefix=PREFIX)
        yield
        await client.aclose()
    else:
        from fastapi_cache.backends.inmemory import InMemoryBackend

        FastAPICache.init(InMemoryBackend(), prefix=PREFIX)
        yield


app = make_app(lifespan)


@app.get("/items", response_model=list[Item])
@cache(expire=TTL)
async def items(n: int = 100, k: int = 0) -> list[Item]:
    return view_body(n, k)
