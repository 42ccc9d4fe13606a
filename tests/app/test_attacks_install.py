"""Attacks on issue #13's second part: nested cached calls' tags, RFC 9111 §4.4 by stamps,
``cacheframe.install(app)`` (Location, Content-Location, Cache-Group-Invalidation), tag
headers and ``on_invalidate`` hooks. Each test is a way a write that succeeded leaves a
stale page served, an invalidation widens or costs more than it should, or the middleware
breaks a request."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import uuid
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, Path, Response, WebSocket
from fastapi.testclient import TestClient
from pydantic import AfterValidator

import cacheframe
from cacheframe import Cache, invalidates, tag
from cacheframe.exceptions import ConfigurationError

calls: collections.Counter[str] = collections.Counter()
data: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _fresh() -> None:
    calls.clear()
    data.clear()


def _cache(url: str = "memory://") -> Cache:
    return Cache(url, prefix=f"x{uuid.uuid4().hex[:8]}", timeout=5.0)


def _warm(client: TestClient, url: str) -> None:
    client.get(url)
    assert client.get(url).headers["x-cache"] == "HIT", url


def _settle(client: TestClient, url: str) -> None:
    """Request a page tagged from what it computed until it is a hit: in a fresh store its
    first two results are not stored (the tag epoch is learnt, then created)."""
    for _ in range(3):
        client.get(url)
    assert client.get(url).headers["x-cache"] == "HIT", url


def _item_app(cache: Cache, location: str) -> FastAPI:
    """GET /items/{item_id} cached (str id); POST /items answers 201 with ``location``."""
    app = FastAPI()

    @app.get("/items/{item_id}")
    @cache.cache(ttl=60)
    async def read_item(item_id: str) -> dict[str, str]:
        return {"name": data.get(item_id, "old")}

    @app.post("/items")
    async def create_item() -> Response:
        data["café"] = data["a b"] = "new"
        return Response(status_code=201, headers={"Location": location})

    cacheframe.install(app)
    return app


# -- Location / Content-Location -----------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "page"),
    [
        ("/items/caf%C3%A9", "/items/café"),  # a URI is percent-encoded; the ASGI path is not
        ("/items/a%20b", "/items/a b"),
        ("http://testserver:80/items/a%20b", "/items/a b"),  # the default port spelt out
        ("HTTP://TESTSERVER/items/a%20b", "/items/a b"),  # scheme and host are case-insensitive
    ],
)
def test_location_is_invalidated_by_the_path_the_app_sees(location: str, page: str) -> None:
    client = TestClient(_item_app(_cache(), location))
    _warm(client, page)
    assert client.post("/items").status_code == 201
    assert client.get(page).json() == {"name": "new"}


@pytest.mark.parametrize(
    "location",
    [
        "//evil.example/items/x",
        "http://evil.example/items/x",
        "http://user@evil.example/items/x",
        "http://testserver.evil.example/items/x",
        "http://testserver:8080/items/x",
        "ftp://testserver/items/x",
        "javascript:alert(1)",
        "http://[::1/items/x",  # not a URL at all: ignored, the write still answers
    ],
)
def test_location_on_another_origin_or_malformed_invalidates_nothing(location: str) -> None:
    client = TestClient(_item_app(_cache(), location))
    _warm(client, "/items/x")
    assert client.post("/items").status_code == 201
    assert client.get("/items/x").headers["x-cache"] == "HIT"


def test_a_malformed_location_does_not_keep_the_write_path_from_being_invalidated() -> None:
    cache = _cache()
    app = FastAPI()

    @app.get("/items/{item_id}")
    @cache.cache(ttl=60)
    async def read_item(item_id: str) -> dict[str, str]:
        return {"name": data.get(item_id, "old")}

    @app.put("/items/{item_id}")
    async def put_item(item_id: str) -> Response:
        data[item_id] = "new"
        return Response(status_code=204, headers={"Content-Location": "http://[::1/items/x"})

    cacheframe.install(app)
    client = TestClient(app)
    _warm(client, "/items/x")
    assert client.put("/items/x").status_code == 204
    assert client.get("/items/x").json() == {"name": "new"}


# -- which GET routes a write reaches: the resource identity of the view vs of the write ------


def _get_user_id(user_id: int) -> int:
    return user_id


def test_path_parameter_consumed_only_by_a_dependency() -> None:
    """GET /users/{user_id}/profile takes ``user_id`` through a dependency only (the view has
    no such parameter): the write, ``@invalidates`` and ``.invalidate(user_id=5)`` must all
    reach the same resource."""
    cache = _cache()
    app = FastAPI()

    @app.get("/users/{user_id}/profile")
    @cache.cache(ttl=60)
    async def profile(uid: int = Depends(_get_user_id)) -> dict[str, str]:
        return {"name": data.get(str(uid), "old")}

    @app.put("/users/{user_id}/profile")
    async def put_profile(user_id: int) -> dict[str, bool]:
        data[str(user_id)] = "new"
        return {"ok": True}

    @app.post("/users/{user_id}/rename")
    @invalidates(profile)
    async def rename(user_id: int) -> dict[str, bool]:
        data[str(user_id)] = "renamed"
        return {"ok": True}

    cacheframe.install(app)
    client = TestClient(app)
    _warm(client, "/users/5/profile")
    assert client.put("/users/5/profile").status_code == 200
    assert client.get("/users/5/profile").json() == {"name": "new"}
    _warm(client, "/users/5/profile")
    assert client.post("/users/5/rename").status_code == 200
    assert client.get("/users/5/profile").json() == {"name": "renamed"}
    _warm(client, "/users/5/profile")
    data["5"] = "direct"
    asyncio.run(profile.invalidate(user_id=5))
    assert client.get("/users/5/profile").json() == {"name": "direct"}


def _lower(value: str) -> str:
    return value.lower()


Slug = Annotated[str, AfterValidator(_lower)]


def test_path_parameter_normalised_by_an_annotated_validator() -> None:
    """A case-insensitive slug: GET /items/ABC is stored under the slug "abc" the view
    receives; PUT /items/ABC must invalidate that resource."""
    cache = _cache()
    app = FastAPI()

    @app.get("/items/{slug}")
    @cache.cache(ttl=60)
    async def read_item(slug: Slug) -> dict[str, str]:
        return {"name": data.get(slug, "old")}

    @app.put("/items/{slug}")
    async def put_item(slug: Slug) -> dict[str, bool]:
        data[slug] = "new"
        return {"ok": True}

    cacheframe.install(app)
    client = TestClient(app)
    _warm(client, "/items/ABC")
    assert client.put("/items/ABC").status_code == 200
    assert client.get("/items/ABC").json() == {"name": "new"}


@pytest.mark.parametrize("write", ["/items/3", "/items/03", "/items/+3"])
def test_path_parameter_with_an_alias_and_int_conversion(write: str) -> None:
    cache = _cache()
    app = FastAPI()

    @app.get("/items/{itemId}")
    @cache.cache(ttl=60)
    async def read_item(item_id: int = Path(alias="itemId")) -> dict[str, str]:
        return {"name": data.get(str(item_id), "old")}

    @app.put("/items/{itemId}")
    async def put_item(item_id: int = Path(alias="itemId")) -> dict[str, bool]:
        data[str(item_id)] = "new"
        return {"ok": True}

    cacheframe.install(app)
    client = TestClient(app)
    _warm(client, "/items/3")
    assert client.put(write).status_code == 200
    assert client.get("/items/3").json() == {"name": "new"}


def test_starlette_converters_int_and_path() -> None:
    cache = _cache()
    app = FastAPI()

    @app.get("/n/{n:int}")
    @cache.cache(ttl=60)
    async def read_n(n: int) -> dict[str, str]:
        return {"v": data.get(f"n{n}", "old")}

    @app.get("/files/{name:path}")
    @cache.cache(ttl=60)
    async def read_file(name: str) -> dict[str, str]:
        return {"v": data.get(name, "old")}

    @app.put("/n/{n:int}")
    async def put_n(n: int) -> dict[str, bool]:
        data[f"n{n}"] = "new"
        return {"ok": True}

    @app.delete("/files/{name:path}")
    async def delete_file(name: str) -> Response:
        data[name] = "new"
        return Response(status_code=204)

    cacheframe.install(app)
    client = TestClient(app)
    for url in ("/n/7", "/files/a/b c.txt", "/files/a"):
        _warm(client, url)
    assert client.put("/n/7").status_code == 200
    assert client.delete("/files/a/b%20c.txt").status_code == 204
    assert client.get("/n/7").json() == {"v": "new"}
    assert client.get("/files/a/b c.txt").json() == {"v": "new"}
    assert client.get("/files/a").headers["x-cache"] == "HIT"  # a prefix is another resource


def _router_app(cache: Cache) -> FastAPI:
    router = APIRouter(prefix="/v1", dependencies=[Depends(_get_user_id)])

    @router.get("/users/{user_id}/items/{item_id}")
    @cache.cache(ttl=60)
    async def read_item(item_id: int) -> dict[str, str]:
        return {"name": data.get(str(item_id), "old")}

    @router.patch("/users/{user_id}/items/{item_id}")
    async def patch_item(item_id: int) -> dict[str, bool]:
        data[str(item_id)] = "new"
        return {"ok": True}

    app = FastAPI()
    app.include_router(router)
    return app


def test_included_router_with_prefix_and_a_router_dependency() -> None:
    app = _router_app(_cache())
    cacheframe.install(app)
    client = TestClient(app)
    _warm(client, "/v1/users/5/items/3")
    _warm(client, "/v1/users/6/items/3")
    assert client.patch("/v1/users/5/items/3").status_code == 200
    assert client.get("/v1/users/5/items/3").json() == {"name": "new"}
    assert client.get("/v1/users/6/items/3").headers["x-cache"] == "HIT"  # another resource


def test_mounted_sub_application() -> None:
    """install(app) on the outer app: a write to a route of a mounted FastAPI sub-app
    invalidates the sub-app's cached GET route of that path."""
    cache = _cache()
    sub = _router_app(cache)
    app = FastAPI()
    app.mount("/api", sub)
    cacheframe.install(app)
    client = TestClient(app)
    _warm(client, "/api/v1/users/5/items/3")
    assert client.patch("/api/v1/users/5/items/3").status_code == 200
    assert client.get("/api/v1/users/5/items/3").json() == {"name": "new"}


