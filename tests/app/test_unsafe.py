"""RFC 9111 §4.4: a 2xx/3xx answer to POST, PUT, PATCH or DELETE on a decorated route (or on
any route, with ``cacheframe.install(app)``) invalidates the stored GET entries of its URI, all
variants, in every process sharing the store; with ``install``, also its Location and
Content-Location targets in the app and the tags of a Cache-Group-Invalidation header."""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.testclient import TestClient

import cacheframe
from cacheframe import fastpath
from cacheframe.exceptions import BackendError
from helpers import SlowClears

pytestmark = pytest.mark.usefixtures("app_cache")

calls: collections.Counter[str] = collections.Counter()
HERE = os.path.dirname(__file__)
TESTS = os.path.dirname(HERE)  # helpers, apps, servers


def build(cache: cacheframe.Cache | None = None, *, fast: bool = False, gate: Any = None) -> FastAPI:
    """Items read by cached GETs (query, Host and a varied header give variants) and written
    by decorated unsafe routes; ``gate`` (an asyncio.Event) holds GET /slow until set."""
    deco = cache.cache if cache is not None else cacheframe.cache
    app = FastAPI()
    router = APIRouter(prefix="/r")

    @app.get("/items/{item_id}")
    @deco(ttl=60)
    async def read(item_id: int, request: Request, q: str = "") -> dict[str, Any]:
        calls[f"read{item_id}"] += 1
        return {"id": item_id, "n": calls[f"read{item_id}"], "host": request.url.hostname}

    @app.api_route("/items/{item_id}", methods=["POST", "PUT", "PATCH", "DELETE"])
    @deco(ttl=60)
    async def write(item_id: int, response: Response, status: int = 200) -> dict[str, int]:
        if status >= 400 and status != 409:
            raise HTTPException(status)
        response.status_code = status
        return {"id": item_id}

    @app.get("/varied")
    @deco(ttl=60, vary=["X-Region"])
    async def varied(x_region: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        calls["varied"] += 1
        return {"r": x_region, "n": calls["varied"]}

    @app.post("/varied")
    @deco(ttl=60)
    async def post_varied() -> RedirectResponse:
        return RedirectResponse("/varied", status_code=303)

    @app.get("/slow")
    @deco(ttl=60)
    async def slow() -> dict[str, int]:
        calls["slow"] += 1
        n = calls["slow"]
        if gate is not None and n == 1:
            await gate.wait()
        return {"n": n}

    @app.delete("/slow")
    @deco(ttl=60)
    async def delete_slow() -> Response:
        return Response(status_code=204)

    @router.get("/thing")
    @deco(ttl=60)
    async def thing() -> dict[str, int]:
        calls["thing"] += 1
        return {"n": calls["thing"]}

    @router.patch("/thing")
    @deco(ttl=60)
    async def patch_thing() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/sync")
    @deco(ttl=60)
    def sync_read() -> dict[str, int]:
        calls["sync"] += 1
        return {"n": calls["sync"]}

    @app.put("/sync")
    @deco(ttl=60)
    def sync_write() -> dict[str, bool]:
        return {"ok": True}

    app.include_router(router)
    if fast:
        fastpath.install(app)
    return app


@pytest.fixture(autouse=True)
def _fresh_counts() -> None:
    calls.clear()


def fill(client: TestClient) -> list[tuple[str, dict[str, str]]]:
    """Store several variants of /items/1 and one of /items/2; return the /items/1 ones."""
    variants = [
        ("/items/1", {}),
        ("/items/1?q=a", {}),
        ("/items/1?q=b", {}),
        ("/items/1", {"Host": "other.example"}),
    ]
    for url, headers in [*variants, ("/items/2", {})]:
        assert client.get(url, headers=headers).headers["x-cache"] == "MISS"
        assert client.get(url, headers=headers).headers["x-cache"] == "HIT"
    return variants


@pytest.mark.parametrize("fast", [False, True], ids=["decorator", "fastpath"])
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_success_clears_every_variant_of_the_uri(method: str, fast: bool) -> None:
    """A 2xx unsafe request drops every stored variant of its path, and only of its path."""
    client = TestClient(build(fast=fast))
    variants = fill(client)
    assert client.request(method, "/items/1").status_code == 200
    for url, headers in variants:
        assert client.get(url, headers=headers).headers["x-cache"] == "MISS", (url, headers)
    assert client.get("/items/2").headers["x-cache"] == "HIT"


@pytest.mark.parametrize("status", [201, 204, 303, 409, 404, 500])
def test_only_2xx_and_3xx_invalidate(status: int) -> None:
    """2xx and 3xx answers invalidate; 4xx and 5xx (raised or set) leave the entries alone."""
    client = TestClient(build())
    fill(client)
    reply = client.put(f"/items/1?status={status}", follow_redirects=False)
    assert reply.status_code == status
    expected = "MISS" if status < 400 else "HIT"
    assert client.get("/items/1").headers["x-cache"] == expected


def test_redirect_response_and_vary_variants() -> None:
    """A returned 303 RedirectResponse invalidates every varied variant of the URI."""
    client = TestClient(build())
    for region in ("eu", "us"):
        client.get("/varied", headers={"X-Region": region})
        assert client.get("/varied", headers={"X-Region": region}).headers["x-cache"] == "HIT"
    assert client.post("/varied", follow_redirects=False).status_code == 303
    for region in ("eu", "us"):
        assert client.get("/varied", headers={"X-Region": region}).headers["x-cache"] == "MISS"


def test_included_router_route() -> None:
    """Routes of an included router (FastAPI's effective route contexts) are invalidated too."""
    client = TestClient(build())
    client.get("/r/thing")
    assert client.get("/r/thing").headers["x-cache"] == "HIT"
    assert client.patch("/r/thing").status_code == 200
    assert client.get("/r/thing").json() == {"n": 2}


def test_sync_views() -> None:
    """A sync (def) unsafe view invalidates its path's entries like an async one."""
    client = TestClient(build())
    client.get("/sync")
    assert client.get("/sync").headers["x-cache"] == "HIT"
    assert client.put("/sync").status_code == 200
    assert client.get("/sync").json() == {"n": 2}


def test_other_cache_instance_on_the_same_store(app_cache: cacheframe.Cache) -> None:
    """An unsafe request answered through another Cache on the same store clears this one's entries."""
    reader = TestClient(build(app_cache))
    fill(reader)
    settings = app_cache.settings
    backend = app_cache.backend if settings.url.startswith("memory") else None
    other = cacheframe.Cache(settings.url, backend=backend, prefix=settings.prefix, timeout=5.0)
    assert TestClient(build(other)).delete("/items/1").status_code == 200
    assert reader.get("/items/1").headers["x-cache"] == "MISS"
    assert reader.get("/items/2").headers["x-cache"] == "HIT"


def test_other_process_on_the_same_store(app_cache: cacheframe.Cache) -> None:
    """A PUT answered by another process sharing the store clears the entries this one serves."""
    if app_cache.settings.url.startswith("memory"):
        pytest.skip("a memory store is not shared between processes")
    client = TestClient(build())
    fill(client)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import cacheframe; from fastapi.testclient import TestClient; from test_unsafe import build;"
        "cacheframe.configure(url=sys.argv[2], prefix=sys.argv[3], timeout=5.0);"
        "assert TestClient(build()).put('/items/1').status_code == 200"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(TESTS, "..", "src"), TESTS, HERE])}
    args = [sys.executable, "-c", code, HERE, app_cache.settings.url, app_cache.settings.prefix]
    subprocess.run(args, check=True, timeout=60, env=env)
    assert client.get("/items/1").headers["x-cache"] == "MISS"
    assert client.get("/items/2").headers["x-cache"] == "HIT"


