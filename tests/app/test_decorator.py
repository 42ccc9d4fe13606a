"""``@cache`` on sync views and functions under load, and decorators stacked around it.

The concurrency tests run a real uvicorn server in a thread (its own event loop and
anyio thread pool of 40 slots) and fire requests at it with ``httpx.AsyncClient``; a
hang fails them through the bounded wait, never through a timing assertion.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import anyio.to_thread
import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser, requires
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware

import cacheframe
from cacheframe import fastpath
from cacheframe.exceptions import ConfigurationError

pytestmark = pytest.mark.usefixtures("app_cache")

HANG = 60.0  # seconds: a request still unanswered by then is hung for good


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread on a free loopback port; yield its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", backlog=2048, limit_concurrency=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(HANG)
        sock.close()


async def _get_all(base: str, paths: list[str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(paths), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=HANG, limits=limits) as client:
        return await asyncio.wait_for(asyncio.gather(*(client.get(p) for p in paths)), HANG)


def get_all(base: str, paths: list[str]) -> list[httpx.Response]:
    """GET every path at once; every response, or TimeoutError when the server hangs."""
    return asyncio.run(_get_all(base, paths))


def sync_app(calls: Counter[str]) -> FastAPI:
    app = FastAPI()

    @app.get("/slow/{n}")
    @cacheframe.cache(ttl=60)
    def slow(n: int) -> dict[str, int]:
        calls["slow"] += 1
        time.sleep(0.02)  # holds its worker thread, as real sync views do
        return {"n": n}

    @cacheframe.cache(ttl=60)
    def settings(region: str = "eu") -> dict[str, str]:
        calls["settings"] += 1
        time.sleep(0.02)
        return {"region": region}

    @app.get("/with-dep/{n}")
    def with_dep(n: int, conf: dict[str, str] = Depends(settings)) -> dict[str, Any]:  # noqa: B008
        return {"n": n, **conf}

    return app


# -- 4. sync views and functions never deadlock --------------------------------------------------


@pytest.mark.parametrize("count", [64, 1000])
def test_concurrent_cold_requests_to_sync_view_all_complete(count: int) -> None:
    """64, then 1,000 concurrent cold requests to a cached def view all complete (no pool deadlock)."""
    calls: Counter[str] = Counter()
    with serving(sync_app(calls)) as base:
        # Distinct keys (cold misses, each computing) plus repeats of them (single-flight followers).
        paths = [f"/slow/{i % (count // 2)}" for i in range(count)]
        responses = get_all(base, paths)
    assert [r.status_code for r in responses] == [200] * count
    assert [r.json()["n"] for r in responses] == [i % (count // 2) for i in range(count)]


def test_concurrent_cold_requests_with_cached_sync_dependency_all_complete() -> None:
    """A cached def function used as a dependency of many concurrent requests never hangs the server."""
    calls: Counter[str] = Counter()
    with serving(sync_app(calls)) as base:
        responses = get_all(base, [f"/with-dep/{i}" for i in range(200)])
    assert [r.status_code for r in responses] == [200] * 200
    assert all(r.json()["region"] == "eu" for r in responses)


def test_sync_view_holds_no_worker_thread_while_waiting() -> None:
    """With one worker slot, a cold request whose view waits for another request still completes:
    waiting on the cache or on another request's computation holds no thread-pool slot."""
    release = threading.Event()
    app = FastAPI()
    ran: Counter[str] = Counter()

    @app.get("/gate")
    @cacheframe.cache(ttl=60)
    def gate() -> str:
        ran["gate"] += 1
        release.wait(HANG)
        return "gate"

    @app.get("/open")
    @cacheframe.cache(ttl=60)
    def open_() -> str:
        release.set()
        return "open"

    async def scenario(base: str) -> list[int]:
        async with httpx.AsyncClient(base_url=base, timeout=HANG) as client:
            first = [asyncio.ensure_future(client.get("/gate")) for _ in range(5)]  # 1 runs, 4 follow
            await asyncio.sleep(0.2)
            second = await client.get("/open")  # needs the one slot the followers must not hold
            done = await asyncio.wait_for(asyncio.gather(*first), HANG)
        return [second.status_code] + [r.status_code for r in done]

    @app.middleware("http")
    async def two_slots(request: Request, call_next: Any) -> Any:
        # The limiter belongs to the server's loop: size it there, to one view slot plus one spare.
        anyio.to_thread.current_default_thread_limiter().total_tokens = 2
        return await call_next(request)

    with serving(app) as base:
        statuses = asyncio.run(scenario(base))
    assert statuses == [200] * 6
    assert ran["gate"] == 1


