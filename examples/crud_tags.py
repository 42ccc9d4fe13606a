"""CRUD kept exact by tags and ``@invalidates``: every view showing an item, and nothing else.

Run: ``uvicorn examples.crud_tags:app``. ``GET /items/1`` and ``GET /items`` twice
(MISS, HIT), then ``PUT /items/1``: the detail of item 1 and the list (which shows
item 1) are misses, in every process sharing the store; ``GET /items/2`` stays a hit.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

import cacheframe
from cacheframe import invalidates

app = FastAPI(lifespan=cacheframe.lifespan)
db: dict[int, dict[str, object]] = {1: {"id": 1, "name": "first"}, 2: {"id": 2, "name": "second"}}


class ItemIn(BaseModel):
    """What a client sends to create or replace an item."""

    name: str


# --8<-- [start:app]
@app.get("/items/{item_id}")
@cacheframe.cache(ttl=300, tags=["item:{item_id}"])
async def read_item(item_id: int) -> dict[str, object]:
    if item_id not in db:
        raise HTTPException(404)
    return db[item_id]


@app.get("/items")
@cacheframe.cache(ttl=300, tags=["items"])
async def list_items() -> list[dict[str, object]]:
    return [db[i] for i in sorted(db)]


@app.put("/items/{item_id}")
@invalidates(read_item, tags=["items"])  # after a 2xx/3xx: /items/{item_id}, and every list
async def update_item(item_id: int, item: ItemIn) -> dict[str, object]:
    if item_id not in db:
        raise HTTPException(404)
    db[item_id] = {"id": item_id, "name": item.name}
    return db[item_id]


@app.post("/items", status_code=201)
@invalidates(tags=["items"])
async def create_item(item: ItemIn) -> dict[str, object]:
    item_id = max(db, default=0) + 1
    db[item_id] = {"id": item_id, "name": item.name}
    return db[item_id]


@app.delete("/items/{item_id}", status_code=204)
@invalidates(tags=["item:{item_id}", "items"])
async def delete_item(item_id: int) -> None:
    db.pop(item_id, None)
# --8<-- [end:app]
