"""The in-process tier (issue #14) against real servers: its settings, its hits on both paths,
and guarantees 2-6 (faults degrade to correct, no stale fill, no storm, memory, Memcached).

"Processes" here are Caches on one prefix (nothing shared but the store and its channel).
Waits poll with generous deadlines; a wait of at least some time is only ever used where
waiting longer can only make the assertion easier (past a bound, past a TTL).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.testclient import TestClient

import cacheframe
from cacheframe import Cache, fastpath
from cacheframe._local import LEASE, TTL, VALIDATE, LocalTier
from cacheframe.exceptions import BackendError, ConfigurationError
from cacheframe.settings import CacheSettings
from servers import ServerProcess, free_port, require_binary
from servers.memcached import MemcachedServer
from servers.redis import RedisServer, _cli, start_redis

pytestmark = pytest.mark.timeout(120)

BOUND = 0.1  # local_max_staleness everywhere here (the default)
_DATA: dict[str, str] = {}  # what the cached function returns (a global: not part of its identity)


def _caches(url: str, n: int = 2, **options: Any) -> list[Cache]:
    """``n`` caches sharing ``url`` and one prefix (as processes would), each with a local tier."""
    prefix = f"l{uuid.uuid4().hex[:8]}"
    settings: dict[str, Any] = {"local_max_entries": 1000, "timeout": 5.0, **options}
    return [Cache(url=url, prefix=prefix, **settings) for _ in range(n)]


def _item(cache: Cache) -> Any:
    @cache.cache(ttl=60, namespace="items", tags=["item:{key}"])
    async def item(key: str) -> str:
        return _DATA[key]

    return item


def _local_hits(cache: Cache, namespace: str = "items") -> int:
    return cache.stats.requests.get((namespace, "hit", "local"), 0)


def _tier(cache: Cache) -> LocalTier:
    tier = cache._gateway.local
    assert tier is not None
    return tier


async def _until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    """Poll ``check`` (sync or async) until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = check()
        if inspect.isawaitable(done):
            done = await done
        if done:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _hit_locally(cache: Cache, func: Any, key: str) -> Callable[[], Awaitable[bool]]:
    """A check: one call of ``func(key)`` answered by the local tier."""

    async def check() -> bool:
        before = _local_hits(cache)
        await func(key)
        return _local_hits(cache) > before

    return check


class LocalHitLog:
    """Every answer of a tier's copies: (monotonic time, send time of its last answered PING,
    the subscription it was proven on). Wraps ``tier.get`` (the tier's own clock is monotonic)."""

    def __init__(self, tier: LocalTier) -> None:
        self.entries: list[tuple[float, float, object]] = []
        real = tier.get

        def get(key: str, stamps: Any) -> list[bytes] | None:
            found = real(key, stamps)
            if found is not None:
                self.entries.append((time.monotonic(), tier._proven, tier._sub))
            return found

        tier.get = get  # type: ignore[method-assign]

    def after(self, moment: float) -> list[tuple[float, float, object]]:
        return [entry for entry in self.entries if entry[0] > moment]


async def _never_stale(func: Any, key: str, old: set[str], since: float, rounds: int = 30) -> None:
    """``func(key)`` answers none of ``old`` from ``since`` + BOUND on (waiting first if need be)."""
    while time.monotonic() <= since + BOUND:
        await asyncio.sleep(0.01)
    for _ in range(rounds):
        assert await func(key) not in old
        await asyncio.sleep(0.002)


# -- API -----------------------------------------------------------------------------------------


