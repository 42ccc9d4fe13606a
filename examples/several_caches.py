"""Several caches in one app: each ``Cache`` has its own store, prefix, defaults and counters.

Run: ``uvicorn examples.several_caches:app``. Pages are cached in the process
(``memory://``), the rates in another store (here also ``memory://``; in production
``CACHEFRAME_URL``-style URLs such as ``redis://...``) under the prefix ``billing``.
One lifespan checks and closes both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from cacheframe import Cache

# --8<-- [start:caches]
pages = Cache(url="memory://?max_entries=1000", prefix="pages", default_ttl=10)
billing = Cache(url="memory://", prefix="billing", default_ttl=30)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:  # each cache checks its store, then closes it
        await stack.enter_async_context(pages.lifespan(app))
        await stack.enter_async_context(billing.lifespan(app))
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/")
@pages.cache()  # Cache.cache is @cache bound to that Cache
async def home() -> dict[str, str]:
    return {"page": "home"}


# --8<-- [end:caches]
# --8<-- [start:object]
@app.get("/rates")
async def rates() -> dict[str, float]:
    """The Cache object used directly: get, set, delete and clear by namespace."""
    cached = await billing.get("rates")
    if cached is None:
        cached = {"EUR": 1.08}  # fetched from upstream in real life
        await billing.set("rates", cached, ttl=60)
    return cached


@app.post("/rates/refresh", status_code=204)
async def refresh_rates() -> None:
    await billing.delete("rates")  # one value
    await pages.clear()  # every entry of that cache (or clear("namespace"))


# --8<-- [end:object]

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app)