def test_app_served_under_a_root_path() -> None:
    """Behind a proxy that strips /prefix (root_path): the write's path and a Location
    built with url_for both carry the root path."""
    cache = _cache()
    app = FastAPI(root_path="/prefix")

    @app.get("/items/{item_id}")
    @cache.cache(ttl=60)
    async def read_item(item_id: int) -> dict[str, str]:
        return {"name": data.get(str(item_id), "old")}

    @app.put("/items/{item_id}")
    async def put_item(item_id: int) -> dict[str, bool]:
        data[str(item_id)] = "new"
        return {"ok": True}

    @app.post("/items")
    async def create(response: Response) -> dict[str, bool]:
        data["9"] = "new"
        response.status_code = 201
        response.headers["Location"] = "/prefix/items/9"
        return {"ok": True}

    cacheframe.install(app)
    client = TestClient(app, root_path="/prefix")
    _warm(client, "/items/3")
    _warm(client, "/items/9")
    assert client.put("/items/3").status_code == 200
    assert client.get("/items/3").json() == {"name": "new"}
    assert client.post("/items").status_code == 201
    assert client.get("/items/9").json() == {"name": "new"}


def test_location_into_a_mounted_sub_application() -> None:
    """A write on the outer app whose Location names a page of a mounted sub-app."""
    cache = _cache()
    sub = _router_app(cache)
    app = FastAPI()

    @app.post("/import")
    async def import_item() -> Response:
        data["3"] = "new"
        return Response(status_code=201, headers={"Location": "/api/v1/users/5/items/3"})

    app.mount("/api", sub)
    cacheframe.install(app)
    client = TestClient(app)
    _warm(client, "/api/v1/users/5/items/3")
    assert client.post("/import").status_code == 201
    assert client.get("/api/v1/users/5/items/3").json() == {"name": "new"}


