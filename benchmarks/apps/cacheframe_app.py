"""cacheframe: decorator path, or with ``BENCH_FASTPATH=1`` the ASGI fast path in front of it."""

import os

import cacheframe
from apps.common import CACHEFRAME_URL, PREFIX, TTL, Item, make_app, view_body
from cacheframe import fastpath

cacheframe.configure(url=CACHEFRAME_URL, prefix=PREFIX)

app = make_app(lifespan=cacheframe.lifespan)


@app.get("/items", response_model=list[Item])
@cacheframe.cache(ttl=TTL)
async def items(n: int = 100, k: int = 0) -> list[Item]:
    return view_body(n, k)


@app.get("/cfstats")
async def cfstats() -> dict[str, int]:
    return cacheframe.get_cache().stats.as_dict()


if os.environ.get("BENCH_FASTPATH") == "1":
    fastpath.install(app)
