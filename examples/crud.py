"""A CRUD API whose reads are cached and whose writes invalidate them.

Run: ``uvicorn examples.crud:app`` (from the repository root), then
``curl -si localhost:8000/items/1`` twice (MISS, then HIT),
``curl -X PUT localhost:8000/items/1 -H 'content-type: application/json' -d '{"name": "new"}'``
and read again (MISS: the write cleared the cached reads).

Each cached view gets a namespace of its own, so a write can clear exactly the
reads it makes stale: ``await cache.clear(namespace)``.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

import cacheframe

# --8<-- [start:app]
ITEM = "items.one"  # cache namespaces: a write clears both
LIST = "items.list"

app = FastAPI(lifespan=cacheframe.lifespan)
db: dict[int, dict[str, object]] = {1: {"id": 1, "name": "first"}}


class ItemIn(BaseModel):
    """What a client sends to create or replace an item."""

    name: str


async def invalidate() -> None:
    """Drop every cached read of items (call after each write)."""
    cache = cacheframe.get_cache()
    await cache.clear(ITEM)
    await cache.clear(LIST)


@app.get("/items")
@cacheframe.cache(ttl=300, namespace=LIST)
async def list_items() -> list[dict[str, object]]:
    """All items (cached)."""
    return [db[k] for k in sorted(db)]


@app.get("/items/{item_id}")
@cacheframe.cache(ttl=300, namespace=ITEM)
async def read_item(item_id: int) -> dict[str, object]:
    """One item (cached); a 404 is never stored."""
    if item_id not in db:
        raise HTTPException(404, "no such item")
    return db[item_id]


@app.post("/items", status_code=201)
async def create_item(item: ItemIn) -> dict[str, object]:
    """Create an item, then invalidate the cached reads."""
    item_id = max(db, default=0) + 1
    db[item_id] = {"id": item_id, "name": item.name}
    await invalidate()
    return db[item_id]


@app.put("/items/{item_id}")
async def replace_item(item_id: int, item: ItemIn) -> dict[str, object]:
    """Replace an item, then invalidate the cached reads."""
    if item_id not in db:
        raise HTTPException(404, "no such item")
    db[item_id] = {"id": item_id, "name": item.name}
    await invalidate()
    return db[item_id]


# --8<-- [end:app]
@app.delete("/items/{item_id}", status_code=204)
async def delete_item(item_id: int) -> None:
    """Delete an item, then invalidate the cached reads."""
    db.pop(item_id, None)
    await invalidate()


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app)
