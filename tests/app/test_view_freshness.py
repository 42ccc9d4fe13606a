"""A view's own Cache-Control/Expires bound what is stored and advertised, and Age counts once
(issue 10 §5), through the decorator path and the fast path, on every backend."""

from __future__ import annotations

import collections
import time
from email.utils import formatdate

import pytest
from fastapi import FastAPI, Response
from fastapi.testclient import TestClient

import cacheframe
from cacheframe import fastpath, http

pytestmark = pytest.mark.usefixtures("app_cache")

calls: collections.Counter[str] = collections.Counter()


def build(fast: bool) -> FastAPI:
    """Views that set their own Cache-Control / Expires (``cc``, ``expires_in``) or none."""
    app = FastAPI()
    calls.clear()

    @app.get("/cc")
    @cacheframe.cache(ttl=60)
    async def own(cc: str, response: Response) -> dict[str, int]:
        calls["cc"] += 1
        response.headers["Cache-Control"] = cc
        return {"n": calls["cc"]}

    @app.get("/swr")
    @cacheframe.cache(ttl=60, stale_while_revalidate=300)
    async def swr(cc: str, response: Response) -> dict[str, int]:
        calls["swr"] += 1
        response.headers["Cache-Control"] = cc
        return {"n": calls["swr"]}

    @app.get("/expires")
    @cacheframe.cache(ttl=60)
    async def expires(expires_in: float, response: Response, cc: str = "") -> dict[str, int]:
        calls["expires"] += 1
        response.headers["Expires"] = formatdate(time.time() + expires_in, usegmt=True)
        if cc:
            response.headers["Cache-Control"] = cc
        return {"n": calls["expires"]}

    @app.get("/plain")
    @cacheframe.cache(ttl=60)
    async def plain() -> dict[str, int]:
        calls["plain"] += 1
        return {"n": calls["plain"]}

    if fast:
        fastpath.install(app)
    return app


@pytest.fixture(params=[False, True], ids=["decorator", "fastpath"])
def client(request: pytest.FixtureRequest) -> TestClient:
    """A client of the app, with or without the fast path."""
    return TestClient(build(request.param))


def later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Move the clock the entries are aged by ``seconds`` ahead."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + seconds)


def directives(response: object) -> dict[str, str | None]:
    return http.parse_cache_control(response.headers["cache-control"])  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "cc",
    [
        "max-age=0",
        "public, s-maxage=0",
        "max-age=60, s-maxage=0",
        "no-cache",
        "must-revalidate, max-age=0",
        "proxy-revalidate, s-maxage=0",
        "max-age=soon",
        "max-age=0, max-age=60",
    ],
)
def test_zero_lifetime_is_never_reused(client: TestClient, cc: str) -> None:
    """max-age=0, s-maxage=0, no-cache, must-revalidate with no lifetime: every request runs the view."""
    first, second = client.get("/cc", params={"cc": cc}), client.get("/cc", params={"cc": cc})
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "MISS")
    assert (first.json(), second.json()) == ({"n": 1}, {"n": 2})


def test_expires_in_the_past_is_never_reused(client: TestClient) -> None:
    """An Expires already past (and no max-age) gives no freshness: never stored."""
    client.get("/expires", params={"expires_in": -30})
    assert client.get("/expires", params={"expires_in": -30}).headers["x-cache"] == "MISS"
    assert calls["expires"] == 2


