"""``cacheframe.install(app)``: RFC 9111 §4.4 for every route (Location, Content-Location),
RFC 9875 Cache-Group-Invalidation; and the opt-in tag headers and ``on_invalidate`` hooks."""

from __future__ import annotations

import collections
import uuid
from typing import Any

import pytest
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.testclient import TestClient

import cacheframe
from cacheframe import Cache
from cacheframe.exceptions import ConfigurationError
from cacheframe.policy import tag_header_value
from cacheframe.unsafe import groups

calls: collections.Counter[str] = collections.Counter()


def _cache(url: str) -> Cache:
    return Cache(url, prefix=f"i{uuid.uuid4().hex[:8]}", timeout=5.0)


def build(cache: Cache, *, install: bool = True) -> FastAPI:
    """Cached reads; write routes that are NOT decorated (only ``install`` invalidates for them)."""
    app = FastAPI()

    @app.get("/items/{item_id}")
    @cache.cache(ttl=60, tags=["item:{item_id}"])
    async def read_item(item_id: int, q: str = "") -> dict[str, Any]:
        calls[f"item{item_id}"] += 1
        return {"id": item_id, "n": calls[f"item{item_id}"]}

    @app.get("/items")
    @cache.cache(ttl=60, tags=["items"])
    async def list_items() -> dict[str, int]:
        calls["list"] += 1
        return {"n": calls["list"]}

    @app.get("/tagged")
    @cache.cache(ttl=60, result_tags=lambda r: ["group-a"])
    async def tagged() -> dict[str, int]:
        calls["tagged"] += 1
        return {"n": calls["tagged"]}

    @app.put("/items/{item_id}")
    async def put_item(item_id: int, status: int = 200) -> JSONResponse:
        return JSONResponse({"id": item_id}, status_code=status)

    @app.post("/items")
    async def create_item() -> Response:
        return Response(status_code=201, headers={"Location": "/items/7"})

    @app.post("/rename/{item_id}")
    async def rename(item_id: int) -> Response:
        return Response(status_code=200, headers={"Content-Location": f"/items/{item_id}"})

    @app.post("/elsewhere")
    async def elsewhere() -> RedirectResponse:
        return RedirectResponse("https://other.example/items/1", status_code=303)

    @app.post("/groups")
    async def post_groups() -> Response:
        return Response(status_code=204, headers={"Cache-Group-Invalidation": '"group-a", "items"'})

    if install:
        cacheframe.install(app)
    return app


@pytest.fixture(autouse=True)
def _fresh_counts() -> None:
    calls.clear()


def _warm(client: TestClient, url: str) -> None:
    client.get(url)
    assert client.get(url).headers["x-cache"] == "HIT", url


def test_install_invalidates_the_path_of_an_undecorated_write(cache_url: str) -> None:
    """PUT /items/1 on a route without @cache invalidates every variant of GET /items/1 only."""
    client = TestClient(build(_cache(cache_url)))
    for url in ("/items/1", "/items/1?q=x", "/items/2", "/items"):
        _warm(client, url)
    assert client.put("/items/1").status_code == 200
    assert client.get("/items/1").headers["x-cache"] == "MISS"
    assert client.get("/items/1?q=x").headers["x-cache"] == "MISS"
    assert client.get("/items/2").headers["x-cache"] == "HIT"
    assert client.get("/items").headers["x-cache"] == "HIT"


def test_without_install_an_undecorated_write_invalidates_nothing(cache_url: str) -> None:
    client = TestClient(build(_cache(cache_url), install=False))
    _warm(client, "/items/1")
    assert client.put("/items/1").status_code == 200
    assert client.get("/items/1").headers["x-cache"] == "HIT"


def test_failed_writes_invalidate_nothing(cache_url: str) -> None:
    client = TestClient(build(_cache(cache_url)))
    _warm(client, "/items/1")
    assert client.put("/items/1?status=409").status_code == 409
    assert client.get("/items/1").headers["x-cache"] == "HIT"


def test_location_and_content_location_in_the_app_are_invalidated(cache_url: str) -> None:
    """POST /items (201, Location: /items/7) invalidates /items and /items/7; Content-Location too."""
    client = TestClient(build(_cache(cache_url)))
    for url in ("/items", "/items/7", "/items/8"):
        _warm(client, url)
    assert client.post("/items").status_code == 201
    assert client.get("/items").headers["x-cache"] == "MISS"
    assert client.get("/items/7").headers["x-cache"] == "MISS"
    assert client.get("/items/8").headers["x-cache"] == "HIT"
    assert client.post("/rename/8").status_code == 200
    assert client.get("/items/8").headers["x-cache"] == "MISS"


def test_a_location_on_another_host_is_not_followed(cache_url: str) -> None:
    client = TestClient(build(_cache(cache_url)))
    _warm(client, "/items/1")
    assert client.post("/elsewhere", follow_redirects=False).status_code == 303
    assert client.get("/items/1").headers["x-cache"] == "HIT"


