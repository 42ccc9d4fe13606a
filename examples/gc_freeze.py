"""A long-lived service that moves its startup objects out of the garbage collector's reach.

With a network store, hits wait for the store inside FastAPI's request handling and
the cyclic collector runs often (docs/usage.md, "Performance notes"). Freezing what
exists after startup takes most of that back. cacheframe never changes the
collector's settings itself: this is the app's choice.
"""

from __future__ import annotations

# --8<-- [start:lifespan]
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import cacheframe


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with cacheframe.lifespan(app):
        gc.collect()
        gc.freeze()  # imported modules and startup objects: never scanned again
        yield


app = FastAPI(lifespan=lifespan)
# --8<-- [end:lifespan]


@app.get("/items/{item_id}")
@cacheframe.cache(ttl=60)
async def read_item(item_id: int) -> dict[str, int]:
    return {"item_id": item_id}