# -- nested cached calls: the helper's tags tag the caller ----------------------------------


def _page_app(cache: Cache, *, sync_view: bool = False, sync_helper: bool = False) -> tuple[FastAPI, Any]:
    """GET /page/{item_id} built from a cached helper tagged "item:{item_id}"."""
    app = FastAPI()
    if sync_helper:

        @cache.cache(ttl=60, namespace="helper", tags=["item:{item_id}"])
        def load_item(item_id: int) -> str:
            calls["helper"] += 1
            return data.get(str(item_id), "old")

    else:

        @cache.cache(ttl=60, namespace="helper", tags=["item:{item_id}"])
        async def load_item(item_id: int) -> str:  # type: ignore[misc]
            calls["helper"] += 1
            return data.get(str(item_id), "old")

    if sync_view:
        assert sync_helper

        @app.get("/page/{item_id}")
        @cache.cache(ttl=60, namespace="page")
        def page(item_id: int, q: str = "") -> dict[str, str]:
            return {"name": load_item(item_id)}

    elif sync_helper:

        @app.get("/page/{item_id}")
        @cache.cache(ttl=60, namespace="page")
        async def page(item_id: int, q: str = "") -> dict[str, str]:  # type: ignore[misc]
            return {"name": load_item(item_id)}  # a sync helper on the loop: blocks, but works

    else:

        @app.get("/page/{item_id}")
        @cache.cache(ttl=60, namespace="page")
        async def page(item_id: int, q: str = "") -> dict[str, str]:  # type: ignore[misc]
            return {"name": await load_item(item_id)}

    return app, load_item


