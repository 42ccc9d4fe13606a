"""The Cache object: key/value API, namespaces, lifespan, failing stores and damaged entries."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.datastructures import Headers

import cacheframe
from apps import build_app, calls
from cacheframe import BackendError, Cache, ConfigurationError, envelope, keys
from cacheframe.backends.memory import MemoryBackend


async def test_get_set_delete(app_cache: Cache) -> None:
    """set/get/delete round trip values; absent keys give the default."""
    assert await app_cache.get("k") is None
    assert await app_cache.set("k", {"a": [1, 2]}) is True
    assert await app_cache.get("k") == {"a": [1, 2]}
    assert await app_cache.delete("k") is True
    assert await app_cache.get("k", "dflt") == "dflt"


async def test_timedelta_ttl_and_validation(app_cache: Cache) -> None:
    """ttl takes seconds or a timedelta; non-positive ttl is refused."""
    await app_cache.set("k", 1, dt.timedelta(minutes=1))
    assert await app_cache.get("k") == 1
    with pytest.raises(ConfigurationError):
        await app_cache.set("k", 1, 0)
    with pytest.raises(ConfigurationError):
        cacheframe.cache(ttl=-1)


async def test_clear_namespace_and_all(app_cache: Cache) -> None:
    """clear(ns) empties one namespace; clear() empties the prefix."""
    await app_cache.set("a", 1, namespace="one")
    await app_cache.set("a", 2, namespace="two")
    await app_cache.clear("one")
    assert await app_cache.get("a", namespace="one") is None
    assert await app_cache.get("a", namespace="two") == 2
    await app_cache.clear()
    assert await app_cache.get("a", namespace="two") is None


async def test_prefixes_isolated(cache_url: str) -> None:
    """Two caches with different prefixes on one store never see each other's keys."""
    a = Cache(url=cache_url, prefix="pa")
    b = (
        Cache(url=cache_url, prefix="pb")
        if not cache_url.startswith("memory")
        else Cache(backend=a.backend, prefix="pb")
    )
    await a.set("k", "A")
    await b.set("k", "B")
    await a.clear()
    assert await a.get("k") is None and await b.get("k") == "B"
    await b.clear()


@pytest.mark.parametrize("key", ["*", "a:b", "x\r\nflush_all", "\x00", "k" * 10_000, "{tag}", "ü", "[a-z]?"])
async def test_hostile_keys(app_cache: Cache, key: str) -> None:
    """Glob, Lua-significant, CR/LF, NUL and 10 kB keys and namespaces round-trip, never collide."""
    await app_cache.set(key, key)
    await app_cache.set(key + "x", "other")
    assert await app_cache.get(key) == key
    await app_cache.set("k", "in hostile ns", namespace=key)
    await app_cache.set("k", "in sibling ns", namespace=key + "x")
    await app_cache.clear(key)
    assert await app_cache.get("k", namespace=key) is None
    assert await app_cache.get("k", namespace=key + "x") == "in sibling ns"
    assert await app_cache.get(key) == key


async def test_lifespan_closes_backend() -> None:
    """The lifespan helper closes the cache on shutdown."""
    closed: list[bool] = []

    class Tracking(MemoryBackend):
        async def close(self) -> None:
            closed.append(True)

    cache = Cache(backend=Tracking())
    app = FastAPI(lifespan=cache.lifespan)
    with TestClient(app):
        pass
    assert closed == [True]


def test_default_lifespan() -> None:
    """cacheframe.lifespan closes the default cache on shutdown."""
    closed: list[bool] = []

    class Tracking(MemoryBackend):
        async def close(self) -> None:
            closed.append(True)

    cacheframe.configure(backend=Tracking())
    app = FastAPI(lifespan=cacheframe.lifespan)
    with TestClient(app):
        assert closed == []
    assert closed == [True]


class FailingBackend(MemoryBackend):
    """A store that is down: every call raises, as a real backend does when unreachable."""

    async def get(self, key: str) -> bytes | None:
        raise BackendError("connection refused")

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        raise BackendError("connection refused")


def test_store_down_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    """A failing store makes calls misses: the view still answers, logged once, counted."""
    cache = cacheframe.configure(backend=FailingBackend())
    calls.clear()
    client = TestClient(build_app())
    with caplog.at_level(logging.WARNING, "cacheframe"):
        responses = [client.get("/plain") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [r.json() for r in responses] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert {r.headers["x-cache"] for r in responses} == {"BYPASS"}
    assert cache.stats.backend_errors == 3  # a failed read skips the write
    assert len([r for r in caplog.records if "failed" in r.message]) == 1


async def test_fail_closed_raises() -> None:
    """fail_open=False turns store failures into BackendError."""
    cache = Cache(backend=FailingBackend(), fail_open=False)
    with pytest.raises(BackendError):
        await cache.get("k")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "version", "value-kind"])
