"""The ASGI fast path: hits on plain routes answered before routing and dependency solving.

Run: ``uvicorn examples.fastpath:app``; the second ``curl -si localhost:8000/catalog``
is a hit served by the middleware (``X-Cache: HIT``). ``/me`` has a dependency,
so its hits take the full path; both are cached.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Header

import cacheframe
from cacheframe import fastpath

# --8<-- [start:app]
app = FastAPI(lifespan=cacheframe.lifespan)


@app.get("/catalog")
@cacheframe.cache(ttl=60)  # no dependencies, no vary/private/key_builder: eligible
async def catalog(page: int = 1) -> dict[str, object]:
    return {"page": page, "items": ["a", "b"]}


def tenant(x_tenant: Annotated[str, Header()] = "public") -> str:
    return x_tenant


@app.get("/tenant-catalog")
@cacheframe.cache(ttl=60)  # a dependency could refuse a request: full path (still cached)
async def tenant_catalog(name: Annotated[str, Depends(tenant)]) -> dict[str, str]:
    return {"tenant": name}


fastpath.install(app)  # after the routes are added; it becomes the innermost middleware
# --8<-- [end:app]

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app)
