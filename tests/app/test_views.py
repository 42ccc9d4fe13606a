"""@cache on FastAPI views, through the app, on every backend (the ``app_cache`` fixture)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time

import pytest
from fastapi import Depends, FastAPI, Response
from fastapi.testclient import TestClient

import cacheframe
from apps import build_app, build_plain_app, calls
from helpers import assert_freshness

pytestmark = pytest.mark.usefixtures("app_cache")


@pytest.fixture
def client() -> TestClient:
    """A client without ``with``: each request runs in a fresh event loop, as in the wild."""
    calls.clear()
    return TestClient(build_app())


def get_twice(client: TestClient, url: str, **kwargs: object) -> tuple[object, object]:
    return client.get(url, **kwargs), client.get(url, **kwargs)  # type: ignore[arg-type]


# -- 1. signature injection ---------------------------------------------------------------


def test_view_without_request_param_is_cached(client: TestClient) -> None:
    """A view declaring neither Request nor Response is cached (they are injected)."""
    first, second = get_twice(client, "/plain")
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert first.json() == second.json() == {"n": 1}
    assert calls["plain"] == 1


def test_view_declaring_request_and_response_under_other_names(client: TestClient) -> None:
    """A view's own `req: Request` / `resp: Response` are used, and its headers replayed."""
    first, second = get_twice(client, "/own-request")
    assert first.json() == second.json() == {"path": "/own-request"}
    assert first.headers["x-seen-path"] == second.headers["x-seen-path"] == "/own-request"
    assert second.headers["x-cache"] == "HIT" and calls["own_request"] == 1


def test_openapi_schema_unchanged_by_decorator() -> None:
    """The OpenAPI schema shows exactly the view's own parameters."""
    cached, plain = build_app().openapi(), build_plain_app().openapi()
    for path in ("/items", "/own-request", "/db/{item_id}"):
        assert cached["paths"][path] == plain["paths"][path], path


def test_wrapper_keeps_metadata() -> None:
    """functools.wraps metadata and the return annotation survive."""

    @cacheframe.cache(ttl=5)
    async def documented(a: int) -> list[int]:
        """Doc."""
        return [a]

    assert documented.__name__ == "documented" and documented.__doc__ == "Doc."
    assert documented.__annotations__["return"] in (list[int], "list[int]")


def test_return_annotation_still_filters(client: TestClient) -> None:
    """FastAPI still infers the response model from the return annotation, on hit and miss."""
    first, second = get_twice(client, "/annotated")
    assert first.json() == second.json() == {"id": 1, "name": "a"}
    assert second.headers["x-cache"] == "HIT"


# -- 2. async and sync views ----------------------------------------------------------------


def test_sync_view(client: TestClient) -> None:
    """A def view runs in the thread pool and is cached."""
    first, second = get_twice(client, "/sync?q=z")
    assert first.json() == second.json() == {"q": "z"}
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert calls["sync"] == 1


def test_sync_view_with_own_response(client: TestClient) -> None:
    """A def view's own Response headers are kept and replayed."""
    first, second = get_twice(client, "/sync-own-response")
    assert first.headers["x-from-view"] == second.headers["x-from-view"] == "yes"
    assert calls["sync_own_response"] == 1


# -- 3. keys -----------------------------------------------------------------------------------


def test_query_keyed_as_received(client: TestClient) -> None:
    """The raw query string is the key: same bytes hit, reordered or re-encoded bytes do not."""
    assert client.get("/items?n=3&tag=a").headers["x-cache"] == "MISS"
    assert client.get("/items?n=3&tag=a").headers["x-cache"] == "HIT"
    assert client.get("/items?tag=a&n=3").headers["x-cache"] == "MISS"
    assert client.get("/items?tag=b&n=3").headers["x-cache"] == "MISS"
    assert calls["items"] == 3


def test_depends_object_not_in_key(client: TestClient) -> None:
    """A Depends-injected DB session (new object per request) never breaks hits."""
    first, second = get_twice(client, "/db/1")
    assert first.json() == second.json() == {"item": "one"}
    assert second.headers["x-cache"] == "HIT" and calls["db"] == 1
    assert client.get("/db/2").json() == {"item": "two"}


