"""CRUD where the writes invalidate by themselves (RFC 9111 §4.4), plus one explicit clear.

Run: ``uvicorn examples.crud_rfc:app``; ``GET /items/1`` twice (MISS, HIT), then
``PUT /items/1`` and read again (MISS). A decorated POST, PUT, PATCH or DELETE
that answers 2xx/3xx clears every stored entry of *its own path* (each Host,
query, header and user) in the store, before the answer is sent. Other paths
(the list at ``/items``) are not touched by that rule: clear their namespace.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

import cacheframe

LIST = "items.list"
app = FastAPI(lifespan=cacheframe.lifespan)
db: dict[int, dict[str, object]] = {1: {"id": 1, "name": "first"}}


class ItemIn(BaseModel):
    """What a client sends to replace an item."""

    name: str


# --8<-- [start:routes]
@app.get("/items")
@cacheframe.cache(ttl=300, namespace=LIST)
async def list_items() -> list[dict[str, object]]:
    return [db[k] for k in sorted(db)]


@app.get("/items/{item_id}")
@cacheframe.cache(ttl=300)
async def read_item(item_id: int) -> dict[str, object]:
    if item_id not in db:
        raise HTTPException(404, "no such item")
    return db[item_id]


@app.put("/items/{item_id}")
@cacheframe.cache()  # never stored; its 2xx clears GET /items/{item_id}'s entries
async def replace_item(item_id: int, item: ItemIn) -> dict[str, object]:
    if item_id not in db:
        raise HTTPException(404, "no such item")
    db[item_id] = {"id": item_id, "name": item.name}
    await cacheframe.get_cache().clear(LIST)  # another path: cleared by namespace
    return db[item_id]


# --8<-- [end:routes]

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app)
