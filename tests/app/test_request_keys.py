"""Every input a view can receive is in its key, by the value FastAPI gives it (issue 10, section 2).

Each test runs on every backend (``app_cache``) and with and without the ASGI fast path.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Annotated, Any

import pytest
from fastapi import Body, Cookie, FastAPI, Header, Query, Request
from fastapi.testclient import TestClient
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

import cacheframe
from cacheframe import fastpath

pytestmark = pytest.mark.usefixtures("app_cache")


class AliasedHeaders(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    tenant_id: str | None = Field(None, alias="X-Tenant")


class AnyHeaders(BaseModel):
    model_config = ConfigDict(extra="allow")
    x_a: str | None = None


def build(counter: collections.Counter[str], fast: bool) -> FastAPI:
    app = FastAPI()

    @app.get("/validation-alias")
    @cacheframe.cache(ttl=60)
    async def validation_alias(
        region: Annotated[str | None, Header(validation_alias="x-real-region")] = None,
    ) -> dict[str, str | None]:
        counter["validation_alias"] += 1
        return {"region": region}

    @app.get("/alias-choices")
    @cacheframe.cache(ttl=60)
    async def alias_choices(
        token: Annotated[str | None, Header(validation_alias=AliasChoices("x-one", "x_two"))] = None,
    ) -> dict[str, str | None]:
        counter["alias_choices"] += 1
        return {"token": token}

    @app.get("/cookie-alias")
    @cacheframe.cache(ttl=60)
    async def cookie_alias(
        session: Annotated[str | None, Cookie(validation_alias="Sess")] = None,
    ) -> dict[str, str | None]:
        counter["cookie_alias"] += 1
        return {"session": session}

    @app.get("/query-alias")
    @cacheframe.cache(ttl=60)
    async def query_alias(
        q: Annotated[str | None, Query(validation_alias="search")] = None,
    ) -> dict[str, Any]:
        counter["query_alias"] += 1
        return {"q": q}

    @app.get("/header-model-alias")
    @cacheframe.cache(ttl=60)
    async def header_model_alias(h: Annotated[AliasedHeaders, Header()]) -> dict[str, str | None]:
        counter["header_model_alias"] += 1
        return {"tenant": h.tenant_id}

    @app.get("/header-model-extra")
    @cacheframe.cache(ttl=60)
    async def header_model_extra(h: Annotated[AnyHeaders, Header()]) -> dict[str, Any]:
        counter["header_model_extra"] += 1
        return {"extra": sorted((h.model_extra or {}).keys())}

    @app.get("/body")
    @cacheframe.cache(ttl=60)
    async def body(payload: Annotated[dict[str, int], Body()]) -> dict[str, int]:
        counter["body"] += 1
        return payload

    @app.get("/reflect")
    @cacheframe.cache(ttl=60)
    async def reflect(request: Request) -> dict[str, str]:
        counter["reflect"] += 1
        return {"url": str(request.url), "link": str(request.url_for("reflect"))}

    if fast:
        fastpath.install(app)
    return app


@pytest.fixture(params=[False, True], ids=["decorator", "fastpath"])
def fast(request: pytest.FixtureRequest) -> bool:
    """With and without the ASGI fast path installed."""
    return bool(request.param)


@pytest.fixture
def counter() -> collections.Counter[str]:
    """How often each view ran."""
    return collections.Counter()


@pytest.fixture
def client(counter: collections.Counter[str], fast: bool) -> TestClient:
    """A client of a fresh app."""
    return TestClient(build(counter, fast))


# -- aliases -----------------------------------------------------------------------------------


def test_validation_alias_header_keyed_and_named_in_vary(client: TestClient) -> None:
    """A Header(validation_alias=...) is keyed under the header FastAPI reads, and Vary names it."""
    eu = client.get("/validation-alias", headers={"X-Real-Region": "eu"})
    us = client.get("/validation-alias", headers={"X-Real-Region": "us"})
    assert (eu.json(), us.json()) == ({"region": "eu"}, {"region": "us"})
    assert eu.headers["vary"] == "x-real-region"
    hit = client.get("/validation-alias", headers={"X-Real-Region": "eu"})
    assert hit.json() == {"region": "eu"} and hit.headers["x-cache"] == "HIT"


def test_alias_choices_key_every_header(client: TestClient, counter: collections.Counter[str]) -> None:
    """A Header with AliasChoices is keyed on every header it may be read from."""
    one = client.get("/alias-choices", headers={"X-One": "a"})
    two = client.get("/alias-choices", headers={"x_two": "b"})
    none = client.get("/alias-choices")
    assert (one.json(), two.json(), none.json()) == ({"token": "a"}, {"token": "b"}, {"token": None})
    assert {v.strip() for v in one.headers["vary"].split(",")} == {"x-one", "x_two"}
    assert counter["alias_choices"] == 3


def test_cookie_validation_alias_keyed(client: TestClient) -> None:
    """A Cookie(validation_alias=...) is keyed under the cookie FastAPI reads."""
    alice = client.get("/cookie-alias", headers={"Cookie": "Sess=alice"})
    bob = client.get("/cookie-alias", headers={"Cookie": "Sess=bob"})
    assert (alice.json(), bob.json()) == ({"session": "alice"}, {"session": "bob"})


def test_query_validation_alias_keyed(client: TestClient) -> None:
    """A Query(validation_alias=...) is keyed (the whole query string is)."""
    assert client.get("/query-alias?search=a").json() == {"q": "a"}
    assert client.get("/query-alias?search=b").json() == {"q": "b"}


def test_header_model_alias_and_name_keyed(client: TestClient) -> None:
    """A header model's field alias, and its name under populate_by_name, are both keyed."""
    by_alias = client.get("/header-model-alias", headers={"X-Tenant": "a"})
    by_name = client.get("/header-model-alias", headers={"tenant-id": "b"})
    other_name = client.get("/header-model-alias", headers={"tenant-id": "c"})
    assert (by_alias.json(), by_name.json()) == ({"tenant": "a"}, {"tenant": "b"})
    assert other_name.json() == {"tenant": "c"}