def test_header_params_are_keyed(client: TestClient) -> None:
    """A view's Header() parameter is part of the key automatically."""
    a = client.get("/header-param", headers={"X-Tenant": "a"})
    b = client.get("/header-param", headers={"X-Tenant": "b"})
    a2 = client.get("/header-param", headers={"X-Tenant": "a"})
    assert (a.json(), b.json(), a2.json()) == ({"tenant": "a"}, {"tenant": "b"}, {"tenant": "a"})
    assert a2.headers["x-cache"] == "HIT" and calls["header_param"] == 2


def test_dependency_header_params_are_keyed(client: TestClient) -> None:
    """Header parameters of the route's dependencies are keyed too."""
    de = client.get("/dep-header", headers={"Accept-Language": "de"})
    fr = client.get("/dep-header", headers={"Accept-Language": "fr"})
    assert (de.json(), fr.json()) == ({"locale": "de"}, {"locale": "fr"})
    assert client.get("/dep-header", headers={"Accept-Language": "de"}).headers["x-cache"] == "HIT"


def test_cookie_params_are_keyed(client: TestClient) -> None:
    """A Cookie() parameter is keyed; other cookies are not."""
    dark = client.get("/cookie-param", cookies={"theme": "dark"})
    light = client.get("/cookie-param", cookies={"theme": "light"})
    assert (dark.json(), light.json()) == ({"theme": "dark"}, {"theme": "light"})
    client.cookies.clear()
    again = client.get("/cookie-param", cookies={"theme": "dark", "other": "1"})
    assert again.headers["x-cache"] == "HIT" and again.json() == {"theme": "dark"}


def test_vary_headers_keyed_and_announced(client: TestClient) -> None:
    """vary=[...] headers are keyed and listed in the response's Vary."""
    eu = client.get("/vary", headers={"X-Region": "eu"})
    us = client.get("/vary", headers={"X-Region": "us"})
    none = client.get("/vary")
    assert (eu.json(), us.json(), none.json()) == ({"region": "eu"}, {"region": "us"}, {"region": None})
    assert eu.headers["vary"] == "X-Region"
    hit = client.get("/vary", headers={"X-Region": "eu"})
    assert hit.headers["x-cache"] == "HIT" and hit.headers["vary"] == "X-Region"


def test_router_routes_are_cached(client: TestClient) -> None:
    """Routes on an APIRouter with a prefix are cached per path and query."""
    assert client.get("/r/routed?k=1").headers["x-cache"] == "MISS"
    assert client.get("/r/routed?k=1").headers["x-cache"] == "HIT"


def test_keys_carry_prefix_and_namespace(app_cache: cacheframe.Cache) -> None:
    """The stored key is <prefix>:<module.qualname>:<path digest>:<digest>, found under that name
    (after its stamp bucket's hash tag on a cluster)."""
    from starlette.datastructures import Headers

    from cacheframe import keys

    calls.clear()
    TestClient(build_app()).get("/plain")
    namespace = app_cache._engine.namespace_key("apps.build_app.<locals>.plain")
    assert namespace == f"{app_cache._engine.namespace_key(None)}apps.build_app.%3Clocals%3E.plain:"
    digest = keys.request_digest(
        method="GET",
        host="testserver",
        root_path="",
        path="/plain",
        query_string="",
        headers=Headers(),
        cookies={},
    )
    import asyncio

    async def stored() -> bytes | None:
        try:
            key = namespace + keys.uri_segment("", "/plain") + digest
            return await app_cache.backend.get(app_cache._engine.stamps.place(key))
        finally:
            await app_cache.backend.close()

    assert asyncio.run(stored()) is not None


# -- 4. hit path -------------------------------------------------------------------------------


def test_response_model_filtering_identical_on_hit_and_miss(client: TestClient) -> None:
    """response_model filtering applies on the miss, and the hit replays the same bytes."""
    miss, hit = get_twice(client, "/items?n=2")
    assert miss.content == hit.content
    assert miss.json() == [{"id": 0, "name": "x0"}, {"id": 1, "name": "x1"}]
    assert "secret" not in hit.text
    assert calls["items"] == 1