def test_cache_group_invalidation_header_invalidates_those_tags(cache_url: str) -> None:
    """RFC 9875: a successful unsafe answer naming groups invalidates entries tagged with them
    (argument tags and result tags alike), and nothing else."""
    client = TestClient(build(_cache(cache_url)))
    for url in ("/items", "/tagged", "/tagged", "/items/1"):
        client.get(url)  # result tags: the first one is not stored (the tag epoch is learnt)
    for url in ("/items", "/tagged", "/items/1"):
        _warm(client, url)
    assert client.post("/groups").status_code == 204
    assert client.get("/items").headers["x-cache"] == "MISS"
    assert client.get("/tagged").headers["x-cache"] == "MISS"
    assert client.get("/items/1").headers["x-cache"] == "HIT"


def test_decorated_write_and_install_invalidate_once() -> None:
    """A decorated write route under install: its path is invalidated once, not twice."""
    cache = _cache("memory://")
    app = FastAPI()

    @app.get("/x")
    @cache.cache(ttl=60)
    async def read_x() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/x")
    @cache.cache(ttl=60)
    async def write_x() -> dict[str, bool]:
        return {"ok": True}

    cacheframe.install(app)
    cacheframe.install(app)  # idempotent
    client = TestClient(app)
    _warm(client, "/x")
    before = cache.stats.invalidations
    assert client.post("/x").status_code == 200
    assert cache.stats.invalidations == before + 1
    assert client.get("/x").headers["x-cache"] == "MISS"


def test_groups_parser() -> None:
    assert groups(b'"a", "b\\"c";p=1, tok, "d"') == ["a", 'b"c', "d"]
    assert groups(b"") == []
    assert len(groups(b", ".join(b'"g%d"' % i for i in range(100)))) == 100
    assert len(groups(b", ".join(b'"g%d"' % i for i in range(2000)))) == 1024


# -- tag headers (opt-in) ---------------------------------------------------------------------


def test_tag_headers_list_argument_and_result_tags_on_misses_and_hits() -> None:
    cache = _cache("memory://")
    app = FastAPI()

    @app.get("/p/{item_id}")
    @cache.cache(
        ttl=60,
        tags=["item:{item_id}"],
        result_tags=lambda r: ["shelf 1"],
        tag_headers=["cache-groups", "Surrogate-Key", "Cache-Tag"],
    )
    async def page(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.get("/plain")
    @cache.cache(ttl=60, tags=["secret:{x}"])
    async def plain(x: str = "a") -> dict[str, str]:
        return {"x": x}

    client = TestClient(app)
    for expected in ("MISS", "HIT", "HIT"):  # result_tags=: the tag epoch is read from the first lookup
        reply = client.get("/p/3")
        assert reply.headers["x-cache"] == expected
        assert reply.headers["cache-groups"] == '"item:3", "shelf 1"'
        assert reply.headers["surrogate-key"] == "item:3"  # "shelf 1" cannot be carried
        assert reply.headers["cache-tag"] == "item:3,shelf 1"
    assert "cache-groups" not in client.get("/plain").headers  # off by default: tags can reveal data


def test_tag_headers_are_checked_at_decoration() -> None:
    with pytest.raises(ConfigurationError, match="Surrogate-Key"):
        cacheframe.cache(ttl=1, tag_headers=["X-Tags"])
    with pytest.raises(ConfigurationError, match="list"):
        cacheframe.cache(ttl=1, tag_headers="Cache-Tag")  # type: ignore[arg-type]


def test_tag_header_values_escape_and_leave_out_what_they_cannot_carry() -> None:
    assert tag_header_value("Cache-Groups", ['a"b', "c\\d", "é"]) == '"a\\"b", "c\\\\d"'
    assert tag_header_value("Surrogate-Key", ["a b", "c"]) == "c"
    assert tag_header_value("Cache-Tag", ["a,b"]) is None


# -- on_invalidate hooks ------------------------------------------------------------------------


async def test_on_invalidate_hooks_hear_every_tag_invalidation(cache_url: str) -> None:
    cache = _cache(cache_url)
    heard: list[tuple[list[str], bool]] = []

    @cache.on_invalidate
    async def forward(tags: list[str], soft: bool) -> None:
        heard.append((tags, soft))

    @cache.on_invalidate
    def broken(tags: list[str], soft: bool) -> None:
        raise RuntimeError("CDN down")

    await cache.invalidate_tags("item:3", "items")
    await cache.invalidate_tags("item:4", soft=True)
    assert heard == [(["item:3", "items"], False), (["item:4"], True)]
    with pytest.raises(ConfigurationError):
        cache.on_invalidate("not a function")  # type: ignore[arg-type]
    await cache.close()
