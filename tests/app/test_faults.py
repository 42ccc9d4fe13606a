"""The cache never becomes the outage: real stores killed, paused, down at start, restarted.

Each test starts its own redis-server or memcached, so it can SIGKILL or SIGSTOP
it. The per-request bound asserted here (2 s) is a hang detector — redis-py's
defaults take 58 s against a paused server — not a performance claim.
"""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

import cacheframe
from servers import ServerProcess
from servers.memcached import start_memcached
from servers.redis import start_redis

pytestmark = pytest.mark.timeout(120)

VIEW_TIME = 0.02
HANG_BOUND = 2.0


@pytest.fixture(params=["redis", "memcached"])
def store(request: pytest.FixtureRequest) -> Iterator[tuple[str, ServerProcess]]:
    """A store process of this test's own, and its cacheframe URL."""
    if request.param == "redis":
        process = start_redis("redis-fault")
        url = f"redis://127.0.0.1:{process.port}/0"
    else:
        process = start_memcached("memcached-fault")
        url = f"memcached://127.0.0.1:{process.port}"
    try:
        yield url, process
    finally:
        process.stop()


def make_app(counter: collections.Counter[str]) -> FastAPI:
    app = FastAPI()

    @app.get("/work")
    @cacheframe.cache(ttl=60)
    async def work(k: int = 0) -> dict[str, int]:
        counter["work"] += 1
        await asyncio.sleep(VIEW_TIME)
        return {"k": k}

    return app


async def timed_get(client: httpx.AsyncClient, k: int) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = await client.get(f"/work?k={k}")
    return response, time.monotonic() - start


async def assert_serves_correctly(client: httpx.AsyncClient, rounds: int = 10) -> None:
    """Every request answers 200 with its own body, well within the hang bound."""
    for i in range(rounds):
        response, elapsed = await timed_get(client, i)
        assert response.status_code == 200 and response.json() == {"k": i}
        assert elapsed < HANG_BOUND, f"request {i} took {elapsed:.2f}s"


