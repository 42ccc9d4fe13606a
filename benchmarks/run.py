"""Hit vs miss vs uncached, in process, per backend URL: ratios measured side by side."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import time
import uuid

import httpx
from fastapi import FastAPI
from pydantic import BaseModel

import cacheframe


class Item(BaseModel):
    id: int
    name: str
    price: float
    tags: list[str]
    created: dt.datetime


BASE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def build(n: int) -> list[Item]:
    return [Item(id=i, name=f"item-{i}", price=i * 1.25, tags=["a", "b"], created=BASE) for i in range(n)]


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/cached", response_model=list[Item])
    @cacheframe.cache(ttl=600)
    async def cached(n: int = 100, k: int = 0) -> list[Item]:
        return build(n)

    @app.get("/uncached", response_model=list[Item])
    async def uncached(n: int = 100, k: int = 0) -> list[Item]:
        return build(n)

    return app


async def measure(url: str, requests: int) -> dict[str, float]:
    cacheframe.configure(url=url, prefix=f"bench-{uuid.uuid4().hex[:8]}")
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

        async def timed(path: str) -> float:
            start = time.perf_counter()
            response = await client.get(path)
            elapsed = time.perf_counter() - start
            assert response.status_code == 200
            return elapsed

        for i in range(50):  # warm up
            await timed(f"/uncached?k={i}")
        miss = [await timed(f"/cached?k={i}") for i in range(requests)]
        hit = [await timed(f"/cached?k={i % requests}") for i in range(requests)]
        plain = [await timed(f"/uncached?k={i}") for i in range(requests)]
    await cacheframe.get_cache().close()
    return {
        name: statistics.median(v) * 1e6 for name, v in (("hit", hit), ("miss", miss), ("uncached", plain))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", action="append", help="backend URL (repeatable); default memory://")
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    print("| backend | hit µs | miss µs | uncached µs | uncached / hit | miss / uncached |")
    print("|---|---|---|---|---|---|")
    for url in args.url or ["memory://"]:
        r = asyncio.run(measure(url, args.requests))
        print(
            f"| {url} | {r['hit']:.0f} | {r['miss']:.0f} | {r['uncached']:.0f} "
            f"| {r['uncached'] / r['hit']:.2f} | {r['miss'] / r['uncached']:.2f} |"
        )


if __name__ == "__main__":
    main()
