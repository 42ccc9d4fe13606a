"""Invalidation by view arguments, function arguments, tag and namespace: exact, race-safe,
eviction-safe, on every backend (issue #13)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from cacheframe import Cache, invalidates, tag
from cacheframe.exceptions import BackendError, ConfigurationError


def _cache(url: str, prefix: str | None = None) -> Cache:
    """A cache of its own on ``url``; a generous store timeout (the suite loads shared servers)."""
    return Cache(url=url, prefix=prefix or f"i{uuid.uuid4().hex[:8]}", timeout=5.0)


def _catalogue(cache: Cache, data: dict[int, str]) -> tuple[FastAPI, dict[str, int], Any]:
    """An app with a detail view, a list view and write routes over ``data``."""
    app = FastAPI()
    runs = {"read": 0, "list": 0}

    @app.get("/items/{item_id}")
    @cache.cache(ttl=60, tags=["item:{item_id}"])
    async def read_item(item_id: int, q: str | None = None) -> dict[str, Any]:
        runs["read"] += 1
        return {"id": item_id, "name": data[item_id], "q": q}

    @app.get("/items")
    @cache.cache(ttl=60, tags=["items"])
    async def list_items() -> list[str]:
        runs["list"] += 1
        return [data[i] for i in sorted(data)]

    @app.put("/items/{item_id}")
    @invalidates(read_item, list_items)
    async def update_item(item_id: int, name: str) -> dict[str, Any]:
        if item_id not in data:
            raise HTTPException(404)
        data[item_id] = name
        return {"id": item_id, "name": name}

    return app, runs, read_item


def _x(reply: httpx.Response) -> str:
    return reply.headers["x-cache"]


def test_view_invalidate_by_path_parameters_reaches_every_variant(cache_url: str) -> None:
    """read_item.invalidate(item_id=3) makes every variant of /items/3 (query, Host) a miss; other
    items stay hits."""
    cache, data = _cache(cache_url), {3: "three", 4: "four"}
    app, _runs, read_item = _catalogue(cache, data)
    with TestClient(app) as client:
        variants = [("/items/3", {}), ("/items/3?q=x", {}), ("/items/3", {"host": "other.example"})]
        for path, headers in variants:
            assert _x(client.get(path, headers=headers)) == "MISS"
            assert _x(client.get(path, headers=headers)) == "HIT"
        assert _x(client.get("/items/4")) == "MISS"
        data[3] = "THREE"
        asyncio.run(read_item.invalidate(item_id=3))
        for path, headers in variants:
            reply = client.get(path, headers=headers)
            assert _x(reply) == "MISS" and reply.json()["name"] == "THREE"
        assert _x(client.get("/items/4")) == "HIT"


def test_view_invalidate_without_arguments_reaches_all_its_entries(cache_url: str) -> None:
    """read_item.invalidate() invalidates every entry of that view, and only of it."""
    cache, data = _cache(cache_url), {1: "a", 2: "b"}
    app, _runs, read_item = _catalogue(cache, data)
    with TestClient(app) as client:
        for path in ("/items/1", "/items/2", "/items"):
            client.get(path)
        asyncio.run(read_item.invalidate())
        assert [_x(client.get(p)) for p in ("/items/1", "/items/2", "/items")] == ["MISS", "MISS", "HIT"]


def test_invalidate_names_checked(cache_url: str) -> None:
    """A parameter the view does not have, or a query parameter where its path parameters are
    known, is a clear error rather than an invalidation of nothing."""
    cache = _cache(cache_url)
    app, _runs, read_item = _catalogue(cache, {1: "a"})
    with TestClient(app) as client:
        client.get("/items/1")
    with pytest.raises(ConfigurationError, match="no parameter 'nope'"):
        asyncio.run(read_item.invalidate(nope=1))
    with pytest.raises(ConfigurationError, match="path parameters"):
        asyncio.run(read_item.invalidate(q="x"))


def test_tags_from_arguments_are_exact(cache_url: str) -> None:
    """invalidate_tags("item:1") reaches item 1 only, never item 10; "items" reaches the list."""
    cache, data = _cache(cache_url), {1: "a", 10: "j"}
    app, _runs, _ = _catalogue(cache, data)
    with TestClient(app) as client:
        for path in ("/items/1", "/items/10", "/items"):
            client.get(path)
        asyncio.run(cache.invalidate_tags("item:1"))
        assert [_x(client.get(p)) for p in ("/items/1", "/items/10", "/items")] == ["MISS", "HIT", "HIT"]
        asyncio.run(cache.invalidate_tags("items"))
        assert _x(client.get("/items")) == "MISS"


def test_soft_invalidation_serves_stale_once_while_one_refresh_runs(cache_url: str) -> None:
    """soft=True: the next request is STALE (the old data) while one refresh runs; then HIT with
    the new data."""
    cache, data = _cache(cache_url), {5: "old"}
    app, runs, _ = _catalogue(cache, data)
    with TestClient(app) as client:
        client.get("/items/5")
        data[5] = "new"
        asyncio.run(cache.invalidate_tags("item:5", soft=True))
        stale = client.get("/items/5")  # TestClient runs the background refresh before returning
        assert _x(stale) == "STALE" and stale.json()["name"] == "old"
        fresh = client.get("/items/5")
        assert _x(fresh) == "HIT" and fresh.json()["name"] == "new"
        assert runs["read"] == 2


def test_invalidates_acts_after_success_only(cache_url: str) -> None:
    """@invalidates on a write route: a 2xx invalidates the detail (by its path parameter) and the
    list; a 404 invalidates nothing."""
    cache, data = _cache(cache_url), {7: "seven", 8: "eight"}
    app, _runs, _ = _catalogue(cache, data)
    with TestClient(app) as client:
        for path in ("/items/7", "/items/8", "/items"):
            client.get(path)
        assert client.put("/items/9", params={"name": "x"}).status_code == 404
        assert [_x(client.get(p)) for p in ("/items/7", "/items/8", "/items")] == ["HIT"] * 3
        assert client.put("/items/7", params={"name": "SEVEN"}).status_code == 200
        detail = client.get("/items/7")
        assert _x(detail) == "MISS" and detail.json()["name"] == "SEVEN"
        assert _x(client.get("/items/8")) == "HIT"
        assert _x(client.get("/items")) == "MISS"


async def test_function_invalidate_is_exact(cache_url: str) -> None:
    """fetch_rate.invalidate("EUR") invalidates that call's entry only; a sync function's
    invalidate is sync."""
    cache = _cache(cache_url)
    calls: list[str] = []

    @cache.cache(ttl=60)
    async def fetch_rate(currency: str) -> float:
        calls.append(currency)
        return 1.0

    @cache.cache(ttl=60)
    def square(n: int) -> int:
        calls.append(f"sq{n}")
        return n * n

    for currency in ("EUR", "USD", "EUR", "USD"):
        await fetch_rate(currency)
    await fetch_rate.invalidate("EUR")  # type: ignore[attr-defined]
    await fetch_rate("EUR")
    await fetch_rate("USD")
    assert calls == ["EUR", "USD", "EUR"]
    await asyncio.to_thread(square, 3)
    assert square.invalidate(3) is None  # type: ignore[attr-defined]  # sync, nothing to await
    await asyncio.to_thread(square, 3)
    assert calls.count("sq3") == 2


@pytest.mark.parametrize("how", ["namespace clear", "request tag", "resource"])
async def test_an_invalidation_reaches_a_fill_running_in_another_process(cache_url: str, how: str) -> None:
    """A computation another process started before ``Cache.clear(namespace)``,
    ``invalidate_tags`` or ``rate.invalidate("EUR")`` is never read as valid afterwards."""
    if cache_url == "memory://":
        pytest.skip("another process cannot share an in-process store")
    prefix = f"c{uuid.uuid4().hex[:8]}"
    first, second = _cache(cache_url, prefix), _cache(cache_url, prefix)
    invalidations = {
        "namespace clear": lambda rate_b: second.clear("rates"),
        "request tag": lambda rate_b: second.invalidate_tags("rate:EUR"),
        "resource": lambda rate_b: rate_b.invalidate("EUR"),
    }
    await _race(first, second, invalidations[how])


async def _race(first: Cache, second: Cache, invalidate: Any) -> None:
    """Process A (``first``) misses and blocks inside the function; process B (``second``, the
    same function bound to another Cache: nothing shared but the store) invalidates; A finishes
    and writes. Afterwards neither serves A's value as valid."""
    entered, release = asyncio.Event(), asyncio.Event()
    source = {"EUR": "old"}
    blocking = {"on": True}

    def bind(cache: Cache) -> Any:  # the same function (same code, same keys) in each "process"
        @cache.cache(ttl=60, namespace="rates", tags=["rate:{currency}"])
        async def rate(currency: str) -> str:
            value = source[currency]
            if blocking["on"]:
                entered.set()
                await release.wait()
            return value

        return rate

    rate_a, rate_b = bind(first), bind(second)
    task = asyncio.create_task(rate_a("EUR"))
    await entered.wait()  # A read the old data and is computing
    source["EUR"] = "new"
    blocking["on"] = False
    await invalidate(rate_b)  # B invalidates; A is still inside the function
    release.set()
    assert await task == "old"  # A answers its own caller with what it computed
    assert await rate_b("EUR") == "new"  # but never stored it as valid for anyone
    assert await rate_a("EUR") == "new"
    await first.close()
    await second.close()


