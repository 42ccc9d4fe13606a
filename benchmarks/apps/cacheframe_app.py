"""cacheframe: decorator path, or with ``BENCH_FASTPATH=1`` the ASGI fast path in front of it;
``BENCH_LOCAL_MAX_ENTRIES`` > 0 puts the in-process tier in front of the network store."""

import os

import cacheframe
from apps.common import CACHEFRAME_URL, PREFIX, TTL, Item, make_app, view_body
from cacheframe import fastpath

HIT_LOCAL = ("hit", "local")  # requests[(namespace, outcome, tier)]: hits the local tier answered
LOCAL_MAX_ENTRIES = int(os.environ.get("BENCH_LOCAL_MAX_ENTRIES", "0"))
cacheframe.configure(url=CACHEFRAME_URL, prefix=PREFIX, local_max_entries=LOCAL_MAX_ENTRIES)

app = make_app(lifespan=cacheframe.lifespan)


@app.get("/items", response_model=list[Item])
@cacheframe.cache(ttl=TTL)
async def items(n: int = 100, k: int = 0) -> list[Item]:
    return view_body(n, k)


@app.get("/cfstats")
async def cfstats() -> dict[str, int]:
    stats = cacheframe.get_cache().stats
    local_hits = sum(n for (_, outcome, tier), n in stats.requests.items() if (outcome, tier) == HIT_LOCAL)
    return {**stats.as_dict(), "local_hits": local_hits}


if os.environ.get("BENCH_FASTPATH") == "1":
    fastpath.install(app)