@pytest.mark.parametrize(
    ("sync_view", "sync_helper"),
    [(False, False), (False, True), (True, True)],
    ids=["async", "async-sync", "sync"],
)
def test_helper_tags_reach_the_page_built_from_it(cache_url: str, sync_view: bool, sync_helper: bool) -> None:
    cache = _cache(cache_url)
    app, _ = _page_app(cache, sync_view=sync_view, sync_helper=sync_helper)
    with TestClient(app) as client:
        _settle(client, "/page/3")
        data["3"] = "new"
        asyncio.run(cache.invalidate_tags("item:3"))
        assert client.get("/page/3").json() == {"name": "new"}
    asyncio.run(cache.close())


def test_a_page_built_from_a_soft_invalidated_helper_is_not_stored_as_fresh(cache_url: str) -> None:
    """After invalidate_tags("item:3", soft=True) the helper's entry may be served stale once,
    while it refreshes. A page variant computed from that stale value must not be stored as
    a fresh entry: the requests after the refresh must see the new item."""
    cache = _cache(cache_url)
    app, _ = _page_app(cache)
    with TestClient(app) as client:
        _settle(client, "/page/3")
        data["3"] = "new"
        asyncio.run(cache.invalidate_tags("item:3", soft=True))
        client.get("/page/3?q=other")  # a variant not cached yet: computed from the helper
        for _ in range(3):
            reply = client.get("/page/3?q=other")
        assert reply.json() == {"name": "new"}
    asyncio.run(cache.close())