def test_cached_sync_function_from_many_threads_at_once() -> None:
    """A cached def function called from 64 threads at once (misses and hits) returns every value."""
    seen: Counter[int] = Counter()

    @cacheframe.cache(ttl=60)
    def square(x: int) -> int:
        seen[x] += 1
        time.sleep(0.005)
        return x * x

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(square, [i % 16 for i in range(512)], timeout=HANG))
    assert results == [(i % 16) ** 2 for i in range(512)]


def test_cached_sync_function_from_many_anyio_worker_threads() -> None:
    """A cached def function called from every anyio worker thread at once (as def views do) completes."""

    @cacheframe.cache(ttl=60)
    def cube(x: int) -> int:
        time.sleep(0.005)
        return x**3

    async def main() -> list[int]:
        return await asyncio.wait_for(
            asyncio.gather(*(anyio.to_thread.run_sync(cube, i % 50) for i in range(400))), HANG
        )

    assert asyncio.run(main()) == [(i % 50) ** 3 for i in range(400)]


def pool_decorator(func: Callable[..., Any]) -> Callable[..., Any]:
    """A def decorator FastAPI runs in the thread pool: it records ``__wrapped__`` by hand and
    does not copy the wrapped function's attributes (so not its coroutine marker)."""

    def outer(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    outer.__wrapped__ = func  # type: ignore[attr-defined]
    outer.__name__ = func.__name__
    return outer


def test_sync_view_called_from_a_worker_thread_never_takes_a_second_slot() -> None:
    """Under a def decorator FastAPI runs in the pool, 64 concurrent cold misses all complete:
    the view runs in the calling worker thread, never waiting for a second one."""
    app = FastAPI()
    ran: Counter[int] = Counter()

    @app.get("/pooled/{n}")
    @pool_decorator
    @cacheframe.cache(ttl=60)
    def pooled(n: int) -> dict[str, int]:
        ran[n] += 1
        time.sleep(0.02)
        return {"n": n}

    with serving(app) as base:
        responses = get_all(base, [f"/pooled/{i % 48}" for i in range(96)])
        again = get_all(base, ["/pooled/1"])
    assert [r.json()["n"] for r in responses] == [i % 48 for i in range(96)]
    assert again[0].headers["x-cache"] == "HIT"


def test_marked_sync_function_still_returns_values_to_plain_callers() -> None:
    """The coroutine marker changes nothing for direct calls: from sync code, threads and async code."""

    @cacheframe.cache(ttl=60)
    def add(a: int, b: int) -> int:
        return a + b

    assert asyncio.iscoroutinefunction(add) and inspect.iscoroutinefunction(add) == hasattr(
        inspect, "markcoroutinefunction"
    )
    assert add(1, 2) == 3

    async def from_async() -> int:
        return add(2, 2)

    assert asyncio.run(from_async()) == 4
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(add, [1, 2], [1, 1])) == [2, 3]


def test_sync_view_declaring_request_works_as_view_dependency_and_plain_call() -> None:
    """A cached def function declaring ``request: Request`` serves as a view, as a dependency
    (FastAPI awaits both) and as a plain call."""
    app = FastAPI()
    ran: Counter[str] = Counter()

    @cacheframe.cache(ttl=60, exclude=["request"])
    def who(request: Request, name: str = "x") -> dict[str, str]:
        ran[name] += 1
        return {"name": name}

    app.get("/who")(who)

    @app.get("/uses-who")
    async def uses_who(who_: dict[str, str] = Depends(who)) -> dict[str, str]:  # noqa: B008
        return who_

    with TestClient(app) as client:
        first, second = client.get("/who?name=a"), client.get("/who?name=a")
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
        assert client.get("/uses-who?name=b").json() == {"name": "b"}
        assert client.get("/uses-who?name=b").json() == {"name": "b"}
    assert who(None, name="c") == {"name": "c"} == who(None, name="c")  # type: ignore[arg-type]
    assert ran == {"a": 1, "b": 1, "c": 1}


# -- 6. decorators stacked between the route decorator and @cache ------------------------------


class HeaderAuth(AuthenticationBackend):
    """Logs in whoever sends ``X-User`` (with the ``member`` scope)."""

    async def authenticate(self, conn: Any) -> tuple[AuthCredentials, SimpleUser] | None:
        user = conn.headers.get("x-user")
        return None if user is None else (AuthCredentials(["member"]), SimpleUser(user))


def limited(func: Callable[..., Any]) -> Callable[..., Any]:
    """A rate limiter written with ``functools.wraps``: counts every call, refuses past 100."""
    if asyncio.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_limited(*args: Any, **kwargs: Any) -> Any:
            hits["limited"] += 1
            if hits["limited"] > 100:
                raise HTTPException(429)
            return await func(*args, **kwargs)

        return async_limited

    @functools.wraps(func)
    def sync_limited(*args: Any, **kwargs: Any) -> Any:
        hits["limited"] += 1
        if hits["limited"] > 100:
            raise HTTPException(429)
        return func(*args, **kwargs)

    return sync_limited


