"""The benchmark setups: which app module serves ``/items``, on which store, and what it needs."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

from procs import BENCH_DIR


@dataclass(frozen=True)
class Setup:
    id: str
    label: str
    module: str  # benchmarks/apps/<module>.py
    store: str = "none"  # none | memory | redis | memcached
    cached: bool = True
    library: str = "cacheframe"  # cacheframe | fastapi-cache2 | cashews | baseline
    fastpath: bool = False
    needs: str | None = None  # an import that must succeed, or the setup is skipped
    local: int = 0  # local_max_entries: the in-process tier in front of a network store (0: off)

    def env(self, store_url: str | None, prefix: str) -> dict[str, str]:
        env = {
            "BENCH_PREFIX": prefix,
            "BENCH_STORE": self.store,
            "BENCH_FASTPATH": "1" if self.fastpath else "0",
            "BENCH_LOCAL_MAX_ENTRIES": str(self.local),
        }
        if self.store == "memory":
            env["BENCH_URL"] = "memory://"
        elif store_url is not None:
            env["BENCH_URL"] = store_url
            if self.store == "redis":
                env["BENCH_REDIS_URL"] = store_url
        return env


LOCAL_ENTRIES = 100_000  # local_max_entries of the two-tier setups (local_max_staleness: the default)


def _cf(store: str, fast: bool, local: int = 0) -> Setup:
    path = "fast path" if fast else "decorator path"
    kind = "fast" if fast else "deco"
    sid, label = f"cf-{kind}-{store}", f"cacheframe {path}, {store}"
    if local:
        sid, label = f"{sid}-l1", f"{label} + local tier (local_max_entries={local:_})"
    return Setup(sid, label, "cacheframe_app", store, fastpath=fast, local=local)


SETUPS: list[Setup] = [
    Setup(
        "floor",
        "floor: constant pre-encoded Response, no parameters",
        "floor",
        cached=False,
        library="baseline",
    ),
    Setup(
        "ceiling",
        "decorator ceiling: (n, k) view, constant bytes",
        "ceiling",
        cached=False,
        library="baseline",
    ),
    Setup(
        "ceiling-redis",
        "store-read ceiling, Redis: (n, k) view returning one backend GET's bytes",
        "store_ceiling",
        "redis",
        cached=False,
        library="baseline",
    ),
    Setup(
        "ceiling-memcached",
        "store-read ceiling, Memcached: (n, k) view returning one backend read's bytes",
        "store_ceiling",
        "memcached",
        cached=False,
        library="baseline",
    ),
    Setup(
        "nocache", "no cache: build + serialise every request", "nocache", cached=False, library="baseline"
    ),
    _cf("memory", True),
    _cf("redis", True),
    _cf("redis", True, LOCAL_ENTRIES),
    _cf("memcached", True),
    _cf("memory", False),
    _cf("redis", False),
    _cf("redis", False, LOCAL_ENTRIES),
    _cf("memcached", False),
    Setup(
        "fc2-memory",
        "fastapi-cache2, InMemoryBackend",
        "fc2_app",
        "memory",
        library="fastapi-cache2",
        needs="fastapi_cache.decorator",
    ),
    Setup(
        "fc2-redis",
        "fastapi-cache2, RedisBackend",
        "fc2_app",
        "redis",
        library="fastapi-cache2",
        needs="fastapi_cache.decorator",
    ),
    Setup("cashews-memory", "cashews, mem://", "cashews_app", "memory", library="cashews", needs="cashews"),
    Setup("cashews-redis", "cashews, redis://", "cashews_app", "redis", library="cashews", needs="cashews"),
]
BY_ID = {s.id: s for s in SETUPS}
QUICK = [
    "floor",
    "ceiling",
    "nocache",
    "cf-fast-memory",
    "cf-deco-memory",
    "cf-fast-redis",
    "cf-fast-redis-l1",
    "cf-fast-memcached",
    "fc2-memory",
    "cashews-memory",
]
PEERS = ("fastapi-cache2", "cashews")
# The best an in-handler cache can do on each store, for the "x ceiling" ratio of the decorator path.
CEILINGS = {"memory": "ceiling", "redis": "ceiling-redis", "memcached": "ceiling-memcached"}


def missing_reason(setup: Setup) -> str | None:
    """Why a setup cannot run here (its library does not import), or ``None``."""
    if setup.needs is None:
        return None
    done = subprocess.run(
        [sys.executable, "-c", f"import {setup.needs}"],
        capture_output=True,
        text=True,
        cwd=BENCH_DIR,
        timeout=60,
    )
    if done.returncode == 0:
        return None
    last = (done.stderr.strip().splitlines() or ["import failed"])[-1]
    return f"not installed ({last}); install the `bench` extra"