def test_helper_called_many_times_in_one_page() -> None:
    """10,000 calls of one helper in a page: the page is stored (one tag); 100 items each
    tagged: the page is answered, never stored (more than 32 tags), and every answer is right."""
    cache = _cache()
    app = FastAPI()

    @cache.cache(ttl=60, namespace="helper", tags=["item:{item_id}"])
    async def load_item(item_id: int) -> str:
        return data.get(str(item_id), "old")

    @app.get("/same")
    @cache.cache(ttl=60)
    async def same() -> dict[str, int]:
        return {"n": len([await load_item(1) for _ in range(10_000)])}

    @app.get("/many")
    @cache.cache(ttl=60)
    async def many() -> dict[str, str]:
        return {"last": [await load_item(i) for i in range(100)][-1]}

    client = TestClient(app)
    _settle(client, "/same")
    assert all(client.get("/many").headers["x-cache"] == "MISS" for _ in range(3))
    data["99"] = "new"
    asyncio.run(cache.invalidate_tags("item:99"))
    assert client.get("/many").json() == {"last": "new"}


@pytest.mark.xfail(
    strict=True,
    reason="a caller depends on a nested cached call's tags only, not on its resource or namespace "
    "stamps: load_item.invalidate(3) (or cache.clear('helper')) replaces stamps the page never "
    "sealed. Making the page seal them would count against its 32 tags even for untagged helpers "
    "(a page of 40 cached calls would never be stored): a design choice left to the lead; the docs "
    "now say to tag the helper and invalidate the tag",
)
def test_helper_invalidated_by_its_arguments_reaches_the_page() -> None:
    """``load_item.invalidate(3)`` invalidates the helper's entry; the page built from it
    must not keep the old item either."""
    cache = _cache()
    app, load_item = _page_app(cache)
    client = TestClient(app)
    _settle(client, "/page/3")
    data["3"] = "new"
    asyncio.run(load_item.invalidate(3))
    assert client.get("/page/3").json() == {"name": "new"}


# -- Cache-Group-Invalidation ---------------------------------------------------------------


def _groups_app(cache: Cache, header: str) -> FastAPI:
    app = FastAPI()

    @app.get("/g/{n}")
    @cache.cache(ttl=60, tags=["g{n}"])
    async def read_g(n: int) -> dict[str, int]:
        calls[f"g{n}"] += 1
        return {"n": calls[f"g{n}"]}

    @app.post("/purge")
    async def purge() -> Response:
        return Response(status_code=204, headers={"Cache-Group-Invalidation": header})

    cacheframe.install(app)
    return app


def test_one_bad_group_does_not_cancel_the_others() -> None:
    """A name over 200 bytes cannot be a tag of any entry: the valid names beside it are
    invalidated all the same."""
    header = '"g1", "' + "x" * 300 + '", "g2"'
    client = TestClient(_groups_app(_cache(), header))
    for n in (1, 2, 3):
        _warm(client, f"/g/{n}")
    assert client.post("/purge").status_code == 204
    assert client.get("/g/1").headers["x-cache"] == "MISS"
    assert client.get("/g/2").headers["x-cache"] == "MISS"
    assert client.get("/g/3").headers["x-cache"] == "HIT"


def test_more_than_32_groups_are_all_invalidated() -> None:
    """The header is the app's own: a write touching 40 groups invalidates all 40."""
    header = ", ".join(f'"g{n}"' for n in range(40))
    client = TestClient(_groups_app(_cache(), header))
    _warm(client, "/g/39")
    assert client.post("/purge").status_code == 204
    assert client.get("/g/39").headers["x-cache"] == "MISS"


@pytest.mark.parametrize(
    "header",
    [
        "",
        ",,,",
        '"',
        '"unterminated',
        "token, 42, ?1, (inner list)",
        '"g1";a=1;b="x\\"y"',
        '"\\' * 5000,
        "a" * 100_000,
    ],
)
def test_malformed_groups_never_fail_the_write(header: str) -> None:
    client = TestClient(_groups_app(_cache(), header))
    _warm(client, "/g/7")
    assert client.post("/purge").status_code == 204
    assert client.get("/g/7").headers["x-cache"] == "HIT"


# -- tag headers -----------------------------------------------------------------------------