async def caching_resumes(client: httpx.AsyncClient, within: float = 15.0) -> float:
    """Seconds until a repeated request is a HIT again."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        await client.get("/work?k=999")
        if (await client.get("/work?k=999")).headers["x-cache"] == "HIT":
            return time.monotonic() - start
        await asyncio.sleep(0.1)
    raise AssertionError(f"caching did not resume within {within}s")


def configure(url: str) -> cacheframe.Cache:
    return cacheframe.configure(url=url, timeout=0.25, breaker_threshold=3, breaker_cooldown=0.5)


async def test_killed_store_then_restarted(store: tuple[str, ServerProcess]) -> None:
    """SIGKILL mid-run: requests keep answering; a restart on the same port resumes caching."""
    url, process = store
    configure(url)
    counter: collections.Counter[str] = collections.Counter()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=make_app(counter)), base_url="http://t"
    ) as c:
        await c.get("/work?k=1")
        assert (await c.get("/work?k=1")).headers["x-cache"] == "HIT"
        process.kill()
        await assert_serves_correctly(c)
        process.start()  # same port
        await caching_resumes(c)


async def test_paused_store_then_resumed(store: tuple[str, ServerProcess]) -> None:
    """SIGSTOP: each request pays at most the deadline; SIGCONT resumes caching by itself."""
    url, process = store
    configure(url)
    counter: collections.Counter[str] = collections.Counter()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=make_app(counter)), base_url="http://t"
    ) as c:
        await c.get("/work?k=1")
        process.pause()
        try:
            await assert_serves_correctly(c)
            labels = {(await c.get("/work?k=1")).headers["x-cache"] for _ in range(3)}
            assert labels == {"BYPASS"}
        finally:
            process.resume()
        await caching_resumes(c)


async def test_app_started_with_store_down(store: tuple[str, ServerProcess]) -> None:
    """With the store down from the start, the app serves uncached; when it comes up, caching starts."""
    url, process = store
    process.kill()
    configure(url)
    counter: collections.Counter[str] = collections.Counter()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=make_app(counter)), base_url="http://t"
    ) as c:
        await assert_serves_correctly(c)
        process.start()
        await caching_resumes(c)


async def test_open_circuit_costs_no_store_latency(store: tuple[str, ServerProcess]) -> None:
    """Once the breaker is open, requests against a paused store do not wait for it at all."""
    url, process = store
    cache = configure(url)
    counter: collections.Counter[str] = collections.Counter()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=make_app(counter)), base_url="http://t"
    ) as c:
        process.pause()
        try:
            for i in range(3):
                await c.get(f"/work?k={i}")
            assert cache._gateway.breaker.state == "open"
            before = cache.stats.short_circuited
            await c.get("/work?k=50")
            assert cache.stats.short_circuited == before + 1
        finally:
            process.resume()


@pytest.mark.parametrize("outage", ["killed", "paused"])
async def test_an_invalidation_during_an_outage_raises_while_requests_fail_open(
    store: tuple[str, ServerProcess], outage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue #13, guarantee 7, on a real store: with it killed or paused, ``invalidate_tags``
    and a view's ``.invalidate()`` raise BackendError (never return as if done), each counted
    and logged at WARNING, while requests keep answering; once the store is back, the same
    invalidation goes through and the entry is a miss."""
    url, process = store
    cache = configure(url)
    runs: collections.Counter[str] = collections.Counter()
    app = FastAPI()

    @app.get("/items/{item_id}")
    @cacheframe.cache(ttl=60, tags=["item:{item_id}"])
    async def read_item(item_id: int) -> dict[str, int]:
        runs[str(item_id)] += 1
        return {"id": item_id, "run": runs[str(item_id)]}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        await c.get("/items/1")
        assert (await c.get("/items/1")).headers["x-cache"] == "HIT"
        (process.kill if outage == "killed" else process.pause)()
        try:
            errors = sum(cache.stats.store_errors.values())
            caplog.clear()
            with pytest.raises(cacheframe.BackendError):
                await cache.invalidate_tags("item:1")
            with pytest.raises(cacheframe.BackendError):
                await read_item.invalidate(item_id=1)
            assert sum(cache.stats.store_errors.values()) >= errors + 2
            failed = [r for r in caplog.records if "stamp(s) failed" in r.getMessage()]
            assert len(failed) == 2 and {r.levelname for r in failed} == {"WARNING"}
            for _ in range(3):  # reads fail open: the view answers, uncached
                reply = await c.get("/items/1")
                assert reply.status_code == 200 and reply.headers["x-cache"] == "BYPASS"
        finally:
            (process.start if outage == "killed" else process.resume)()
        deadline = time.monotonic() + 15.0
        while (await c.get("/items/1")).headers["x-cache"] != "HIT":  # caching resumes
            assert time.monotonic() < deadline, "caching did not resume within 15 s"
            await asyncio.sleep(0.1)
        await cache.invalidate_tags("item:1")  # the store is back: it goes through
        assert (await c.get("/items/1")).headers["x-cache"] == "MISS"


WORKER = textwrap.dedent(
    """
    import asyncio, sys, time
    import httpx
    from fastapi import FastAPI
    import cacheframe

    url, start_at, log = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    cacheframe.configure(url=url, prefix="two-workers", timeout=1.0)
    app = FastAPI()

    @app.get("/cold")
    @cacheframe.cache(ttl=60, namespace="cold")
    async def cold() -> dict[str, str]:
        with open(log, "a") as f:
            f.write("ran\\n")
        await asyncio.sleep(0.5)
        return {"v": "x"}

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
            await asyncio.sleep(max(0.0, start_at - time.time()))
            responses = await asyncio.gather(*(client.get("/cold") for _ in range(20)))
        assert {r.status_code for r in responses} == {200}
        print(",".join(sorted({r.headers["x-cache"] for r in responses})))

    asyncio.run(main())
    """
)


