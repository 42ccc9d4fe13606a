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


# -- attacks that hold: memos keyed by named fields never mix entries -------------------------


@pytest.mark.parametrize("fast", [False, True])
def test_an_entry_replaced_within_the_second_is_served_with_its_own_etag(fast: bool) -> None:
    cache = _memory_cache()
    app = FastAPI()
    body = {"v": 1}

    @app.api_route("/doc", methods=["GET", "HEAD"])
    @cache.cache(ttl=60)
    async def doc() -> dict[str, int]:
        return dict(body)

    if fast:
        fastpath.install(app)
    with TestClient(app) as client:
        client.get("/doc")
        first = client.get("/doc")
        body["v"] = 2
        asyncio.run(cache.clear())
        client.get("/doc")
        second = client.get("/doc")
        head = client.head("/doc")
        not_modified = client.get("/doc", headers={"If-None-Match": second.headers["etag"]})
    assert first.headers["x-cache"] == second.headers["x-cache"] == "HIT"
    assert second.json() == {"v": 2} and second.headers["etag"] != first.headers["etag"]
    assert head.headers["etag"] == second.headers["etag"] and head.content == b""
    assert not_modified.status_code == 304


@pytest.mark.parametrize("fast", [False, True])
def test_hosts_and_queries_never_share_a_memoised_key(fast: bool) -> None:
    cache = _memory_cache()
    app = FastAPI()

    @app.get("/echo")
    @cache.cache(ttl=60)
    async def echo(request: cacheframe_request(), q: str = "") -> dict[str, str]:  # type: ignore[valid-type]
        return {"host": request.url.netloc, "q": q}

    if fast:
        fastpath.install(app)
    with TestClient(app) as client:
        for _ in range(2):
            for host in ("a.example", "b.example"):
                for q in ("1", "2"):
                    got = client.get(f"/echo?q={q}", headers={"host": host}).json()
                    assert got == {"host": host, "q": q}


def cacheframe_request() -> type:
    from starlette.requests import Request

    return Request


def test_a_binding_rebuilt_after_configure_keys_into_the_new_cache() -> None:
    app = FastAPI()
    seen: list[str] = []

    @app.get("/p")
    @cacheframe.cache(ttl=60)
    async def p() -> dict[str, int]:
        seen.append("run")
        return {"n": len(seen)}

    fastpath.install(app)
    with TestClient(app) as client:
        cacheframe.configure(url="memory://", prefix="one")
        assert client.get("/p").json() == {"n": 1}
        assert client.get("/p").headers["x-cache"] == "HIT"
        cacheframe.configure(url="memory://", prefix="two")
        assert client.get("/p").json() == {"n": 2}  # a new store: a miss, not the old binding's key