def test_tag_headers_carry_no_header_injection() -> None:
    cache = _cache()
    app = FastAPI()

    @app.get("/t/{name}")
    @cache.cache(ttl=60, tags=["n:{name}"], tag_headers=["Cache-Groups", "Surrogate-Key", "Cache-Tag"])
    async def read_t(name: str) -> dict[str, str]:
        tag("evil\r\nSet-Cookie: a=b", "tab\there", "ok")
        return {"name": name}

    client = TestClient(app)
    for _ in range(3):
        reply = client.get("/t/x%0D%0ASet-Cookie:%20s=1")
        assert "set-cookie" not in reply.headers
        assert reply.headers["cache-groups"] == '"ok"'
        assert reply.headers["surrogate-key"] == "ok"
        assert reply.headers["cache-tag"] == "ok"


# -- the middleware itself -------------------------------------------------------------------


def test_install_after_the_app_started_says_so() -> None:
    """The middleware stack is built on the first request: adding to it later does nothing,
    so install() must refuse rather than leave writes silently not invalidating."""
    cache = _cache()
    app = FastAPI()

    @app.get("/x")
    @cache.cache(ttl=60)
    async def read_x() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app)
    client.get("/x")
    with pytest.raises(ConfigurationError, match="install"):
        cacheframe.install(app)


def test_websocket_lifespan_streaming_and_errors_pass_through() -> None:
    cache = _cache()
    started: list[bool] = []
    app = FastAPI()

    @app.on_event("startup")
    async def startup() -> None:
        started.append(True)

    @app.get("/items/{item_id}")
    @cache.cache(ttl=60)
    async def read_item(item_id: int) -> dict[str, str]:
        return {"name": data.get(str(item_id), "old")}

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_text("hi")
        await socket.close()

    @app.post("/items/{item_id}/stream")
    async def stream(item_id: int) -> Any:
        from fastapi.responses import StreamingResponse

        async def body() -> Any:
            yield b"a"
            raise RuntimeError("broken mid-stream")

        data[str(item_id)] = "new"
        return StreamingResponse(body(), headers={"Content-Location": f"/items/{item_id}"})

    @app.delete("/items/{item_id}")
    async def delete_item(item_id: int) -> None:
        raise RuntimeError("failed before answering")

    cacheframe.install(app)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert started == [True]
        with client.websocket_connect("/ws") as socket:
            assert socket.receive_text() == "hi"
        _warm(client, "/items/1")
        assert client.delete("/items/1").status_code == 500
        assert client.get("/items/1").headers["x-cache"] == "HIT"  # the write failed: kept
        with contextlib.suppress(RuntimeError):  # the body breaks after the answer started
            client.post("/items/1/stream")
        assert client.get("/items/1").json() == {"name": "new"}  # answered 200: invalidated


@pytest.mark.xfail(
    strict=True,
    reason="a cached helper called by a FastAPI dependency of a cached view runs before the view's "
    "computation collects tags (FastAPI solves dependencies before calling the view): the page is "
    "not tagged with the helper's tags. Collecting from the start of the request needs a hook "
    "before dependency solving (an injected first dependency, or install's middleware)",
)
def test_helper_called_by_a_dependency_of_the_view_tags_the_page() -> None:
    cache = _cache()
    app = FastAPI()

    @cache.cache(ttl=60, namespace="helper", tags=["item:{item_id}"])
    async def load_item(item_id: int) -> str:
        return data.get(str(item_id), "old")

    async def item_name(item_id: int) -> str:
        return await load_item(item_id)

    @app.get("/page/{item_id}")
    @cache.cache(ttl=60)
    async def page(name: str = Depends(item_name)) -> dict[str, str]:
        return {"name": name}

    client = TestClient(app)
    _warm(client, "/page/3")
    data["3"] = "new"
    asyncio.run(cache.invalidate_tags("item:3"))
    assert client.get("/page/3").json() == {"name": "new"}


