"""Redis behind Sentinel: the cache follows the master when Sentinel fails it over.

Run (with ``pip install 'cacheframe[redis]'``), naming your sentinels and the service::

    CACHEFRAME_URL=redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster \\
        uvicorn examples.sentinel:app

List several sentinels, separated by commas; options go in the query string
(``?sentinel_password=...&timeout=0.5``, see docs/backends.md).
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from cacheframe import Cache

# --8<-- [start:app]
cache = Cache(os.environ.get("CACHEFRAME_URL", "redis+sentinel://127.0.0.1:26379/mymaster"))
app = FastAPI(lifespan=cache.lifespan)  # checks the store at startup, closes it on shutdown


@app.get("/prices/{symbol}")
@cache.cache(ttl=30)
async def price(symbol: str) -> dict[str, object]:
    """A slow upstream lookup, cached in Redis for 30 s."""
    return {"symbol": symbol.upper(), "price": 42.0}


# --8<-- [end:app]


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app)
