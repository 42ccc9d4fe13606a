"""The first cached view: README's quick start, as an app you can run.

Run: ``uvicorn examples.quickstart:app``, then ``curl -si 'localhost:8000/items/1?q=x'``
twice: ``X-Cache: MISS``, then ``X-Cache: HIT`` with an ``Age`` header.
"""

from __future__ import annotations

# --8<-- [start:app]
from fastapi import FastAPI

from cacheframe import cache, lifespan

app = FastAPI(lifespan=lifespan)  # checks config and store at startup


@app.get("/items/{item_id}")
@cache(ttl=60)  # under the route decorator
async def read_item(item_id: int, q: str | None = None) -> dict[str, object]:
    return {"item_id": item_id, "q": q}


# --8<-- [end:app]
# --8<-- [start:function]
@cache(ttl=300)  # plain functions too: keyed on their arguments
async def exchange_rate(currency: str) -> float:
    return {"EUR": 1.08, "GBP": 1.27}.get(currency, 1.0)  # a slow upstream call in real life


# --8<-- [end:function]

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app)
