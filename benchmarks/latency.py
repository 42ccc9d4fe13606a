"""Sequential latency of one miss, one hit and one 304, against the uncached view and one store write.

The issue's bounds: a miss costs at most the uncached view plus one store write
(the lookup that finds nothing is the one extra round trip any cache pays), and a
304 costs no more than a hit. Every setup's server runs at once and the setups take
turns in rounds, so drift on a shared machine hits all alike; each figure is the
median of its sequential requests on one keep-alive connection (latency, not
throughput). The store write is timed in this process with cacheframe's own
backend, storing an entry the size of the view's.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from procs import App, cpu_seconds

BASE_PATH = "/items?n=100"


class Probe:
    """One setup's sequential timings, gathered over interleaved rounds."""

    def __init__(self, app: App, cached: bool) -> None:
        self.app, self.cached = app, cached
        self.times: dict[str, list[float]] = {"miss": [], "hit": [], "not_modified": []}
        self.cpu: dict[str, float] = {"miss": 0.0, "hit": 0.0, "not_modified": 0.0}
        self.next_key = 1_000_000
        app.get(f"{BASE_PATH}&k=0")  # store connections open, the view measured once
        app.get(f"{BASE_PATH}&k=0")
        self.warm = f"{BASE_PATH}&k=1"
        self.etag = app.get(self.warm)[1].get("etag") if cached else None

    def _run(self, kind: str, paths: list[str], headers: dict[str, str] | None = None) -> None:
        cpu0 = cpu_seconds(self.app.pid)
        for path in paths:
            started = time.perf_counter()
            status, _, _ = self.app.get(path, headers)
            self.times[kind].append((time.perf_counter() - started) * 1e6)
            if status not in (200, 304):
                raise RuntimeError(f"GET {path} answered {status}")
        self.cpu[kind] += cpu_seconds(self.app.pid) - cpu0

    def round(self, n: int) -> None:
        """``n`` misses on fresh keys; for a cache, ``n`` hits and ``n`` 304s on the warm key."""
        keys = range(self.next_key, self.next_key + n)
        self.next_key += n
        self._run("miss", [f"{BASE_PATH}&k={k}" for k in keys])
        if self.cached:
            self._run("hit", [self.warm] * n)
            if self.etag:
                self._run("not_modified", [self.warm] * n, {"If-None-Match": self.etag})

    def result(self) -> dict[str, float]:
        out = {}
        for kind, times in self.times.items():
            if times:
                out[f"{kind}_us"] = statistics.median(times)
                out[f"{kind}_cpu_us"] = self.cpu[kind] / len(times) * 1e6
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
