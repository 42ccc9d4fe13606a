"""Peer: cashews (``@cache(ttl="60s")``) on ``mem://`` (its defaults) or Redis."""

from cashews import cache

from apps.common import PREFIX, REDIS_URL, STORE, TTL, Item, make_app, view_body

cache.setup(REDIS_URL if STORE == "redis" else "mem://")

app = make_app()


@app.get("/items", response_model=list[Item])
@cache(ttl=f"{TTL}s", prefix=PREFIX)
async def items(n: int = 100, k: int = 0) -> list[Item]:
    return view_body(n, k)
