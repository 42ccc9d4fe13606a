"""Stale serving: answer from an expired entry while one refresh runs, or while the upstream fails.

Run: ``uvicorn examples.stale:app``. ``/quotes`` is fresh for 1 s; for the next
60 s an expired entry is still answered at once (``X-Cache: STALE``) while a
single background refresh runs (RFC 5861 ``stale-while-revalidate``). ``/weather``
answers its expired entry for up to 10 minutes when the view raises or answers
5xx (``stale-if-error``); a 4xx is passed through.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException

import cacheframe

app = FastAPI(lifespan=cacheframe.lifespan)
upstream = {"down": False, "calls": 0}  # stands in for the service the views call


# --8<-- [start:views]
@app.get("/quotes")
@cacheframe.cache(ttl=1, stale_while_revalidate=60)
async def quotes() -> dict[str, int]:
    upstream["calls"] += 1
    return {"version": upstream["calls"]}


@app.get("/weather")
@cacheframe.cache(ttl=1, stale_if_error=600)
async def weather() -> dict[str, str]:
    if upstream["down"]:
        raise HTTPException(503, "upstream unavailable")
    return {"sky": "clear"}


# --8<-- [end:views]

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app)
