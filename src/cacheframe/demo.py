"""The demo app served by ``cacheframe demo``: a deliberately slow endpoint behind @cache."""

from __future__ import annotations

import asyncio
import datetime as dt

from fastapi import FastAPI
from pydantic import BaseModel

from . import cache, lifespan

app = FastAPI(title="cacheframe demo", lifespan=lifespan)


class Item(BaseModel):
    id: int
    name: str
    created: dt.datetime


@app.get("/slow", response_model=list[Item])
@cache(ttl=30)
async def slow(n: int = 3) -> list[Item]:
    """Takes a second to build; cached for 30 s per distinct query."""
    await asyncio.sleep(1.0)
    now = dt.datetime.now(dt.UTC)
    return [Item(id=i, name=f"item {i}", created=now) for i in range(n)]


@app.get("/time")
@cache(ttl=5)
def current_time() -> dict[str, str]:
    """A sync view: the time, frozen for 5 s."""
    return {"now": dt.datetime.now(dt.UTC).isoformat()}