def test_view_max_age_below_ttl_bounds_the_entry(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A view's max-age=10 under ttl=60: fresh for 10 s, then recomputed."""
    params = {"cc": "max-age=10"}
    client.get("/cc", params=params)
    later(monkeypatch, 5)
    assert client.get("/cc", params=params).headers["x-cache"] == "HIT"
    later(monkeypatch, 11)
    again = client.get("/cc", params=params)
    assert again.headers["x-cache"] == "MISS" and again.json() == {"n": 2}


@pytest.mark.parametrize(
    ("cc", "lifetime"), [("max-age=5, s-maxage=30", 30), ("max-age=300, s-maxage=10", 10)]
)
def test_s_maxage_wins_for_the_shared_cache(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, cc: str, lifetime: int
) -> None:
    """s-maxage, not max-age, is the entry's lifetime when the view sets both."""
    client.get("/cc", params={"cc": cc})
    later(monkeypatch, lifetime - 2)
    assert client.get("/cc", params={"cc": cc}).headers["x-cache"] == "HIT"
    later(monkeypatch, lifetime + 1)
    assert client.get("/cc", params={"cc": cc}).headers["x-cache"] == "MISS"


def test_expires_bounds_the_entry_and_max_age_wins_over_it(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Expires 20 s ahead bounds the entry to 20 s; with a max-age, Expires is ignored."""
    client.get("/expires", params={"expires_in": 20})
    overridden = client.get("/expires", params={"expires_in": -5, "cc": "max-age=30"})
    assert overridden.headers["x-cache"] == "MISS" and directives(overridden)["max-age"] == "30"
    later(monkeypatch, 10)
    assert client.get("/expires", params={"expires_in": 20}).headers["x-cache"] == "HIT"
    assert client.get("/expires", params={"expires_in": -5, "cc": "max-age=30"}).headers["x-cache"] == "HIT"
    later(monkeypatch, 25)
    assert client.get("/expires", params={"expires_in": 20}).headers["x-cache"] == "MISS"


@pytest.mark.parametrize(
    ("cc", "max_age", "s_maxage"),
    [
        ("max-age=5, s-maxage=30", "5", "30"),  # browsers get the view's 5, shared caches 30
        ("max-age=300", "60", None),  # the decorator's ttl is lower: never more than the entry has
        ("public, max-age=20, no-transform", "20", None),
        ("s-maxage=100, max-age=300", "60", "60"),
    ],
)
def test_reply_never_advertises_more_than_the_view_granted(
    client: TestClient, cc: str, max_age: str, s_maxage: str | None
) -> None:
    """The miss, the hit and a 304 all send max-age ≤ the view's (and ≤ the entry's lifetime)."""
    miss = client.get("/cc", params={"cc": cc})
    hit = client.get("/cc", params={"cc": cc})
    not_modified = client.get("/cc", params={"cc": cc}, headers={"If-None-Match": miss.headers["etag"]})
    assert hit.headers["x-cache"] == "HIT" and not_modified.status_code == 304
    for reply in (miss, hit, not_modified):
        assert len(reply.headers.get_list("cache-control")) == 1
        seen = directives(reply)
        assert seen["max-age"] == max_age and seen.get("s-maxage") == s_maxage
        assert "public" in seen and "no-cache" not in seen
    if "no-transform" in cc:
        assert "no-transform" in directives(hit)


def test_must_revalidate_is_never_served_stale(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """must-revalidate turns off stale-while-revalidate for the entry and in what is advertised."""
    params = {"cc": "max-age=10, must-revalidate"}
    first = client.get("/swr", params=params)
    assert "stale-while-revalidate" not in directives(first) and "must-revalidate" in directives(first)
    later(monkeypatch, 20)
    after = client.get("/swr", params=params)
    assert after.headers["x-cache"] == "MISS" and after.json() == {"n": 2}


@pytest.mark.parametrize(("url", "ttl"), [("/plain", 60), ("/cc?cc=max-age%3D30", 30)])
def test_age_is_counted_once(client: TestClient, monkeypatch: pytest.MonkeyPatch, url: str, ttl: int) -> None:
    """On a hit and a 304 (either path) max-age - Age equals the lifetime left here."""
    miss = client.get(url)
    assert directives(miss)["max-age"] == str(ttl) and "age" not in miss.headers
    later(monkeypatch, 12.5)
    hit = client.get(url)
    not_modified = client.get(url, headers={"If-None-Match": miss.headers["etag"]})
    full_path = client.get(url, headers={"Pragma": "x"})  # Pragma keeps a request off the fast path
    for reply in (hit, not_modified, full_path):
        assert reply.headers["x-cache"] == "HIT"
        age = int(reply.headers["age"])
        assert age >= 12  # real seconds may tick by on a loaded machine: no upper bound asserted
        # max-age is the entry's whole lifetime, so max-age - Age is exactly what is left here.
        assert directives(reply)["max-age"] == str(ttl)
    fast = any(m.cls is fastpath.FastPath for m in client.app.user_middleware)  # type: ignore[attr-defined]
    assert cacheframe.get_cache().stats.fast_hits == (2 if fast else 0)


def test_stale_reply_has_age_above_max_age(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stale reply says max-age=<lifetime> and an Age beyond it (stale by Age - max-age)."""
    client = TestClient(build(False))
    client.get("/swr", params={"cc": "max-age=10"})
    later(monkeypatch, 15)
    stale = client.get("/swr", params={"cc": "max-age=10"})
    assert stale.headers["x-cache"] == "STALE"
    assert directives(stale)["max-age"] == "10" and int(stale.headers["age"]) >= 15