def test_head_and_get_are_one_resource() -> None:
    cache = _cache()
    app = FastAPI()

    @app.api_route("/items/{item_id}", methods=["GET", "HEAD"])
    @cache.cache(ttl=60)
    async def read_item(item_id: int) -> dict[str, str]:
        return {"name": data.get(str(item_id), "old")}

    @app.put("/items/{item_id}")
    async def put_item(item_id: int) -> dict[str, bool]:
        data[str(item_id)] = "new"
        return {"ok": True}

    cacheframe.install(app)
    client = TestClient(app)
    _warm(client, "/items/1")
    assert client.head("/items/1").headers["x-cache"] == "HIT"
    assert client.put("/items/1").status_code == 200
    assert client.head("/items/1").headers["x-cache"] == "MISS"
    assert client.get("/items/1").json() == {"name": "new"}


def test_a_write_invalidates_its_own_resource_only_and_once() -> None:
    """PUT /items/1 answering Content-Location: /items/1 (its own path) is one invalidation;
    /items/10 and /items/1/notes are other resources."""
    cache = _cache()
    app = FastAPI()

    @app.get("/items/{item_id}")
    @cache.cache(ttl=60)
    async def read_item(item_id: str) -> dict[str, str]:
        return {"name": data.get(item_id, "old")}

    @app.get("/items/{item_id}/notes")
    @cache.cache(ttl=60)
    async def read_notes(item_id: str) -> dict[str, str]:
        return {"notes": "n"}

    @app.put("/items/{item_id}")
    async def put_item(item_id: str) -> Response:
        data[item_id] = "new"
        return Response(status_code=204, headers={"Content-Location": f"/items/{item_id}"})

    cacheframe.install(app)
    client = TestClient(app)
    for url in ("/items/1", "/items/10", "/items/1/notes"):
        _warm(client, url)
    before = cache.stats.invalidations
    assert client.put("/items/1").status_code == 204
    assert cache.stats.invalidations == before + 1
    assert client.get("/items/1").json() == {"name": "new"}
    assert client.get("/items/10").headers["x-cache"] == "HIT"
    assert client.get("/items/1/notes").headers["x-cache"] == "HIT"


def test_a_failing_on_invalidate_hook_never_fails_the_write() -> None:
    cache = _cache()
    heard: list[list[str]] = []

    @cache.on_invalidate
    def broken(tags: list[str], soft: bool) -> None:
        heard.append(tags)
        raise RuntimeError("CDN down")

    client = TestClient(_groups_app(cache, '"g1"'))
    _warm(client, "/g/1")
    assert client.post("/purge").status_code == 204
    assert heard == [["g1"]]
    assert client.get("/g/1").headers["x-cache"] == "MISS"


def test_write_in_another_process_during_a_get_miss(cache_url: str) -> None:
    """Process A's GET /items/caf%C3%A9 misses and reads the old item; meanwhile process B
    (same store) answers POST /items with Location: /items/caf%C3%A9. A's result, stored
    after, must never be served as valid."""
    if cache_url == "memory://":
        pytest.skip("two processes cannot share an in-process store")
    import threading

    prefix = f"p{uuid.uuid4().hex[:8]}"
    cache_a = Cache(cache_url, prefix=prefix, timeout=5.0)
    cache_b = Cache(cache_url, prefix=prefix, timeout=5.0)
    entered, release = threading.Event(), threading.Event()
    app_a = FastAPI()

    @app_a.get("/items/{item_id}")
    @cache_a.cache(ttl=60, namespace="items")
    def read_a(item_id: str) -> dict[str, str]:
        value = data.get(item_id, "old")
        if value == "old" and not entered.is_set():
            entered.set()
            release.wait(10)
        return {"name": value}

    app_b = _item_app(cache_b, "/items/caf%C3%A9")

    @app_b.get("/items/{item_id}")  # B serves the same view (same namespace), never requested here
    @cache_b.cache(ttl=60, namespace="items")
    def read_b(item_id: str) -> dict[str, str]:
        return {"name": data.get(item_id, "old")}

    with TestClient(app_a) as client_a, TestClient(app_b) as client_b:
        slow = threading.Thread(target=client_a.get, args=("/items/café",))
        slow.start()
        assert entered.wait(10)
        assert client_b.post("/items").status_code == 201  # data["café"] = "new", then invalidated
        release.set()
        slow.join(10)
        assert client_a.get("/items/café").json() == {"name": "new"}
    asyncio.run(cache_a.close())
    asyncio.run(cache_b.close())