def test_header_model_reading_every_header_bypasses(client: TestClient) -> None:
    """A header model with extra='allow' receives every header: never cached."""
    first = client.get("/header-model-extra", headers={"X-Other": "1"})
    second = client.get("/header-model-extra", headers={"X-Another": "1"})
    assert "x-other" in first.json()["extra"] and "x-another" in second.json()["extra"]
    assert first.headers["x-cache"] == second.headers["x-cache"] == "BYPASS"


# -- body --------------------------------------------------------------------------------------


def test_get_with_body_parameter_is_never_cached(
    client: TestClient, counter: collections.Counter[str]
) -> None:
    """A GET route with a body parameter answers BYPASS: bodies are not part of the key."""
    first = client.request("GET", "/body", json={"a": 1})
    second = client.request("GET", "/body", json={"a": 2})
    assert (first.json(), second.json()) == ({"a": 1}, {"a": 2})
    assert first.headers["x-cache"] == second.headers["x-cache"] == "BYPASS"
    assert counter["body"] == 2


# -- Host --------------------------------------------------------------------------------------


def _call(
    app: FastAPI, headers: list[tuple[bytes, bytes]], server: Any = ("testserver", 80), query: bytes = b""
) -> tuple[int, Any]:
    """Send one raw GET /reflect (headers and query exactly as given): (status, (headers, body))."""

    async def run() -> tuple[int, Any]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/reflect",
            "raw_path": b"/reflect",
            "root_path": "",
            "query_string": query,
            "headers": headers,
            "server": server,
            "client": ("127.0.0.1", 50000),
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        status = sent[0]["status"]
        raw = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
        return status, (raw, b"".join(m.get("body", b"") for m in sent[1:]))

    return asyncio.run(run())


def test_duplicate_host_headers_never_stored(counter: collections.Counter[str], fast: bool) -> None:
    """Two Host headers: BYPASS, so the first host's page never reaches the second host's visitors."""
    app = build(counter, fast)
    status, (headers, body) = _call(app, [(b"host", b"evil.example"), (b"host", b"good.example")])
    assert status == 200 and headers["x-cache"] == "BYPASS" and b"evil.example" in body
    status, (headers, body) = _call(app, [(b"host", b"good.example")])
    assert headers["x-cache"] == "MISS" and b"evil.example" not in body


def test_first_host_header_is_keyed(counter: collections.Counter[str], fast: bool) -> None:
    """The key uses the Host value request.url is built from, on the hit as on the miss."""
    app = build(counter, fast)
    _call(app, [(b"host", b"a.example")])
    _, (headers, body) = _call(app, [(b"host", b"a.example")])
    assert headers["x-cache"] == "HIT" and b"http://a.example/reflect" in body
    assert cacheframe.get_cache().stats.fast_hits == (1 if fast else 0)
    _, (headers, body) = _call(app, [(b"host", b"A.example")])  # url_for keeps the case it was given
    assert headers["x-cache"] == "MISS" and b"http://A.example/reflect" in body


@pytest.mark.parametrize("host", [None, b"bad.example:port"], ids=["absent", "malformed"])
def test_without_usable_host_the_server_address_is_keyed(
    counter: collections.Counter[str], fast: bool, host: bytes | None
) -> None:
    """No Host (or one Starlette rejects): request.url uses the server address, and so does the key."""
    app = build(counter, fast)
    headers = [] if host is None else [(b"host", host)]
    _, (first, body_a) = _call(app, headers, server=("10.0.0.1", 8000))
    _, (second, body_b) = _call(app, headers, server=("10.0.0.2", 8000))
    assert b"10.0.0.1:8000" in body_a and b"10.0.0.2:8000" in body_b
    assert first["x-cache"] == second["x-cache"] == "MISS"
    _, (third, body_c) = _call(app, headers, server=("10.0.0.1", 8000))
    assert third["x-cache"] == "HIT" and body_c == body_a


# -- query string ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [("q=<", "q=%3C"), ("a=1&b=2", "b=2&a=1"), ("q=a+b", "q=a%20b"), ("q=%7e", "q=~"), ("a=1", "a=1&")],
)
def test_raw_query_forms_never_share(counter: collections.Counter[str], fast: bool, a: str, b: str) -> None:
    """Two raw query strings that parse alike still reflect apart in request.url: two entries."""
    app = build(counter, fast)
    host = [(b"host", b"testserver")]
    _, (_, first) = _call(app, host, query=a.encode())
    _, (second_headers, second) = _call(app, host, query=b.encode())
    assert f'?{a}","link"'.encode() in first and f'?{b}","link"'.encode() in second
    assert second_headers["x-cache"] == "MISS"
    _, (third_headers, third) = _call(app, host, query=a.encode())
    assert third_headers["x-cache"] == "HIT" and third == first