def naive_limited(func: Callable[..., Any]) -> Callable[..., Any]:
    """A plain def rate limiter with ``functools.wraps`` that never asks whether ``func`` is async."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        hits["limited"] += 1
        if hits["limited"] > 100:
            raise HTTPException(429)
        return func(*args, **kwargs)

    return wrapper


hits: Counter[str] = Counter()


def stacked_app() -> FastAPI:
    app = FastAPI(middleware=[Middleware(AuthenticationMiddleware, backend=HeaderAuth())])

    @app.get("/members/async")
    @requires("member")
    @cacheframe.cache(ttl=60)
    async def members_async(request: Request) -> dict[str, str]:
        hits["members_async"] += 1
        return {"page": "members"}

    @app.get("/members/sync")
    @requires("member")
    @cacheframe.cache(ttl=60)
    def members_sync(request: Request) -> dict[str, str]:
        hits["members_sync"] += 1
        return {"page": "members"}

    @app.get("/limited/async")
    @limited
    @cacheframe.cache(ttl=60)
    async def limited_async(q: int = 0) -> dict[str, int]:
        hits["limited_async"] += 1
        return {"q": q}

    @app.get("/limited/sync")
    @limited
    @cacheframe.cache(ttl=60)
    def limited_sync(q: int = 0) -> dict[str, int]:
        hits["limited_sync"] += 1
        return {"q": q}

    @app.get("/limited/naive")
    @naive_limited
    @cacheframe.cache(ttl=60)
    def limited_naive(q: int = 0) -> dict[str, int]:
        hits["limited_naive"] += 1
        return {"q": q}

    return app


@pytest.fixture
def stacked(request: pytest.FixtureRequest) -> Iterator[TestClient]:
    """The stacked-decorator app, on the decorator path or with the fast path installed."""
    hits.clear()
    app = stacked_app()
    if request.param:
        fastpath.install(app)
    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize("stacked", [False, True], ids=["decorator", "fastpath"], indirect=True)
@pytest.mark.parametrize("kind", ["async", "sync"])
def test_requires_above_cache_serves_members_cached_and_refuses_others(
    stacked: TestClient, kind: str
) -> None:
    """@requires above @cache: a logged-in member gets the view (MISS, then HIT for every member);
    an anonymous visitor gets 403 even once the page is cached."""
    url = f"/members/{kind}"
    first = stacked.get(url, headers={"x-user": "alice"})
    second = stacked.get(url, headers={"x-user": "bob"})
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json() == second.json() == {"page": "members"}
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert hits[f"members_{kind}"] == 1
    assert stacked.get(url).status_code == 403


@pytest.mark.parametrize("stacked", [False, True], ids=["decorator", "fastpath"], indirect=True)
@pytest.mark.parametrize("kind", ["async", "sync", "naive"])
def test_functools_wraps_rate_limiter_above_cache_runs_on_every_request(
    stacked: TestClient, kind: str
) -> None:
    """A functools.wraps rate limiter above @cache counts hits too, and the view is cached by its URL."""
    url = f"/limited/{kind}"
    replies = [stacked.get(url, params={"q": q}) for q in (1, 1, 2, 1)]
    assert [r.json()["q"] for r in replies] == [1, 1, 2, 1]
    assert [r.headers["x-cache"] for r in replies] == ["MISS", "HIT", "MISS", "HIT"]
    assert hits[f"limited_{kind}"] == 2 and hits["limited"] == 4


def test_requires_below_cache_is_refused_at_decoration() -> None:
    """@cache over @requires is refused at decoration time with the order to use."""
    with pytest.raises(ConfigurationError, match="Put @requires above @cache"):

        @cacheframe.cache(ttl=60)
        @requires("member")
        async def hidden(request: Request) -> str:
            return "secret"


def test_sync_view_called_from_a_foreign_thread_still_answers() -> None:
    """A decorator above @cache that calls the view in a thread anyio did not start gets the
    view's answer (uncached: there is no loop to serve it on from there)."""
    app = FastAPI()
    ran: Counter[str] = Counter()

    def in_executor(func: Callable[..., Any]) -> Callable[..., Any]:
        async def outer(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.get_running_loop().run_in_executor(None, functools.partial(func, **kwargs))

        outer.__wrapped__ = func  # type: ignore[attr-defined]
        return outer

    @app.get("/foreign")
    @in_executor
    @cacheframe.cache(ttl=60)
    def foreign(q: int = 0) -> dict[str, int]:
        ran["foreign"] += 1
        return {"q": q}

    with TestClient(app) as client:
        assert [client.get("/foreign", params={"q": 2}).json() for _ in range(2)] == [{"q": 2}] * 2
