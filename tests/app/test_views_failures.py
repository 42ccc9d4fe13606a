"""Nothing the app does turns a working view into a 500: oversized headers, and failures
inside cacheframe's own request path, on every backend, through the decorator and fast path."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.responses import PlainTextResponse
from fastapi.testclient import TestClient

import cacheframe
from cacheframe import _views, fastpath, http, keys

pytestmark = pytest.mark.usefixtures("app_cache")

calls: Counter[str] = Counter()
raised: list[Exception] = []


def build() -> FastAPI:
    app = FastAPI()

    @app.get("/big")
    @cacheframe.cache(ttl=60)
    async def big(size: int) -> PlainTextResponse:
        calls["big"] += 1
        return PlainTextResponse("ok", headers={"X-Big": "b" * size})

    @app.get("/async")
    @cacheframe.cache(ttl=60)
    async def async_view(q: int = 0) -> dict[str, int]:
        calls["async"] += 1
        return {"q": q}

    @app.get("/sync")
    @cacheframe.cache(ttl=60)
    def sync_view(q: int = 0) -> dict[str, int]:
        calls["sync"] += 1
        return {"q": q}

    @app.get("/fails/async")
    @cacheframe.cache(ttl=60)
    async def fails_async(code: int = 0) -> str:
        calls["fails_async"] += 1
        return _fail(code)

    @app.get("/fails/sync")
    @cacheframe.cache(ttl=60)
    def fails_sync(code: int = 0) -> str:
        calls["fails_sync"] += 1
        return _fail(code)

    return app


def _fail(code: int) -> str:
    error: Exception = HTTPException(code, "teapot") if code else LookupError("the view's own")
    raised.append(error)
    raise error


@pytest.fixture(params=[False, True], ids=["decorator", "fastpath"])
def client(request: pytest.FixtureRequest) -> Iterator[TestClient]:
    """The app on the decorator path, or with the fast path installed."""
    calls.clear()
    raised.clear()
    app = build()
    if request.param:
        fastpath.install(app)
    with TestClient(app) as test_client:
        yield test_client


# -- oversized headers ---------------------------------------------------------------------------


def test_70kb_header_is_served_and_not_stored(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    """A 70 kB response header is served every time; the envelope cannot hold it, so it is not stored."""
    with caplog.at_level(logging.INFO, logger="cacheframe"):
        replies = [client.get("/big", params={"size": 70_000}) for _ in range(2)]
    assert [r.status_code for r in replies] == [200, 200]
    assert all(len(r.headers["x-big"]) == 70_000 for r in replies)
    assert calls["big"] == 2
    assert "header 'x-big' is 70005 bytes" in caplog.text


def test_header_the_envelope_can_hold_is_stored(client: TestClient) -> None:
    """A 60 kB header fits the envelope: stored, and replayed intact on a hit."""
    first, second = (client.get("/big", params={"size": 60_000}) for _ in range(2))
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.headers["x-big"] == "b" * 60_000
    assert calls["big"] == 1


# -- cacheframe's own failures are BYPASS, the view's own propagate --------------------------------


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("cacheframe bug")


@pytest.mark.parametrize("kind", ["async", "sync"])
@pytest.mark.parametrize("where", [(http, "scan_request_headers"), (keys, "url_key")])
def test_internal_failure_before_the_view_runs_answers_bypass(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    where: tuple[Any, str],
) -> None:
    """A failure in cacheframe's code before the view runs is logged and answered BYPASS (view runs once)."""
    monkeypatch.setattr(*where, _boom)
    with caplog.at_level(logging.ERROR, logger="cacheframe"):
        reply = client.get(f"/{kind}", params={"q": 3})
    assert reply.status_code == 200 and reply.json() == {"q": 3}
    assert reply.headers["x-cache"] == "BYPASS"
    assert calls[kind] == 1
    assert "internal error" in caplog.text and "cacheframe bug" in caplog.text


@pytest.mark.parametrize("kind", ["async", "sync"])
@pytest.mark.parametrize("where", ["render", "reply"])
def test_internal_failure_after_the_view_ran_answers_bypass_without_running_it_again(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, kind: str, where: str
) -> None:
    """A failure in cacheframe's code after the view returned answers its value as BYPASS; it ran once."""
    monkeypatch.setattr(_views, where, _boom)
    reply = client.get(f"/{kind}", params={"q": 4})
    assert reply.status_code == 200 and reply.json() == {"q": 4}
    assert reply.headers["x-cache"] == "BYPASS"
    assert calls[kind] == 1


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_views_own_exception_propagates_unchanged_and_once(client: TestClient, kind: str) -> None:
    """The view's own exception reaches the app unchanged (same object), and the view ran once."""
    with pytest.raises(LookupError) as info:
        client.get(f"/fails/{kind}")
    assert info.value is raised[0]
    assert calls[f"fails_{kind}"] == 1


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_views_http_exception_keeps_its_status_and_cache_label(client: TestClient, kind: str) -> None:
    """A view's HTTPException keeps its status, detail and X-Cache label; the view ran once."""
    reply = client.get(f"/fails/{kind}", params={"code": 418})
    assert reply.status_code == 418 and reply.json() == {"detail": "teapot"}
    assert reply.headers["x-cache"] == "MISS"
    assert calls[f"fails_{kind}"] == 1