def test_damaged_entry_is_a_miss_and_overwritten(app_cache: Cache, damage: str) -> None:
    """A damaged view entry is a miss (never a 500), counted, and overwritten by the fresh response."""
    calls.clear()
    client = TestClient(build_app())
    client.get("/plain")
    ns = app_cache._engine.namespace_key("apps.build_app.<locals>.plain") + keys.uri_segment("", "/plain")
    backend = app_cache.backend

    key = ns + keys.request_digest(
        method="GET",
        host="testserver",
        root_path="",
        path="/plain",
        query_string="",
        headers=Headers(),
        cookies={},
    )
    key = app_cache._engine.stamps.place(key)  # the store key (in its stamp bucket on a cluster)

    async def corrupt() -> None:
        good = await backend.get(key)
        assert good is not None
        bad = {
            "garbage": b"\x00garbage",
            "truncated": good[: len(good) // 2],
            "empty": b"",
            "version": good[:2] + b"\x09" + good[3:],
            "value-kind": envelope.encode(envelope.ValueEntry("json", b"1", 0, 1e9)),
        }[damage]
        await backend.set(key, bad, 60)
        await backend.close()

    asyncio.run(corrupt())
    resp = client.get("/plain")
    assert resp.status_code == 200 and resp.headers["x-cache"] == "MISS" and resp.json() == {"n": 2}
    assert app_cache.stats.bad_entries >= 1  # counted on the read (and on the leader's re-read)
    assert client.get("/plain").headers["x-cache"] == "HIT"


class FlakyBackend(MemoryBackend):
    """A real in-memory store that can be switched off, counting the calls that reach it."""

    down = False
    reached = 0

    async def get(self, key: str) -> bytes | None:
        self.reached += 1
        if self.down:
            raise BackendError("down")
        return await super().get(key)

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        self.reached += 1
        if self.down:
            raise BackendError("down")
        await super().set(key, value, ttl)


def test_circuit_breaker_opens_probes_and_recovers(monkeypatch: pytest.MonkeyPatch) -> None:
    """After N failures the store is skipped; after the cool-down one probe; recovery resumes caching."""
    backend = FlakyBackend()
    cache = cacheframe.configure(backend=backend, breaker_threshold=3, breaker_cooldown=30)
    calls.clear()
    client = TestClient(build_app())
    backend.down = True
    for _ in range(3):  # a read is the entry's get and its stamps' (this store has no stamped read)
        assert client.get("/plain").headers["x-cache"] == "BYPASS"
    reached = backend.reached
    assert reached >= 3 and cache._gateway.breaker.state == "open"
    for _ in range(5):  # open: no store call at all
        assert client.get("/plain").status_code == 200
    assert backend.reached == reached and cache.stats.short_circuited == 5
    backend.down = False
    clock = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: clock() + 31)
    assert client.get("/plain").headers["x-cache"] == "MISS"  # the probe succeeds
    assert cache._gateway.breaker.state == "closed"
    assert client.get("/plain").headers["x-cache"] == "HIT"


async def test_unknown_serializer_id_is_a_miss() -> None:
    """A value entry written by a serialiser this cache does not use is a miss, counted."""
    cache = Cache(url="memory://")
    seen: list[int] = []

    @cache.cache(ttl=60, namespace="ser")
    async def f(x: int) -> int:
        seen.append(x)
        return x

    await f(1)
    assert isinstance(cache.backend, MemoryBackend)
    key = next(k for k in cache.backend._data if ":ser:" in k)
    await cache.backend.set(key, envelope.encode(envelope.ValueEntry("yaml", b"1", 0, 1e12)), 60)
    assert await f(1) == 1 and seen == [1, 1]
    assert cache.stats.bad_entries == 1


def test_a_proxy_backend_is_read_through_get() -> None:
    """A backend whose methods come from __getattr__ (a delegating wrapper) is accepted and read
    through its async get, never through a get_nowait it does not define itself."""

    class Proxy:
        def __init__(self, inner: MemoryBackend) -> None:
            self.inner = inner
            self.gets = 0

        def __getattr__(self, name: str) -> object:
            if name == "get":
                self.gets += 1
            return getattr(self.inner, name)

    proxy = Proxy(MemoryBackend())
    cache = Cache(backend=proxy)  # type: ignore[arg-type]

    async def run() -> object:
        await cache.set("k", 1)
        return await cache.get("k")

    assert asyncio.run(run()) == 1
    assert proxy.gets == 1


def test_decoded_entry_memo_never_mixes_entries_that_share_their_head() -> None:
    """The memo is keyed by store key and reuses a decoded entry only for equal stored
    bytes: two entries alike up to the body stay apart."""
    cache = Cache(backend=MemoryBackend())

    def stored(user: bytes) -> bytes:
        etag = b'"' + b"e" * 32 + b'"'
        entry = envelope.ResponseEntry(200, [(b"x-user", user)], user + b"'s", etag, 1.0, 60.0)
        return envelope.encode(entry)

    first, second = stored(b"alice"), stored(b"bob")
    decode = cache._gateway.decode
    one, two = decode("k1", first), decode("k2", bytes(second))
    assert isinstance(one, envelope.ResponseEntry) and isinstance(two, envelope.ResponseEntry)
    assert (one.body, one.headers) == (b"alice's", [(b"x-user", b"alice")])
    assert (two.body, two.headers) == (b"bob's", [(b"x-user", b"bob")])
    assert decode("k1", bytes(first)) is one  # equal bytes: the decoded entry is reused