def test_route_status_code_and_response_class(client: TestClient) -> None:
    """status_code set on the route and response_class are kept on hit and miss."""
    c1, c2 = get_twice(client, "/created")
    assert c1.status_code == c2.status_code == 201 and c2.headers["x-cache"] == "HIT"
    h1, h2 = get_twice(client, "/html")
    assert h1.text == h2.text == "<h1>hi</h1>"
    assert h1.headers["content-type"] == h2.headers["content-type"] == "text/html; charset=utf-8"
    _t1, t2 = get_twice(client, "/text")
    assert t2.text == "plain text" and t2.headers["content-type"].startswith("text/plain")
    assert calls["created"] == calls["html"] == calls["text"] == 1


# -- 5. HTTP semantics -------------------------------------------------------------------------


def test_cache_control_etag_age(client: TestClient) -> None:
    """MISS and HIT carry public max-age=ttl, a strong quoted ETag of the body; hits carry Age."""
    miss, hit = get_twice(client, "/plain")
    assert miss.headers["cache-control"] == "public, max-age=60"
    assert_freshness(hit, 60)
    etag = '"' + hashlib.sha256(miss.content).hexdigest()[:32] + '"'
    assert miss.headers["etag"] == hit.headers["etag"] == etag
    assert "age" not in miss.headers and "age" in hit.headers