def test_settings_keywords_and_environment(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """local_* are Cache keywords, configure() options and CACHEFRAME_LOCAL_* variables."""
    cache = Cache(
        url=redis_server.url, local_max_entries=7, local_max_bytes=5000, local_max_staleness=0.3, local_ttl=9
    )
    tier = _tier(cache)
    assert (tier.max_entries, tier.max_bytes, tier.bound, tier.cap, tier.mode) == (7, 5000, 0.3, 9, LEASE)
    assert Cache(url=redis_server.url)._gateway.local is None  # off by default
    for name, value in {"ENTRIES": "11", "BYTES": "4096", "STALENESS": "0.25", "": ""}.items():
        if name:
            monkeypatch.setenv(f"CACHEFRAME_LOCAL_MAX_{name}", value)
    monkeypatch.setenv("CACHEFRAME_LOCAL_TTL", "2.5")
    monkeypatch.setenv("CACHEFRAME_URL", redis_server.url)
    tier = _tier(cacheframe.configure())
    assert (tier.max_entries, tier.max_bytes, tier.bound, tier.cap) == (11, 4096, 0.25, 2.5)
    for bad in ({"local_max_entries": -1}, {"local_max_bytes": 0}, {"local_max_staleness": 0}):
        with pytest.raises(ValueError):
            CacheSettings(**bad)
    with pytest.raises(ValueError):
        CacheSettings(local_max_staleness=61)
    with pytest.raises(ValueError):
        CacheSettings(local_ttl=0)


def test_memory_store_with_a_local_tier_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    clear = r"local_max_entries=5 .*in-process already.*local_max_entries=0"
    with pytest.raises(ConfigurationError, match=clear):
        Cache(url="memory://", local_max_entries=5)
    monkeypatch.setenv("CACHEFRAME_LOCAL_MAX_ENTRIES", "3")
    with pytest.raises(ConfigurationError, match="CACHEFRAME_LOCAL_MAX_ENTRIES"):
        cacheframe.configure(url="memory://")
    assert Cache(url="memory://", local_max_entries=0)._gateway.local is None
    for option in ({"local_max_staleness": 0.5}, {"local_max_bytes": 1024}, {"local_ttl": 5.0}):
        with pytest.raises(ConfigurationError, match=f"{next(iter(option))}.*in-process already"):
            Cache(url="memory://", **option)  # type: ignore[arg-type]


def _view_app(cache: Cache, runs: list[int], fast: bool = False) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    @cache.cache(ttl=60, namespace="views", tags=["item:{item_id}"])
    async def read_item(item_id: int) -> dict[str, Any]:
        runs.append(item_id)
        return {"id": item_id, "name": _DATA.get(f"view{item_id}", "?")}

    if fast:
        fastpath.install(app)
    return app


@pytest.mark.parametrize("fast", [False, True], ids=["decorator", "fastpath"])
def test_a_view_hit_from_the_local_tier(redis_server: RedisServer, fast: bool) -> None:
    """A hit answered by the tier says X-Cache: HIT, is counted as requests[(ns, "hit", "local")],
    sends no GET or MGET to Redis, and the fast path serves such hits too."""
    (cache,) = _caches(redis_server.url, 1)
    runs: list[int] = []
    with TestClient(_view_app(cache, runs, fast)) as client:
        first = client.get("/items/1")
        assert first.headers["x-cache"] == "MISS"
        deadline = time.monotonic() + 30
        while _local_hits(cache, "views") == 0:  # after the channel's first pong
            assert time.monotonic() < deadline, "no hit from the local tier"
            reply = client.get("/items/1")
            assert reply.headers["x-cache"] == "HIT" and reply.content == first.content

        async def hits() -> tuple[int, dict[str, int], list[str]]:
            raw = aioredis.Redis(host="127.0.0.1", port=redis_server.port)

            async def reads() -> dict[str, int]:
                stats = await raw.info("commandstats")
                return {k: int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_get", "cmdstat_mget")}

            try:
                before, local, fast_hits = await reads(), _local_hits(cache, "views"), cache.stats.fast_hits
                seen = [
                    (await asyncio.to_thread(client.get, "/items/1")).headers["x-cache"] for _ in range(20)
                ]
                after = await reads()
            finally:
                await raw.aclose()
            assert (cache.stats.fast_hits - fast_hits >= 15) == fast
            delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
            return _local_hits(cache, "views") - local, delta, seen

        local, delta, seen = asyncio.run(hits())
        assert seen == ["HIT"] * 20
        assert local >= 15  # the lease may lapse between two requests: then one store read
        assert sum(delta.values()) <= 20 - local
        assert runs == [1]


# -- Guarantee 2: faults degrade to correct, never to stale -----------------------------------


def _fault_caches(url: str, n: int = 2) -> list[Cache]:
    """Caches for fault tests: short store deadlines, a breaker that recovers fast."""
    return _caches(url, n, timeout=0.5, breaker_cooldown=0.2, breaker_threshold=3)


async def test_pubsub_connection_killed(fresh_redis_server: RedisServer) -> None:
    """CLIENT KILL TYPE pubsub: the tier resets; an invalidation made while it has no channel is
    never missed; its copies answer again only on a new subscription, after its first pong."""
    a, b = _fault_caches(fresh_redis_server.url)
    fa, fb = _item(a), _item(b)
    tier, key = _tier(a), "k-pubsub"
    _DATA[key] = "v0"
    raw = aioredis.Redis(host="127.0.0.1", port=fresh_redis_server.port)
    try:
        await _until(_hit_locally(a, fa, key), "a first local hit")
        log, old_sub = LocalHitLog(tier), tier._sub
        killed_at = time.monotonic()
        assert await raw.execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
        await _until(lambda: tier._sub is not old_sub, "the tier to notice")
        _DATA[key] = "v1"
        await fb.invalidate(key)  # while the tier has no channel: its message is lost to it
        invalidated = time.monotonic()
        assert tier._sub is None  # nothing asked for a new one yet
        assert await fa(key) == "v1"
        await _until(_hit_locally(a, fa, key), "local hits again")
        await _never_stale(fa, key, {"v0"}, invalidated)
        later = log.after(killed_at)
        assert later and all(sub is not old_sub and proven > killed_at for _, proven, sub in later)
    finally:
        await raw.aclose()
        await a.close()
        await b.close()


async def test_redis_paused(fresh_redis_server: RedisServer) -> None:
    """SIGSTOP: the lease runs out, no copy answers while paused (calls fail open); after
    SIGCONT an invalidation is never missed and copies answer again after a fresh pong."""
    a, b = _fault_caches(fresh_redis_server.url)
    fa, fb = _item(a), _item(b)
    tier, key, process = _tier(a), "k-pause", fresh_redis_server.process
    _DATA[key] = "v0"
    try:
        await _until(_hit_locally(a, fa, key), "a first local hit")
        log = LocalHitLog(tier)
        paused_at = time.monotonic()
        process.pause()
        try:
            while time.monotonic() <= paused_at + BOUND:
                await fa(key)  # may still be answered under the lease
                await asyncio.sleep(0.01)
            local, errors = _local_hits(a), a.stats.backend_errors
            _DATA[key] = "v1"
            for _ in range(5):
                assert await fa(key) == "v1"  # fails open: computed, not the copy
            assert _local_hits(a) == local and tier.bypassed > 0
            assert a.stats.backend_errors + a.stats.short_circuited > errors
        finally:
            resumed_at = time.monotonic()
            process.resume()
        assert not [t for t, _, _ in log.after(paused_at + BOUND) if t < resumed_at]
        await _retry(lambda: fb.invalidate(key))
        invalidated = time.monotonic()
        await _until(_hit_locally(a, fa, key), "local hits again")
        await _never_stale(fa, key, {"v0"}, invalidated)
        assert all(proven > paused_at for t, proven, _ in log.after(resumed_at))  # fresh pongs only
    finally:
        process.resume()
        await a.close()
        await b.close()


async def _retry(call: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> None:
    """``call()`` until it does not raise BackendError (a store coming back)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await call()
            return
        except BackendError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_redis_killed_then_restarted(fresh_redis_server: RedisServer) -> None:
    """SIGKILL: the tier resets at once and nothing answers from it while the store is down
    (calls fail open); after a restart on the same port (its data reloaded), an invalidation
    is never missed, and copies answer only from a new subscription's pongs."""
    a, b = _fault_caches(fresh_redis_server.url)
    fa, fb = _item(a), _item(b)
    tier, key, process = _tier(a), "k-kill", fresh_redis_server.process
    _DATA[key] = "v0"
    try:
        await _until(_hit_locally(a, fa, key), "a first local hit")
        raw = aioredis.Redis(host="127.0.0.1", port=fresh_redis_server.port)
        await raw.save()  # the restart reloads it: old entries and stamps come back
        await raw.aclose()
        log, old_sub = LocalHitLog(tier), tier._sub
        killed_at = time.monotonic()
        process.kill()
        await _until(lambda: tier._sub is not old_sub, "the tier to notice")
        local = _local_hits(a)
        _DATA[key] = "v1"
        for _ in range(5):
            assert await fa(key) == "v1"  # fails open
        assert _local_hits(a) == local
        process.start()
        restarted_at = time.monotonic()
        raw = aioredis.Redis(host="127.0.0.1", port=fresh_redis_server.port)
        assert await raw.dbsize() > 0  # the old entry and stamps are back
        await raw.aclose()
        _DATA[key] = "v2"
        await _retry(lambda: fb.invalidate(key))
        invalidated = time.monotonic()
        await _until(_hit_locally(a, fa, key), "local hits again")
        await _never_stale(fa, key, {"v0", "v1"}, invalidated)
        later = log.after(killed_at)
        assert later and all(sub is not old_sub and proven > restarted_at for _, proven, sub in later)
    finally:
        await a.close()
        await b.close()


class _SentinelSetup:
    """A master, its replica and one sentinel (quorum 1) watching them as ``fo``."""

    def __init__(self) -> None:
        self.master = start_redis("redis-l1-master")
        self.replica = start_redis("redis-l1-replica", "--replicaof", "127.0.0.1", str(self.master.port))
        port = free_port()
        self.sentinel = ServerProcess(
            [require_binary("redis-server"), "sentinel.conf", "--sentinel"], port, "redis-l1-sentinel"
        )
        with open(os.path.join(self.sentinel.workdir, "sentinel.conf"), "w") as conf:
            conf.write(
                f"port {port}\nbind 127.0.0.1\ndir {self.sentinel.workdir}\n"
                f"sentinel monitor fo 127.0.0.1 {self.master.port} 1\n"
                "sentinel down-after-milliseconds fo 1000\nsentinel failover-timeout fo 5000\n"
            )
        self.url = f"redis+sentinel://127.0.0.1:{port}/fo"

    def start(self) -> None:
        _wait(lambda: "state=online" in _cli(self.master.port, "INFO", "replication"), "the replica")
        self.sentinel.start()  # it learns of the replica from the master's INFO at once
        replicas = lambda: _cli(self.sentinel.port, "SENTINEL", "replicas", "fo")  # noqa: E731
        _wait(lambda: str(self.replica.port) in replicas(), "the sentinel to know the replica")

    def master_port(self) -> str:
        return _cli(self.sentinel.port, "SENTINEL", "get-master-addr-by-name", "fo").split()[-1]

    def stop(self) -> None:
        for process in (self.sentinel, self.replica, self.master):
            process.stop()


def _wait(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def sentinel_setup() -> Iterator[_SentinelSetup]:
    setup = _SentinelSetup()
    try:
        setup.start()
        yield setup
    finally:
        setup.stop()


async def test_sentinel_failover(sentinel_setup: _SentinelSetup) -> None:
    """The master dies, Sentinel promotes the replica: the tier resets and answers nothing
    meanwhile; an invalidation on the new master is never missed; copies answer again only
    from a subscription to the new master, after its first pong."""
    setup = sentinel_setup
    (a,) = _fault_caches(setup.url, 1)
    fa = _item(a)
    tier, key = _tier(a), "k-failover"
    _DATA[key] = "v0"
    b: Cache | None = None
    try:
        await _until(_hit_locally(a, fa, key), "a first local hit")
        log, old_sub = LocalHitLog(tier), tier._sub
        killed_at = time.monotonic()
        setup.master.kill()
        await _until(lambda: tier._sub is not old_sub, "the tier to notice")
        _DATA[key] = "v1"
        local = _local_hits(a)
        assert await fa(key) in ("v0", "v1")  # fails open (no master yet), or the new master's entry
        assert _local_hits(a) == local
        await _until(lambda: setup.master_port() == str(setup.replica.port), "the promotion", 60)
        b = Cache(url=setup.url, prefix=a.settings.prefix, local_max_entries=1000, timeout=0.5)
        fb = _item(b)
        _DATA[key] = "v2"
        await _retry(lambda: fb.invalidate(key))
        invalidated = time.monotonic()
        await _until(_hit_locally(a, fa, key), "local hits again")
        await _never_stale(fa, key, {"v0", "v1"}, invalidated)
        later = log.after(killed_at)
        assert later and all(sub is not old_sub and proven > killed_at for _, proven, sub in later)
    finally:
        await a.close()
        if b is not None:
            await b.close()


# -- Guarantee 3: no stale fill ------------------------------------------------------------------


async def test_a_read_overlapping_an_invalidation_is_never_kept(redis_server: RedisServer) -> None:
    """A's store read (MGET) runs before B's invalidation and completes after A heard it: A
    answers its caller with what it read (the read overlapped the change), keeps nothing, and
    the next call reads the invalidation's effect."""
    a, b = _caches(redis_server.url)
    fa, fb = _item(a), _item(b)
    tier, key = _tier(a), "k-fill"
    _DATA[key] = "v0"
    assert await fa(key) == "v0"  # stored, sealed
    await _until(lambda: tier.trusted() and tier._sub is not None, "the channel's first pong")
    tier.clear()  # the next call reads the store and fills
    backend = a._gateway.backend
    real = backend.read_stamped
    read, release = asyncio.Event(), asyncio.Event()

    async def held(entry_key: str, stamps: Any) -> list[bytes | None]:
        values = await real(entry_key, stamps)  # the store answered with the old entry and stamps
        read.set()
        await release.wait()
        return values

    backend.read_stamped = held  # type: ignore[method-assign]
    try:
        task = asyncio.create_task(fa(key))
        await read.wait()
        applied = tier.applied
        _DATA[key] = "v1"
        await fb.invalidate(key)
        await _until(lambda: tier.applied > applied, "A to hear the invalidation")
        release.set()
        assert await task == "v0"  # its own caller gets what the overlapping read found
    finally:
        backend.read_stamped = real  # type: ignore[method-assign]
    assert key not in {k.rsplit(":", 1)[-1] for k in tier._values}
    assert not [k for k in tier._values if k.startswith(a.settings.prefix + ":items:")]
    assert await fa(key) == "v1"
    await _until(_hit_locally(a, fa, key), "the new value kept")
    assert await fa(key) == "v1"
    await a.close()
    await b.close()


# -- Guarantee 4: no storm -----------------------------------------------------------------------


async def test_after_an_invalidation_a_hot_key_is_one_store_read(redis_server: RedisServer) -> None:
    """B invalidates and refills a hot view; A's tier drops its copy; then 50 concurrent requests
    to A make one MGET in all (single-flight), every one a HIT; the next 50 make none."""
    a, b = _caches(redis_server.url)
    runs: list[int] = []
    _DATA["view7"] = "old"
    raw = aioredis.Redis(host="127.0.0.1", port=redis_server.port)
    tier = _tier(a)

    async def mgets() -> int:
        return int((await raw.info("commandstats")).get("cmdstat_mget", {}).get("calls", 0))

    transport_a = httpx.ASGITransport(app=_view_app(a, runs))
    transport_b = httpx.ASGITransport(app=_view_app(b, runs))
    async with (
        httpx.AsyncClient(transport=transport_a, base_url="http://t") as ca,
        httpx.AsyncClient(transport=transport_b, base_url="http://t") as cb,
    ):
        assert (await ca.get("/items/7")).headers["x-cache"] == "MISS"

        async def local_hit() -> bool:
            before = a.stats.requests.get(("views", "hit", "local"), 0)
            await ca.get("/items/7")
            return a.stats.requests.get(("views", "hit", "local"), 0) > before

        await _until(local_hit, "a local hit")
        applied = tier.applied
        _DATA["view7"] = "new"
        await b.invalidate_tags("item:7")
        assert (await cb.get("/items/7")).headers["x-cache"] == "MISS"  # B refills the store
        await _until(lambda: tier.applied > applied, "A to hear the invalidation")
        await _until(lambda: tier.trusted(), "a fresh pong")
        before = await mgets()
        replies = await asyncio.gather(*(ca.get("/items/7") for _ in range(50)))
        after = await mgets()
        assert {r.headers["x-cache"] for r in replies} == {"HIT"}
        assert {r.json()["name"] for r in replies} == {"new"}
        assert after - before == 1
        assert runs == [7, 7]  # computed once by A, once by B
        await _until(lambda: tier.trusted(), "a fresh pong")
        before = await mgets()
        replies = await asyncio.gather(*(ca.get("/items/7") for _ in range(50)))
        assert {r.headers["x-cache"] for r in replies} == {"HIT"}
        assert await mgets() - before <= 1  # from the tier (one read if the lease lapsed meanwhile)
    await raw.aclose()
    await a.close()
    await b.close()


# -- Guarantee 5: memory -------------------------------------------------------------------------


async def test_bounded_by_entries_and_by_bytes(redis_server: RedisServer) -> None:
    """Many distinct calls: the tier holds at most local_max_entries, and at most local_max_bytes."""
    (a,) = _caches(redis_server.url, 1, local_max_entries=20)
    fa = _item(a)
    tier = _tier(a)
    for i in range(100):
        _DATA[f"e{i}"] = "x" * 10
    await _until(_hit_locally(a, fa, "e0"), "a first local hit")
    for i in range(100):
        for _ in range(2):  # a miss stores; a hit from the store fills the tier
            await fa(f"e{i}")
        assert len(tier) <= 20
    assert len(tier) == 20
    (c,) = _caches(redis_server.url, 1, local_max_bytes=20_000)
    fc = _item(c)
    tier = _tier(c)
    for i in range(100):
        _DATA[f"b{i}"] = "y" * 1000
    await _until(_hit_locally(c, fc, "b0"), "a first local hit")
    for i in range(100):
        for _ in range(2):
            assert await fc(f"b{i}") == "y" * 1000
        assert tier.nbytes <= 20_000
    assert 5 < len(tier) < 30
    await a.close()
    await c.close()


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_rss_flat_after_a_million_distinct_keys() -> None:
    """1,000,000 distinct fills of a 10,000-entry tier: after warming up, RSS grows < 30 MB."""
    tier = LocalTier(
        _NoChannel(), CacheSettings(prefix="p", local_max_entries=10_000, local_ttl=60), _stats(), "rss"
    )
    assert tier.mode == TTL
    value = b"v" * 200
    until = time.time() + 60

    def fill(start: int, count: int) -> None:
        for i in range(start, start + count):
            tier.fill(tier.applied, f"p:items:{i:032x}", value, until, (), ())

    fill(0, 30_000)  # warm up: the tier is full, allocators have their pools
    gc.collect()
    before = _rss()
    fill(30_000, 1_000_000)
    gc.collect()
    grown = _rss() - before
    assert len(tier) == 10_000 and tier.nbytes <= tier.max_bytes
    assert grown < 30 * 1024 * 1024, f"RSS grew {grown / 2**20:.1f} MiB"


class _NoChannel:
    """A store with no channel."""


def _stats() -> Any:
    from cacheframe.stats import CacheStats

    return CacheStats()


async def test_copies_expire_with_their_entry(redis_server: RedisServer) -> None:
    """A copy lives until its entry stops being fresh (created + ttl), before the store drops it
    (ttl + stale): past the ttl the store answers (STALE here), not the tier; and at most
    local_ttl when it is set."""
    (a,) = _caches(redis_server.url, 1)

    @a.cache(ttl=1, namespace="short", stale_while_revalidate=30)
    async def short(key: str) -> str:
        return _DATA[key]

    _DATA["s"] = "v0"
    tier = _tier(a)
    await short("s")

    async def local_hit() -> bool:
        before = _local_hits(a, "short")
        await short("s")
        return _local_hits(a, "short") > before

    await _until(local_hit, "a local hit")
    (entry_key,) = [k for k in tier._values if ":short:" in k]
    entry = a._gateway.decode(entry_key, tier._values[entry_key][0])
    assert entry is not None and tier._values[entry_key][1] == pytest.approx(entry.created + 1)
    while time.time() <= entry.created + 1:
        await asyncio.sleep(0.02)
    local, stale = _local_hits(a, "short"), a.stats.stale
    assert await short("s") == "v0"  # the store's stale entry, refreshed in the background
    assert _local_hits(a, "short") == local and a.stats.stale == stale + 1
    await a.close()

    (c,) = _caches(redis_server.url, 1, local_ttl=0.5)
    fc = _item(c)
    _DATA["t"] = "v0"
    await _until(_hit_locally(c, fc, "t"), "a local hit")
    tier = _tier(c)
    (entry_key,) = [k for k in tier._values if ":items:" in k]
    kept_until = tier._values[entry_key][1]
    assert kept_until <= time.time() + 0.5
    while time.time() <= kept_until:
        await asyncio.sleep(0.02)
    assert tier.get(entry_key, ()) is None
    await c.close()


# -- Guarantee 6: Memcached ----------------------------------------------------------------------


def _memcached_stats(port: int) -> dict[str, int]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            data += conn.recv(65536)
    out = {}
    for line in data.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "STAT" and parts[2].isdigit():
            out[parts[1]] = int(parts[2])
    return out


async def test_memcached_validate_mode(memcached_server: MemcachedServer) -> None:
    """No local_ttl: a hit keeps the entry's bytes here and reads only its stamps (memcached
    counts no read of the entry); never stale once invalidate() returned."""
    a, b = _caches(memcached_server.url)
    fa, fb = _item(a), _item(b)
    tier, key = _tier(a), "k-validate"
    assert tier.mode == VALIDATE
    _DATA[key] = "v0"
    assert await fa(key) == "v0"
    assert await fa(key) == "v0"  # a hit from the store: the entry is kept
    (entry_key,) = [k for k in tier._values if ":items:" in k]
    stamps = 5  # the global, namespace, call and tag stamps, and the tag's soft one
    before = _memcached_stats(memcached_server.port)
    assert await fa(key) == "v0"
    after = _memcached_stats(memcached_server.port)
    assert after["get_hits"] - before["get_hits"] == stamps  # its stamps, not its entry
    assert after["get_misses"] - before["get_misses"] <= 1  # the stampless entry key of the read
    assert entry_key in tier._values
    assert any(reason == "local" for (_, outcome, reason) in a.stats.requests if outcome == "hit")
    for round_ in range(1, 11):
        _DATA[key] = f"v{round_}"
        await fb.invalidate(key)
        assert await fa(key) == f"v{round_}"
        assert await fa(key) == f"v{round_}"
    await a.close()
    await b.close()


async def test_memcached_ttl_mode(memcached_server: MemcachedServer) -> None:
    """local_ttl set: copies answer with no store read, and an invalidation is seen at most
    local_ttl after it returned."""
    ttl = 0.5
    a, b = _caches(memcached_server.url, local_ttl=ttl)
    fa, fb = _item(a), _item(b)
    assert _tier(a).mode == TTL
    for round_ in range(3):
        key = f"k-ttl-{round_}"
        _DATA[key] = "old"
        await _until(_hit_locally(a, fa, key), "a local hit")
        before = _memcached_stats(memcached_server.port)
        await _until(_hit_locally(a, fa, key), "a local hit")
        assert _memcached_stats(memcached_server.port)["cmd_get"] == before["cmd_get"]
        _DATA[key] = "new"
        await fb.invalidate(key)
        invalidated = time.monotonic()
        while time.monotonic() <= invalidated + ttl:
            assert await fa(key) in ("old", "new")  # maybe stale, within local_ttl
            await asyncio.sleep(0.02)
        for _ in range(5):
            assert await fa(key) == "new"
    await a.close()
    await b.close()
