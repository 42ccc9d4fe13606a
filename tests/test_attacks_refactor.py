"""Attacks on the issue #12 restructure: keys, memos, the fast path and the fill path.

Each test here is one way the new engine, gateway or memos could serve the wrong
entry, keep an invalidated one, or outgrow its bound; each holds.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import cacheframe
from cacheframe import envelope, fastpath
from cacheframe._memo import BytesMemo


def _memory_cache() -> cacheframe.Cache:
    return cacheframe.Cache("memory://", prefix=f"a{uuid.uuid4().hex[:8]}")


async def _settle() -> None:
    """Let every ready task run until it waits on something (no clock involved)."""
    for _ in range(20):
        await asyncio.sleep(0)


# -- the epoch: nothing computed before an invalidation reaches a caller after it -------------


async def test_a_call_after_an_invalidation_does_not_share_a_computation_started_before_it() -> None:
    cache = _memory_cache()
    version = {"v": 1}
    runs: list[int] = []
    started, gate = asyncio.Event(), asyncio.Event()

    @cache.cache(ttl=60)
    async def report() -> int:
        seen = version["v"]
        runs.append(seen)
        started.set()
        await gate.wait()
        return seen

    before = asyncio.create_task(report())
    await started.wait()
    version["v"] = 2
    await cache.clear()  # the data changed: callers from now on must see it
    after = [asyncio.create_task(report()) for _ in range(3)]
    await _settle()
    gate.set()
    assert await before == 1  # asked before the invalidation: the old value is fine
    assert [await a for a in after] == [2, 2, 2]
    assert runs == [1, 2]  # the callers after it still share one computation
    assert await report() == 2


async def test_a_request_after_an_invalidation_does_not_get_a_page_rendered_before_it() -> None:
    cache = _memory_cache()
    version = {"v": 1}
    started, gate = asyncio.Event(), asyncio.Event()
    app = FastAPI()

    @app.get("/page")
    @cache.cache(ttl=60)
    async def page() -> dict[str, int]:
        seen = version["v"]
        started.set()
        await gate.wait()
        return {"v": seen}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        before = asyncio.create_task(client.get("/page"))
        await started.wait()
        version["v"] = 2
        await cache.clear()
        after = asyncio.create_task(client.get("/page"))
        await _settle()
        gate.set()
        assert (await before).json() == {"v": 1}
        assert (await after).json() == {"v": 2}
        assert (await client.get("/page")).json() == {"v": 2}


# -- memos: bounded in bytes even when several threads use them -------------------------------


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Switch threads as often as CPython allows, so that races show up in a short run."""
    saved = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(saved)


@pytest.mark.usefixtures("busy_switching")
def test_bytes_memo_stays_consistent_and_bounded_under_threads() -> None:
    """The gateway's decoded-entry memo is used by the app's loop and the sync portal's
    thread at once (a sync cached function and a view): ``put`` must not raise there,
    nor lose count of its bytes."""
    memo: BytesMemo[tuple[int, int], int] = BytesMemo(1000)
    errors: list[BaseException] = []

    def hammer(thread: int) -> None:
        try:
            for i in range(50_000):
                memo.put((thread, i % 50), i, 37)
                memo.get((thread, (i + 1) % 50))
        except Exception as exc:  # what a sync cached function's caller would get
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert memo.nbytes == 37 * len(memo) <= 1000


# -- the fast path: one classification per request, counted once -------------------------------


def test_a_damaged_entry_under_a_view_key_is_counted_once_with_the_fast_path() -> None:
    cache = _memory_cache()
    app = FastAPI()
    calls = {"n": 0}

    @app.get("/thing")
    @cache.cache(ttl=60)
    async def thing() -> dict[str, int]:
        calls["n"] += 1
        return {"n": calls["n"]}

    fastpath.install(app)
    with TestClient(app) as client:
        assert client.get("/thing").headers["x-cache"] == "MISS"
        (key,) = [k for k in cache.backend._data if not k.endswith(":lock")]  # type: ignore[attr-defined]
        value = envelope.ValueEntry("json", b"1", time.time(), 60)
        asyncio.run(cache.backend.set(key, envelope.encode(value), 60))
        before = cache.stats.bad_entries
        response = client.get("/thing")
    assert response.headers["x-cache"] == "MISS" and response.json() == {"n": 2}
    assert cache.stats.bad_entries == before + 1