def test_lost_stamps_make_misses_never_stale_hits(cache_url: str) -> None:
    """If the store loses the stamps (evicted, restarted), entries are misses, never hits."""
    cache, data = _cache(cache_url), {1: "a"}
    app, _runs, _ = _catalogue(cache, data)
    with TestClient(app) as client:
        client.get("/items/1")
        assert _x(client.get("/items/1")) == "HIT"
        engine = cache._engine
        deps = next(iter(engine.key_deps._values.values()))  # the stamps of /items/1's entries

        async def lose() -> None:  # each stamp replaced by what it never held: as if lost
            for key in deps.keys:
                await engine.gateway.write_stamps({key: b"lost-it!"}, 60, fail_open=False)

        asyncio.run(lose())
        assert _x(client.get("/items/1")) == "MISS"


def test_bad_tags_are_clear_errors() -> None:
    """A placeholder naming no parameter, more than 32 tags, or a tag over 200 bytes: errors."""
    cache = Cache(url="memory://")
    with pytest.raises(ConfigurationError, match="names no parameter"):

        @cache.cache(ttl=1, tags=["item:{nope}"])
        async def f(item_id: int) -> int:
            return item_id

    with pytest.raises(ConfigurationError, match="at most 32"):
        cache.cache(ttl=1, tags=[f"t{i}" for i in range(33)])
    with pytest.raises(ConfigurationError, match="longer than 200"):
        asyncio.run(cache.invalidate_tags("x" * 201))
    with pytest.raises(ConfigurationError, match="list of tag templates"):
        cache.cache(ttl=1, tags="item")  # type: ignore[arg-type]