def test_miss_running_during_the_unsafe_request_is_not_stored() -> None:
    """A GET miss that started before the DELETE finishes after it: its response is not stored."""

    async def scenario() -> list[str]:
        gate = asyncio.Event()
        transport = httpx.ASGITransport(app=build(gate=gate))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = asyncio.create_task(client.get("/slow"))
            while calls["slow"] == 0:  # the miss is running (held by the gate)
                await asyncio.sleep(0.01)
            assert (await client.delete("/slow")).status_code == 204
            gate.set()
            labels = [(await first).headers["x-cache"]]
            labels.append((await client.get("/slow")).headers["x-cache"])
            labels.append((await client.get("/slow")).headers["x-cache"])
            return labels

    assert asyncio.run(asyncio.wait_for(scenario(), 30)) == ["MISS", "MISS", "HIT"]


def test_store_failure_never_fails_the_unsafe_request(
    app_cache: cacheframe.Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that fails to invalidate (even with fail_open=False) leaves the PUT's answer intact."""
    strict = cacheframe.configure(url="memory://", fail_open=False)

    async def broken(*args: Any) -> None:
        raise BackendError("store down")

    monkeypatch.setattr(strict.backend, "write_stamps", broken)
    reply = TestClient(build()).put("/items/1")
    assert reply.status_code == 200 and reply.json() == {"id": 1}


def test_a_flood_of_unsafe_requests_costs_one_write_each(
    app_cache: cacheframe.Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 concurrent DELETEs of one path replace a stamp each (O(1)): no store clear (a SCAN
    on Redis) runs at all, and every GET afterwards is a miss."""
    slow_clear = SlowClears(app_cache.backend.clear)
    monkeypatch.setattr(app_cache.backend, "clear", slow_clear)

    async def scenario() -> str:
        transport = httpx.ASGITransport(app=build())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.get("/slow")
            assert (await client.get("/slow")).headers["x-cache"] == "HIT"
            replies = await asyncio.gather(*(client.delete("/slow") for _ in range(30)))
            assert {r.status_code for r in replies} == {204}
            return (await client.get("/slow")).headers["x-cache"]

    assert asyncio.run(asyncio.wait_for(scenario(), 60)) == "MISS"
    assert slow_clear.total == 0