def test_two_worker_processes_run_view_once(tmp_path: Path) -> None:
    """Two processes sharing Redis, missing one cold key at the same moment, run the view once."""
    process = start_redis("redis-workers")
    try:
        script, log = tmp_path / "worker.py", tmp_path / "runs.log"
        script.write_text(WORKER)
        start_at = time.time() + 3.0  # both interpreters are up and importing by then
        url = f"redis://127.0.0.1:{process.port}/0"
        workers = [
            subprocess.Popen(
                [sys.executable, str(script), url, str(start_at), str(log)], stdout=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        outputs = [w.communicate(timeout=60)[0].strip() for w in workers]
        assert [w.returncode for w in workers] == [0, 0]
        assert log.read_text().count("ran") == 1, outputs
        assert "HIT" in ",".join(outputs)
    finally:
        process.stop()


async def test_crashed_lock_holder_strands_nobody_beyond_the_lease() -> None:
    """A lock left behind by a dead process delays a cold miss by at most the lease, then it computes."""
    process = start_redis("redis-lease")
    try:
        cache = cacheframe.configure(
            url=f"redis://127.0.0.1:{process.port}/0", lock_lease=0.5, prefix="lease"
        )
        counter: collections.Counter[str] = collections.Counter()
        app = make_app(counter)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            from cacheframe.types import SupportsLock

            assert isinstance(cache.backend, SupportsLock)
            # a "crashed" holder: takes the lock of /work?k=2 and never releases it
            await c.get("/work?k=2")  # (a real entry, to learn the store key)
            key2 = next(iter(await _keys(process.port)))
            await cache.clear()
            assert await cache.backend.acquire_lock(key2 + ":lock", "dead-process", 0.5)
            start = time.monotonic()
            response = await c.get("/work?k=2")
            waited = time.monotonic() - start
        assert response.status_code == 200 and response.json() == {"k": 2}
        assert 0.3 <= waited < HANG_BOUND, waited  # waited for the lease, then computed
    finally:
        process.stop()


async def _keys(port: int) -> list[str]:
    import redis.asyncio as aioredis

    raw = aioredis.Redis(port=port)
    try:
        # Entries only (test inspection): stamps live under "<prefix>:!s:".
        return [k.decode() for k in await raw.keys("*") if b":!s:" not in k]
    finally:
        await raw.aclose()


def test_sentinel_failover_caching_resumes(tmp_path: Path) -> None:
    """Behind Sentinel, killing the master promotes the replica; requests keep answering, caching resumes."""
    from servers import ServerProcess, free_port, require_binary
    from servers.redis import start_redis as start

    master = start("redis-fo-master")
    replica = start("redis-fo-replica", "--replicaof", "127.0.0.1", str(master.port))
    port = free_port()
    sentinel = ServerProcess(
        [require_binary("redis-server"), "sentinel.conf", "--sentinel"], port, "redis-fo-sentinel"
    )
    (Path(sentinel.workdir) / "sentinel.conf").write_text(
        f"port {port}\nbind 127.0.0.1\ndir {sentinel.workdir}\n"
        f"sentinel monitor fo 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds fo 1000\nsentinel failover-timeout fo 5000\n"
    )
    try:
        sentinel.start()
        time.sleep(1.5)  # the sentinel discovers the replica through the master
        configure(f"redis+sentinel://127.0.0.1:{port}/fo")
        counter: collections.Counter[str] = collections.Counter()

        async def run() -> float:
            transport = httpx.ASGITransport(app=make_app(counter))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                await c.get("/work?k=1")
                assert (await c.get("/work?k=1")).headers["x-cache"] == "HIT"
                master.kill()
                await assert_serves_correctly(c)
                return await caching_resumes(c, within=30)

        resumed_after = asyncio.run(run())
        assert resumed_after < 30
    finally:
        sentinel.stop()
        replica.stop()
        master.stop()
