"""Sequential latency of one miss, one hit and one 304, against the uncached view and one store write.

The issue's bounds: a miss costs at most the uncached view plus one store write
(the lookup that finds nothing is the one extra round trip any cache pays), and a
304 costs no more than a hit. Each figure is the median of ``n`` sequential
requests on one keep-alive connection (no concurrency: latency, not throughput);
the store write is timed in this process with cacheframe's own backend, storing
an entry the size of the view's.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from procs import App, cpu_seconds

BASE_PATH = "/items?n=100"


def _median_us(app: App, paths: list[str], headers: dict[str, str] | None = None) -> tuple[float, float]:
    """(median wall µs, app CPU µs per request) over sequential GETs of ``paths``."""
    times = []
    cpu0 = cpu_seconds(app.pid)
    for path in paths:
        started = time.perf_counter()
        status, _, _ = app.get(path, headers)
        times.append((time.perf_counter() - started) * 1e6)
        if status not in (200, 304):
            raise RuntimeError(f"GET {path} answered {status}")
    cpu = (cpu_seconds(app.pid) - cpu0) / len(paths) * 1e6
    return statistics.median(times), cpu


def measure(app: App, n: int, cached: bool, key_base: int = 1_000_000) -> dict[str, Any]:
    """Misses on ``n`` fresh keys, then ``n`` hits and ``n`` 304s on one warm key."""
    app.get(f"{BASE_PATH}&k=0")  # connections to the store are open before timing
    app.get(f"{BASE_PATH}&k=0")
    miss, miss_cpu = _median_us(app, [f"{BASE_PATH}&k={key_base + i}" for i in range(n)])
    out: dict[str, Any] = {"miss_us": miss, "miss_cpu_us": miss_cpu}
    if not cached:
        return out
    warm = f"{BASE_PATH}&k=1"
    _, headers, _ = app.get(warm)
    out["hit_us"], out["hit_cpu_us"] = _median_us(app, [warm] * n)
    etag = app.get(warm)[1].get("etag") or headers.get("etag")
    if etag:
        out["not_modified_us"], out["not_modified_cpu_us"] = _median_us(
            app, [warm] * n, {"If-None-Match": etag}
        )
    return out


def store_write_us(url: str, size: int, n: int) -> float:
    """Median µs of one ``set`` of ``size`` bytes through cacheframe's backend for ``url``."""
    from cacheframe import Cache

    async def run() -> float:
        cache = Cache(url, prefix="latency")
        value = b"x" * size
        try:
            for i in range(10):  # connect first
                await cache.backend.set(f"latency:warm{i}", value, 60)
            times = []
            for i in range(n):
                started = time.perf_counter()
                await cache.backend.set(f"latency:{i}", value, 60)
                times.append((time.perf_counter() - started) * 1e6)
            return statistics.median(times)
        finally:
            await cache.close()

    return asyncio.run(run())