def test_max_age_counts_down_with_age(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Age is whole seconds since storing and max-age is ttl minus Age."""
    client.get("/plain")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 12.5)
    hit = client.get("/plain")
    assert_freshness(hit, 60, age=12)


def test_etag_identical_across_processes(client: TestClient) -> None:
    """Another interpreter process computes the same ETag for the same view."""
    local = client.get("/items?n=3").headers["etag"]
    code = (
        "import sys; sys.path.insert(0, 'tests');"
        "from fastapi.testclient import TestClient; import cacheframe; from apps import build_app;"
        "cacheframe.configure(url='memory://');"
        "print(TestClient(build_app()).get('/items?n=3').headers['etag'])"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == local


@pytest.mark.parametrize("header", ["{etag}", "W/{etag}", '"other", {etag}', "*", ' "x" ,W/{etag} '])
def test_if_none_match_gives_304(client: TestClient, header: str) -> None:
    """If-None-Match (exact, weak, list, *) matching the ETag → 304 without body, with headers."""
    etag = client.get("/vary", headers={"X-Region": "eu"}).headers["etag"]
    resp = client.get("/vary", headers={"X-Region": "eu", "If-None-Match": header.format(etag=etag)})
    assert resp.status_code == 304 and resp.content == b""
    assert resp.headers["etag"] == etag
    assert_freshness(resp, 60)
    assert resp.headers["vary"] == "X-Region"


def test_if_none_match_on_miss_stores_then_304(client: TestClient) -> None:
    """A conditional request on a miss stores the entry and still answers 304."""
    etag = '"' + hashlib.sha256(b'{"n":1}').hexdigest()[:32] + '"'
    first = client.get("/plain", headers={"If-None-Match": etag})
    assert first.status_code == 304 and first.headers["x-cache"] == "MISS"
    assert client.get("/plain").headers["x-cache"] == "HIT"


def test_if_none_match_mismatch_gives_200(client: TestClient) -> None:
    """A non-matching If-None-Match gets the full response."""
    client.get("/plain")
    resp = client.get("/plain", headers={"If-None-Match": '"nope"'})
    assert resp.status_code == 200 and resp.json() == {"n": 1}


def test_request_no_store_bypasses(client: TestClient) -> None:
    """Cache-Control: no-store → BYPASS, neither read nor written."""
    first = client.get("/plain", headers={"Cache-Control": "No-Store"})
    assert first.headers["x-cache"] == "BYPASS"
    assert client.get("/plain").headers["x-cache"] == "MISS"
    assert client.get("/plain", headers={"Cache-Control": "no-store"}).headers["x-cache"] == "BYPASS"
    assert calls["plain"] == 3


@pytest.mark.parametrize(
    "headers",
    [{"Cache-Control": "no-cache"}, {"Cache-Control": " max-age=0 , foo"}, {"Pragma": "no-cache"}],
)
def test_request_no_cache_refreshes(client: TestClient, headers: dict[str, str]) -> None:
    """no-cache / max-age=0 / Pragma: no-cache skip the read, run the view, store the result."""
    assert client.get("/plain").json() == {"n": 1}
    fresh = client.get("/plain", headers=headers)
    assert fresh.headers["x-cache"] == "MISS" and fresh.json() == {"n": 2}
    assert client.get("/plain").json() == {"n": 2}


def test_request_max_age_limits_age(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """max-age=N serves only entries with Age ≤ N, otherwise refreshes."""
    client.get("/plain")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 10)
    assert client.get("/plain", headers={"Cache-Control": "max-age=30"}).headers["x-cache"] == "HIT"
    refreshed = client.get("/plain", headers={"Cache-Control": "max-age=5"})
    assert refreshed.headers["x-cache"] == "MISS" and refreshed.json() == {"n": 2}


def test_request_directives_can_be_ignored() -> None:
    """honor_request_cache_control=False: clients cannot force a miss."""
    cacheframe.configure(url="memory://", honor_request_cache_control=False)
    calls.clear()
    client = TestClient(build_app())
    client.get("/plain")
    for value in ("no-cache", "no-store", "max-age=0"):
        assert client.get("/plain", headers={"Cache-Control": value}).headers["x-cache"] == "HIT"
    assert calls["plain"] == 1


@pytest.mark.parametrize(
    "url",
    [
        "/status/404",
        "/status/500",
        "/status/206",
        "/json-response/404",
        "/set-cookie",
        "/own-cache-control/no-store",
        "/own-cache-control/Private",
        "/own-cache-control/public,%20NO-CACHE",
        "/vary-star",
        "/vary-unkeyed",
        "/stream",
        "/background",
    ],
)
def test_never_stored(client: TestClient, url: str) -> None:
    """Non-2xx, Set-Cookie, no-store/private/no-cache, Vary: *, streaming, background tasks."""
    first, second = get_twice(client, url)
    assert first.headers["x-cache"] == second.headers["x-cache"] == "MISS"
    assert first.content == second.content


def test_background_tasks_still_run(client: TestClient) -> None:
    """A view's background task runs (its response is not stored)."""
    client.get("/background")
    assert calls["background_task"] == 1


def test_error_status_replayed_never_as_200(client: TestClient) -> None:
    """A view's 404 stays a 404 on every call and the view runs each time."""
    first, second = get_twice(client, "/status/404")
    assert first.status_code == second.status_code == 404
    assert calls["status404"] == 2


def test_authorization_request_bypasses(client: TestClient) -> None:
    """A request with Authorization is BYPASS on a shared entry (never stored or served)."""
    client.get("/plain")
    resp = client.get("/plain", headers={"Authorization": "Bearer a"})
    assert resp.headers["x-cache"] == "BYPASS" and resp.json() == {"n": 2}


def test_security_dependency_route_bypasses(client: TestClient) -> None:
    """A route with a security dependency is BYPASS even without Authorization."""
    first, second = get_twice(client, "/secured")
    assert first.headers["x-cache"] == second.headers["x-cache"] == "BYPASS"
    assert calls["secured"] == 2


def test_private_entries_per_user(client: TestClient) -> None:
    """private=True keys on Authorization/Cookie and says Cache-Control: private."""
    alice = client.get("/private", headers={"Authorization": "Bearer alice"})
    bob = client.get("/private", headers={"Authorization": "Bearer bob"})
    alice2 = client.get("/private", headers={"Authorization": "Bearer alice"})
    assert alice.json() == alice2.json() == {"user": "Bearer alice"}
    assert bob.json() == {"user": "Bearer bob"}
    assert alice2.headers["x-cache"] == "HIT"
    assert_freshness(alice2, 60, private=True)
    assert calls["private"] == 2


def test_head_answered_from_get_entry(client: TestClient) -> None:
    """On a GET+HEAD route, HEAD is served from the GET entry, without a body."""
    get = client.get("/both")
    head = client.head("/both")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["x-cache"] == "HIT"
    assert head.headers["etag"] == get.headers["etag"]
    assert head.headers["content-length"] == get.headers["content-length"]
    assert calls["both"] == 1


def test_expired_entry_is_a_miss(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """After ttl the entry is not served."""
    client.get("/short")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3)
    resp = client.get("/short")
    assert resp.headers["x-cache"] == "MISS" and resp.json() == {"n": 2}


# -- 6. disabled ---------------------------------------------------------------------------


def test_disabled_bypasses_everything() -> None:
    """enabled=False: every call runs the view, X-Cache: BYPASS."""
    cacheframe.configure(url="memory://", enabled=False)
    calls.clear()
    client = TestClient(build_app())
    first, second = get_twice(client, "/items")
    assert first.headers["x-cache"] == second.headers["x-cache"] == "BYPASS"
    assert first.json() == [{"id": 0, "name": "x0"}, {"id": 1, "name": "x1"}]
    assert calls["items"] == 2


# -- found in review: identity, keys and per-request headers ---------------------------------


def test_security_with_scopes_bypasses(client: TestClient) -> None:
    """Security(fn, scopes=...) marks the route as per-user: BYPASS, never shared."""
    alice = client.get("/scoped", cookies={"sid": "alice"})
    client.cookies.clear()
    bob = client.get("/scoped", cookies={"sid": "bob"})
    assert alice.json() == {"user": "alice"} and bob.json() == {"user": "bob"}
    assert alice.headers["x-cache"] == bob.headers["x-cache"] == "BYPASS"


def test_header_and_cookie_models_are_keyed(client: TestClient) -> None:
    """Annotated[Model, Header()] / Cookie() parameters key on each model field, and say Vary."""
    a = client.get("/header-model", headers={"X-Tenant": "a"})
    b = client.get("/header-model", headers={"X-Tenant": "b"})
    assert (a.json(), b.json()) == ({"tenant": "a"}, {"tenant": "b"})
    assert a.headers["vary"] == "x-tenant"
    dark = client.get("/cookie-model", cookies={"theme": "dark"})
    client.cookies.clear()
    light = client.get("/cookie-model", cookies={"theme": "light"})
    assert (dark.json(), light.json()) == ({"theme": "dark"}, {"theme": "light"})
    assert dark.headers["vary"] == "Cookie"


def test_header_params_announced_in_vary(client: TestClient) -> None:
    """Responses keyed on Header() values tell downstream caches so (Vary)."""
    assert client.get("/header-param", headers={"X-Tenant": "a"}).headers["vary"] == "x-tenant"
    hit = client.get("/header-param", headers={"X-Tenant": "a"})
    assert hit.headers["x-cache"] == "HIT" and hit.headers["vary"] == "x-tenant"


def test_host_and_scheme_are_keyed(client: TestClient) -> None:
    """Entries of one host are never served to another (absolute URLs built from Host)."""
    a = client.get("http://a.example/host")
    b = client.get("http://b.example/host")
    s = client.get("https://a.example/host")
    assert a.json() == {"link": "http://a.example/host"}
    assert b.json() == {"link": "http://b.example/host"}
    assert s.json() == {"link": "https://a.example/host"}
    assert client.get("http://a.example/host").headers["x-cache"] == "HIT"


def test_dependency_headers_are_per_request(client: TestClient) -> None:
    """Headers a dependency sets are not frozen into the entry: each reply carries its own."""
    first, second = get_twice(client, "/dep-header-set")
    assert second.headers["x-cache"] == "HIT"
    assert (first.headers["x-request-id"], second.headers["x-request-id"]) == ("1", "2")
    assert second.headers.get_list("x-request-id") == ["2"]


def test_http_exception_carries_cache_status(client: TestClient) -> None:
    """An HTTPException raised by the view still answers with X-Cache."""
    resp = client.get("/raises/404")
    assert resp.status_code == 404 and resp.headers["x-cache"] == "MISS"


def test_vary_authorization_allows_per_user_caching(client: TestClient) -> None:
    """vary=["Authorization"] caches requests with credentials, one entry per credential."""
    a1 = client.get("/vary-auth", headers={"Authorization": "Bearer a"})
    b1 = client.get("/vary-auth", headers={"Authorization": "Bearer b"})
    a2 = client.get("/vary-auth", headers={"Authorization": "Bearer a"})
    assert (a1.json(), b1.json(), a2.json()) == (
        {"auth": "Bearer a"},
        {"auth": "Bearer b"},
        {"auth": "Bearer a"},
    )
    assert a2.headers["x-cache"] == "HIT" and a2.headers["vary"] == "Authorization"


def test_timedelta_ttl(client: TestClient) -> None:
    """@cache(ttl=timedelta(...)) sets max-age from the timedelta."""
    first, second = get_twice(client, "/td")
    assert first.headers["cache-control"] == "public, max-age=30" and second.headers["x-cache"] == "HIT"


def test_head_as_first_request(client: TestClient) -> None:
    """A HEAD before any GET fills the entry; the next GET is a HIT with the body."""
    head = client.head("/both")
    assert head.status_code == 200 and head.content == b"" and head.headers["x-cache"] == "MISS"
    get = client.get("/both")
    assert get.headers["x-cache"] == "HIT" and get.json() == {"payload": "x" * 20}


def test_enabled_false_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """CACHEFRAME_ENABLED=false through the environment turns caching off for the app."""
    monkeypatch.setenv("CACHEFRAME_ENABLED", "false")
    cacheframe.configure()
    calls.clear()
    client = TestClient(build_app())
    assert {client.get("/plain").headers["x-cache"] for _ in range(2)} == {"BYPASS"}
    assert calls["plain"] == 2


def test_dependency_no_store_prevents_storing() -> None:
    """A dependency that says Cache-Control: no-store keeps the response out of the cache."""

    def no_store(response: Response) -> None:
        response.headers["Cache-Control"] = "no-store"

    app = FastAPI()
    runs = {"n": 0}

    @app.get("/d", dependencies=[Depends(no_store)])
    @cacheframe.cache(ttl=60)
    async def d() -> dict[str, int]:
        runs["n"] += 1
        return {"n": runs["n"]}

    client = TestClient(app)
    assert [client.get("/d").headers["x-cache"] for _ in range(2)] == ["MISS", "MISS"]
    assert runs["n"] == 2


def test_reused_http_exception_is_not_mutated() -> None:
    """Labelling an error reply never changes a (module-level, shared) HTTPException instance."""
    from fastapi import HTTPException

    gone = HTTPException(404, "gone")
    app = FastAPI()

    @app.get("/cached")
    @cacheframe.cache(ttl=60)
    async def cached() -> None:
        raise gone

    @app.get("/plain")
    async def plain() -> None:
        raise gone

    client = TestClient(app)
    assert client.get("/cached").headers["x-cache"] == "MISS"
    assert "x-cache" not in client.get("/plain").headers
    assert gone.headers is None


def test_middleware_editing_a_hit_leaves_the_next_hit_alone(app_cache: cacheframe.Cache) -> None:
    """A hit's header list is built once per entry and second but copied per reply: a middleware
    that appends to the headers it is sent changes that reply only."""
    app = FastAPI()

    @app.get("/items")
    @cacheframe.cache(ttl=60)
    async def items() -> list[int]:
        return [1, 2]

    def tag(inner: object) -> object:
        async def middleware(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
            async def tagged(message: dict) -> None:  # type: ignore[type-arg]
                if message["type"] == "http.response.start":  # edits the list it was given
                    message["headers"].append((b"x-tag", b"1"))
                await send(message)  # type: ignore[operator]

            await inner(scope, receive, tagged)  # type: ignore[operator]

        return middleware

    client = TestClient(tag(app))  # type: ignore[arg-type]
    replies = [client.get("/items") for _ in range(4)]
    assert [r.headers["x-cache"] for r in replies] == ["MISS", "HIT", "HIT", "HIT"]
    assert [r.headers.get_list("x-tag") for r in replies] == [["1"]] * 4


def test_hit_headers_memo_is_per_view() -> None:
    """The memoised header list of an entry belongs to one view's binding: another view
    replaying the same decoded entry builds its own."""
    from cacheframe import _replies
    from cacheframe.envelope import ResponseEntry
    from cacheframe.policy import Policy

    def policy(private: bool) -> Policy:
        return Policy(None, None, None, None, (), private, (), 0.0, 0.0, 0.0)

    engine = cacheframe.Cache(url="memory://")._engine
    entry = ResponseEntry(200, [(b"content-type", b"application/json")], b"[]", b'"e"', time.time(), 60.0)
    public_view, private_view = (
        engine.bind(policy(False), "mod.f", "", True),
        engine.bind(policy(True), "mod.g", "", True),
    )
    # Each view's store keys start with its own namespace: the shared memo keeps them apart.
    public = _replies.hit_headers(public_view, public_view.namespace + "k", entry, 3)
    private = _replies.hit_headers(private_view, private_view.namespace + "k", entry, 3)
    assert (b"cache-control", b"public, max-age=60") in public
    assert (b"cache-control", b"private, max-age=60") in private