async def test_pages_joining_one_helper_computation_are_all_tagged(cache_url: str) -> None:
    """Two cached functions call load_item(3) at once: one computes it, the other waits for
    that computation (single flight). The helper tags its result "item:3" while it runs:
    both callers must be tagged with it."""
    cache = _cache(cache_url)
    entered, release = asyncio.Event(), asyncio.Event()
    source = {"3": "old"}

    @cache.cache(ttl=60, namespace="helper")
    async def load_item(item_id: int) -> str:
        tag(f"item:{item_id}")
        entered.set()
        await release.wait()
        return source[str(item_id)]

    @cache.cache(ttl=60, namespace="page_a")
    async def page_a() -> str:
        return await load_item(3)

    @cache.cache(ttl=60, namespace="page_b")
    async def page_b() -> str:
        return await load_item(3)

    async def settle(page: Any) -> None:  # learn, then create, the tag epoch
        for _ in range(2):
            await cache.clear("helper")
            release.set()
            await page()

    await settle(page_a)
    await settle(page_b)
    await cache.clear()
    release.clear()
    first = asyncio.create_task(page_a())
    await entered.wait()
    second = asyncio.create_task(page_b())
    await asyncio.sleep(0.05)  # page_b's call joins load_item(3)'s flight
    release.set()
    assert await first == await second == "old"
    assert await page_a() == await page_b() == "old"  # both stored: hits
    source["3"] = "new"
    await cache.invalidate_tags("item:3")
    try:
        assert await page_a() == "new"
        assert await page_b() == "new"
    finally:
        await cache.close()


async def test_page_waiting_for_another_process_helper_is_tagged(cache_url: str) -> None:
    """Process B computes load_item(3) under the store lock; process A's page calls it
    meanwhile and waits for B's entry. The tag B's helper took must tag A's page."""
    if cache_url == "memory://":
        pytest.skip("two processes cannot share an in-process store")
    prefix = f"w{uuid.uuid4().hex[:8]}"
    # Every miss of either takes the store lock (however cheap the computation was so far).
    cache_a, cache_b = (
        Cache(cache_url, prefix=prefix, timeout=5.0, stampede_lock_min_cost=0) for _ in range(2)
    )
    entered, release = asyncio.Event(), asyncio.Event()
    source = {"3": "old"}

    def helper(cache: Cache, slow: bool) -> Any:
        @cache.cache(ttl=60, namespace="helper")
        async def load_item(item_id: int) -> str:
            tag(f"item:{item_id}")
            calls["slow" if slow else "fast"] += 1
            if slow:
                entered.set()
                await release.wait()
            return source.get(str(item_id), "old")

        return load_item

    load_a, load_b = helper(cache_a, False), helper(cache_b, True)

    @cache_a.cache(ttl=60, namespace="page")
    async def page() -> str:
        return await load_a(3)

    for _ in range(2):  # A learns and creates the tag epoch; B learns that its helper tags
        await cache_a.clear("helper")
        await cache_a.clear("page")
        await page()
        release.set()
        await load_b(4)
    await cache_a.clear("helper")  # (a whole clear() would drop the tag epoch too)
    await cache_a.clear("page")
    release.clear()
    entered.clear()
    computing = asyncio.create_task(load_b(3))
    await entered.wait()
    waiting = asyncio.create_task(page())
    await asyncio.sleep(0.1)
    release.set()
    assert await computing == await waiting == "old"
    assert calls["fast"] == 2  # A's helper did not run for item 3: A waited for B's entry
    try:
        assert await page() == "old"
        source["3"] = "new"
        await cache_b.invalidate_tags("item:3")
        assert await page() == "new"
    finally:
        await cache_a.close()
        await cache_b.close()