async def test_invalidation_during_an_outage_raises_and_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    """A store that cannot take the invalidation: BackendError (even failing open), counted, WARNING."""
    from cacheframe.backends.memory import MemoryBackend

    class Down(MemoryBackend):
        async def write_stamps(self, stamps: Any, ttl: Any) -> None:
            raise BackendError("store down")

    cache = Cache(backend=Down())
    assert cache.settings.fail_open
    with pytest.raises(BackendError):
        await cache.invalidate_tags("item:1")
    assert cache.stats.store_errors.get("set") == 1
    assert "writing 1 stamp(s) failed" in caplog.text


def _tagged_lists(cache: Cache, data: dict[int, str]) -> tuple[FastAPI, dict[str, int]]:
    """Two list views tagged from their results: one with result_tags=, one with cacheframe.tag()."""
    from cacheframe import tag

    app = FastAPI()
    runs = {"low": 0, "high": 0}

    @app.get("/low")
    @cache.cache(ttl=60, result_tags=lambda rows: [f"item:{row['id']}" for row in rows])
    async def low() -> list[dict[str, Any]]:
        runs["low"] += 1
        return [{"id": i, "name": data[i]} for i in sorted(data) if i < 10]

    @app.get("/high")
    @cache.cache(ttl=60)
    async def high() -> list[dict[str, Any]]:
        runs["high"] += 1
        rows = [{"id": i, "name": data[i]} for i in sorted(data) if i >= 10]
        tag(*(f"item:{row['id']}" for row in rows))
        return rows

    return app, runs


def test_result_tags_reach_every_list_showing_the_item(cache_url: str) -> None:
    """A list tagged from its result (result_tags= or cacheframe.tag()) is invalidated by a tag of
    any item it shows, and only by those. (A function that tags its result without declaring
    result_tags has its first tagged result not stored: from then on its lookups read the tag
    epoch. One that declares it reads the epoch from the start.)"""
    cache, data = _cache(cache_url), {1: "a", 2: "b", 10: "j"}
    app, _runs = _tagged_lists(cache, data)
    with TestClient(app) as client:
        assert _x(client.get("/low")) == "MISS"
        assert _x(client.get("/low")) == "HIT"
        client.get("/high")  # learns that it tags its results
        assert _x(client.get("/high")) == "MISS"
        assert _x(client.get("/high")) == "HIT"
        data[2] = "B"
        asyncio.run(cache.invalidate_tags("item:2"))
        low = client.get("/low")
        assert _x(low) == "MISS" and low.json()[1]["name"] == "B"
        assert _x(client.get("/high")) == "HIT"
        asyncio.run(cache.invalidate_tags("item:10", soft=True))
        assert _x(client.get("/high")) == "STALE"
        assert _x(client.get("/high")) == "HIT"


