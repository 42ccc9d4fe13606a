"""Shared fixtures: server processes (tests/servers/) and a fresh default cache per test."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import cacheframe
from cacheframe import default

# Backend name -> fixture yielding an object with ``.url`` (memory needs none).
ALL_BACKENDS: dict[str, str | None] = {
    "memory": None,
    "redis": "redis_server",
    "redis-cluster": "redis_cluster",
    "redis-sentinel": "redis_sentinel",
    "memcached": "memcached_server",
    "memcached-pair": "memcached_pair",
}
# CF_TEST_BACKENDS=memory,redis limits the app-level suites (nox sessions per backend use it).
_selected = [b for b in os.environ.get("CF_TEST_BACKENDS", "").split(",") if b]
BACKEND_FIXTURES = {k: v for k, v in ALL_BACKENDS.items() if not _selected or k in _selected}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No CACHEFRAME_* variable leaks into a test, and every test starts without a default cache."""
    for name in list(os.environ):
        if name.startswith("CACHEFRAME_"):
            monkeypatch.delenv(name)
    saved = default._default
    default._default = None
    yield
    default._default = saved


@pytest.fixture(params=sorted(BACKEND_FIXTURES))
def cache_url(request: pytest.FixtureRequest) -> str:
    """The URL of each backend in turn (real servers started by their fixtures)."""
    fixture = BACKEND_FIXTURES[request.param]
    if fixture is None:
        return "memory://"
    return str(request.getfixturevalue(fixture).url)


@pytest.fixture
def app_cache(cache_url: str) -> cacheframe.Cache:
    """The process default cache on each backend, under a prefix no other test uses.

    These suites check what views and functions do with a working store, so the store
    deadline is roomy (5 s, not 0.25 s): on a busy two-core CI machine a cluster client
    connecting afresh for a TestClient's new event loop (connecting counts inside a call's
    deadline) took more than 2 s, and the cache would rightly answer that request
    uncached (BYPASS). Deadlines and failing
    stores have their own tests (tests/backends/, app/test_faults, test_deadline).
    """
    return cacheframe.configure(url=cache_url, prefix=f"t{uuid.uuid4().hex[:10]}", timeout=5.0)


from servers.memcached import *  # noqa: E402, F403
from servers.redis import *  # noqa: E402, F403
