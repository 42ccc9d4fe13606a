"""Two-worker run (``two_workers.py``): ``/items?n=100&k=K`` tagged ``item:K``, showing a version.

The view reads the current version from Redis (``<prefix>:version``, the "database" the
driver writes) and puts it in every item's name (``item-K-I-vN``), so a response tells
which version it was computed from. ``BENCH_LOCAL_MAX_ENTRIES`` > 0 turns the in-process
tier on; ``BENCH_FASTPATH=1`` installs the fast path. ``/cfstats`` adds the tier's hits,
bypassed hits and resets to the cache's counters.
"""

import os

import redis.asyncio as redis

import cacheframe
from apps.common import CACHEFRAME_URL, PREFIX, TTL, Item, make_app
from apps.common import view_body as build
from cacheframe import fastpath

LOCAL_MAX_ENTRIES = int(os.environ.get("BENCH_LOCAL_MAX_ENTRIES", "0"))
cacheframe.configure(url=CACHEFRAME_URL, prefix=PREFIX, local_max_entries=LOCAL_MAX_ENTRIES)
database = redis.Redis.from_url(CACHEFRAME_URL)
VERSION_KEY = f"{PREFIX}:version"
HIT_LOCAL = ("hit", "local")  # requests[(namespace, outcome, tier)]: hits the local tier answered

app = make_app(lifespan=cacheframe.lifespan)


@app.get("/items", response_model=list[Item])
@cacheframe.cache(ttl=TTL, tags=["item:{k}"])
async def items(n: int = 100, k: int = 0) -> list[Item]:
    version = int(await database.get(VERSION_KEY) or 0)
    rows = build(n, k)
    for row in rows:
        row.name = f"{row.name}-v{version}"
    return rows


@app.get("/cfstats")
async def cfstats() -> dict[str, int]:
    cache = cacheframe.get_cache()
    stats = cache.stats
    out = stats.as_dict()
    out["local_hits"] = sum(n for (_, what, tier), n in stats.requests.items() if (what, tier) == HIT_LOCAL)
    tier = cache._gateway.local  # the tier's own counters (internal: a benchmark may look)
    if tier is not None:
        out |= {"tier_bypassed": tier.bypassed, "tier_resets": tier.resets, "tier_entries": len(tier)}
    return out


if os.environ.get("BENCH_FASTPATH") == "1":
    fastpath.install(app)