async def test_a_hard_result_tag_invalidation_outranks_a_soft_one(cache_url: str) -> None:
    """An entry whose request tag was invalidated softly, then its result tag hard, is a miss,
    never served stale: every hard stamp is checked before a soft change counts. (Found by the
    state machine: a soft stamp lost and created anew, then a result tag invalidated.)"""
    cache, data = _cache(cache_url), {"a": 0}
    runs = []

    @cache.cache(ttl=60, tags=["record:{key}"], result_tags=lambda value: [f"row:{value[0]}"])
    async def record(key: str) -> tuple[str, int]:
        runs.append(key)
        return key, data[key]

    assert await record("a") == ("a", 0)
    assert await record("a") == ("a", 0) and len(runs) == 1  # a hit
    data["a"] = 1
    await cache.invalidate_tags("record:a", soft=True)
    await cache.invalidate_tags("row:a")
    assert await record("a") == ("a", 1)
    assert len(runs) == 2


async def test_result_tag_invalidation_reaches_a_fill_running_in_another_process(cache_url: str) -> None:
    """A computation that took item 1's tag from its result, running while another process
    invalidated that tag, never lands as valid."""
    if cache_url == "memory://":
        pytest.skip("another process cannot share an in-process store")
    prefix = f"q{uuid.uuid4().hex[:8]}"
    first, second = _cache(cache_url, prefix), _cache(cache_url, prefix)
    entered, release = asyncio.Event(), asyncio.Event()
    source = {"name": "old"}
    holding = {"on": False}

    def bind(cache: Cache) -> Any:
        @cache.cache(ttl=60, namespace="lists", result_tags=lambda rows: [f"item:{r['id']}" for r in rows])
        async def rows() -> list[dict[str, Any]]:
            row = {"id": 1, "name": source["name"]}
            if holding["on"]:
                entered.set()
                await release.wait()
            return [row]

        return rows

    rows_a, rows_b = bind(first), bind(second)
    for rows in (rows_a, rows_b):
        await rows()  # each process learns that the function tags its results
    await first.clear("lists")
    holding["on"] = True
    task = asyncio.create_task(rows_a())
    await entered.wait()
    source["name"] = "new"
    holding["on"] = False
    await second.invalidate_tags("item:1")
    release.set()
    assert (await task)[0]["name"] == "old"
    assert (await rows_b())[0]["name"] == "new"
    assert (await rows_a())[0]["name"] == "new"
    await first.close()
    await second.close()


async def test_concurrent_cold_misses_seal_alike(cache_url: str) -> None:
    """Many first misses at once, each finding the namespace's stamps missing, share one
    creation of them: every entry they store is valid (on every store, atomic creation or not)."""
    cache = _cache(cache_url)

    @cache.cache(ttl=60, namespace="cold")
    async def value(n: int) -> int:
        await asyncio.sleep(0.01)
        return n

    assert await asyncio.gather(*(value(i) for i in range(20))) == list(range(20))
    misses = cache.stats.misses
    assert await asyncio.gather(*(value(i) for i in range(20))) == list(range(20))
    assert cache.stats.misses == misses  # all hits
    await cache.close()


async def test_each_invalidation_is_counted_once() -> None:
    """invalidate_tags, a function's invalidate and clear each count one invalidation."""
    cache = _cache("memory://")

    @cache.cache(ttl=60)
    async def value(n: int) -> int:
        return n

    await value(1)
    await cache.invalidate_tags("a", "b")
    await value.invalidate(1)  # type: ignore[attr-defined]
    await cache.clear("kv")
    assert cache.stats.invalidations == 3


def test_a_first_tagged_result_says_why_it_was_not_stored() -> None:
    """A view that tags its result with ``cacheframe.tag`` (undeclared) has its first result not
    stored (its lookups start reading the tag epoch): counted and sent as ``result-tags``, not as
    a store failure. One that declares ``result_tags`` stores its first result, on a fresh store
    too (the tag epoch created before it ran is the one it is checked against)."""
    cache = _cache("memory://")
    app = FastAPI()

    @app.get("/list")
    @cache.cache(ttl=60)
    async def listing() -> list[int]:
        tag("item:1", "item:2")
        return [1, 2]

    @app.get("/declared")
    @cache.cache(ttl=60, result_tags=lambda rows: [f"item:{r}" for r in rows])
    async def declared() -> list[int]:
        return [1, 2]

    client = TestClient(app)
    first = client.get("/list")
    assert first.headers["x-cache"] == "MISS" and "detail=result-tags" in first.headers["cache-status"]
    assert [reason for (_, reason) in cache.stats.not_stored_by] == ["result-tags"]
    client.get("/list")
    assert client.get("/list").headers["x-cache"] == "HIT"
    assert "stored" in client.get("/declared").headers["cache-status"]
    assert client.get("/declared").headers["x-cache"] == "HIT"
