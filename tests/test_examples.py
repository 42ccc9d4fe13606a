"""Every app in examples/ runs and does what its docstring says."""

from __future__ import annotations

import gc
import importlib.util
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.testclient import TestClient

import cacheframe

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TESTED = {
    "crud",
    "crud_rfc",
    "crud_tags",
    "per_user",
    "sentinel",
    "custom_backend",
    "quickstart",
    "stale",
    "fastpath",
    "several_caches",
    "gc_freeze",
    "decorator",
    "test_quickstart",
    "test_store",
}


def load(name: str) -> ModuleType:
    """Import examples/<name>.py afresh (its module state is new for each test)."""
    module_name = f"cf_example_{name}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def test_every_example_is_tested() -> None:
    """Each examples/*.py has a test here."""
    assert {p.stem for p in EXAMPLES.glob("*.py")} == TESTED


def test_crud_reads_are_cached_and_writes_invalidate() -> None:
    """Reads are MISS then HIT; POST, PUT and DELETE make the next reads fresh."""
    crud = load("crud")
    with TestClient(crud.app) as client:
        assert client.get("/items/1").headers["x-cache"] == "MISS"
        assert client.get("/items/1").headers["x-cache"] == "HIT"
        assert client.get("/items").headers["x-cache"] == "MISS"
        assert client.get("/items").headers["x-cache"] == "HIT"

        assert client.put("/items/1", json={"name": "renamed"}).status_code == 200
        one = client.get("/items/1")
        assert (one.headers["x-cache"], one.json()["name"]) == ("MISS", "renamed")
        assert client.get("/items").json() == [{"id": 1, "name": "renamed"}]

        assert client.post("/items", json={"name": "second"}).json() == {"id": 2, "name": "second"}
        assert [i["name"] for i in client.get("/items").json()] == ["renamed", "second"]

        assert client.delete("/items/2").status_code == 204
        assert client.get("/items/2").status_code == 404
        assert [i["id"] for i in client.get("/items").json()] == [1]


def test_per_user_entries_are_kept_apart() -> None:
    """Each user's answer is cached for that user only, marked private."""
    per_user = load("per_user")
    with TestClient(per_user.app) as client:
        alice = {"Authorization": "Bearer alice"}
        first = client.get("/me", headers=alice)
        again = client.get("/me", headers=alice)
        bob = client.get("/me", headers={"Authorization": "Bearer bob"})
        assert (first.headers["x-cache"], again.headers["x-cache"]) == ("MISS", "HIT")
        assert again.json() == {"user": "alice"} and bob.json() == {"user": "bob"}
        assert bob.headers["x-cache"] == "MISS"
        assert "private" in again.headers["cache-control"]
        assert client.get("/me").status_code in (401, 403)  # no credentials: no answer, cached or not
    assert per_user.computed == ["alice", "bob"]


def test_sentinel_example_caches_in_redis(
    redis_sentinel: object, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With CACHEFRAME_URL naming a sentinel, entries live in the master Redis."""
    monkeypatch.setenv("CACHEFRAME_URL", redis_sentinel.url)  # type: ignore[attr-defined]
    monkeypatch.setenv("CACHEFRAME_TIMEOUT", "2")
    monkeypatch.setenv("CACHEFRAME_PREFIX", f"ex{uuid.uuid4().hex[:8]}")
    sentinel = load("sentinel")
    with TestClient(sentinel.app) as client:
        assert client.get("/prices/abc").headers["x-cache"] == "MISS"
        hit = client.get("/prices/abc")
        assert (hit.headers["x-cache"], hit.json()) == ("HIT", {"symbol": "ABC", "price": 42.0})
    assert "unreachable" not in caplog.text


def test_custom_backend_serves_and_clears() -> None:
    """The dict backend stores entries, serves hits and clears by namespace."""
    example = load("custom_backend")
    with TestClient(example.app) as client:
        assert client.get("/square/7").headers["x-cache"] == "MISS"
        hit = client.get("/square/7")
        assert (hit.headers["x-cache"], hit.json()) == ("HIT", {"n": 7, "square": 49})
        assert example.cache.backend.data  # the entry is in the custom store
        client.portal.call(example.cache.clear)  # type: ignore[union-attr]
        assert not example.cache.backend.data
        assert client.get("/square/7").headers["x-cache"] == "MISS"
    assert isinstance(example.DictBackend.from_url("dict://"), example.DictBackend)


def test_quickstart_caches_views_and_functions() -> None:
    """README's first view answers MISS then HIT; the plain function is computed once."""
    cacheframe.configure(url="memory://")
    quickstart = load("quickstart")
    with TestClient(quickstart.app) as client:
        assert client.get("/items/1?q=x").headers["x-cache"] == "MISS"
        hit = client.get("/items/1?q=x")
        assert (hit.headers["x-cache"], hit.json()) == ("HIT", {"item_id": 1, "q": "x"})
        assert "age" in hit.headers
        assert client.portal.call(quickstart.exchange_rate, "EUR") == 1.08  # type: ignore[union-attr]
        assert client.portal.call(quickstart.exchange_rate, "EUR") == 1.08  # type: ignore[union-attr]
    assert cacheframe.get_cache().stats.hits == 2


def test_crud_rfc_writes_clear_their_path_and_the_list() -> None:
    """A decorated PUT clears its own path's entries (RFC 9111 §4.4); the list by namespace."""
    cacheframe.configure(url="memory://")
    crud = load("crud_rfc")
    with TestClient(crud.app) as client:
        for path in ("/items/1", "/items"):
            assert client.get(path).headers["x-cache"] == "MISS"
            assert client.get(path).headers["x-cache"] == "HIT"
        put = client.put("/items/1", json={"name": "renamed"})
        assert put.status_code == 200 and put.headers["x-cache"] == "BYPASS"
        one = client.get("/items/1")
        assert (one.headers["x-cache"], one.json()["name"]) == ("MISS", "renamed")
        listed = client.get("/items")
        assert (listed.headers["x-cache"], listed.json()) == ("MISS", [{"id": 1, "name": "renamed"}])
        assert client.put("/items/9", json={"name": "x"}).status_code == 404  # a 4xx clears nothing
        assert client.get("/items/1").headers["x-cache"] == "HIT"


def test_crud_tags_invalidate_exactly_what_changed() -> None:
    """PUT /items/1 makes the detail of item 1 and the list misses; item 2 stays a hit; POST and
    DELETE reach the list (and the deleted item)."""
    cacheframe.configure(url="memory://")
    crud = load("crud_tags")
    with TestClient(crud.app) as client:
        for path in ("/items/1", "/items/2", "/items"):
            assert client.get(path).headers["x-cache"] == "MISS"
            assert client.get(path).headers["x-cache"] == "HIT"
        assert client.put("/items/1", json={"name": "renamed"}).status_code == 200
        one = client.get("/items/1")
        assert (one.headers["x-cache"], one.json()["name"]) == ("MISS", "renamed")
        assert client.get("/items/2").headers["x-cache"] == "HIT"
        assert client.get("/items").headers["x-cache"] == "MISS"
        assert client.put("/items/9", json={"name": "x"}).status_code == 404  # invalidates nothing
        assert client.get("/items").headers["x-cache"] == "HIT"
        assert client.post("/items", json={"name": "third"}).status_code == 201
        assert len(client.get("/items").json()) == 3
        assert client.delete("/items/2").status_code == 204
        assert client.get("/items/2").status_code == 404
        assert [i["id"] for i in client.get("/items").json()] == [1, 3]


def test_stale_entries_are_served_while_refreshing_and_on_errors() -> None:
    """After ttl, /quotes answers STALE (the old body) and /weather answers STALE when the view fails."""
    cacheframe.configure(url="memory://")
    stale = load("stale")
    with TestClient(stale.app) as client:
        assert client.get("/quotes").json() == {"version": 1}
        assert client.get("/weather").headers["x-cache"] == "MISS"
        time.sleep(1.1)  # both entries are now past their 1 s ttl
        quotes = client.get("/quotes")
        assert (quotes.headers["x-cache"], quotes.json()) == ("STALE", {"version": 1})
        stale.upstream["down"] = True
        weather = client.get("/weather")
        assert (weather.status_code, weather.headers["x-cache"]) == (200, "STALE")
        assert weather.json() == {"sky": "clear"}


def test_fastpath_answers_plain_routes_before_routing() -> None:
    """Hits on /catalog come from the middleware; /tenant-catalog's hits take the full path."""
    cacheframe.configure(url="memory://")
    example = load("fastpath")
    with TestClient(example.app) as client:
        for path in ("/catalog", "/tenant-catalog"):
            assert client.get(path).headers["x-cache"] == "MISS"
            assert client.get(path).headers["x-cache"] == "HIT"
    stats = cacheframe.get_cache().stats
    assert (stats.fast_hits, stats.hits) == (1, 2)


def test_several_caches_keep_their_own_entries() -> None:
    """Each Cache has its own prefix and counters; the Cache object's get/set/delete/clear work."""
    example = load("several_caches")
    with TestClient(example.app) as client:
        assert client.get("/").headers["x-cache"] == "MISS"
        assert client.get("/").headers["x-cache"] == "HIT"
        assert client.get("/rates").json() == {"EUR": 1.08}
        assert client.portal.call(example.billing.get, "rates") == {"EUR": 1.08}  # type: ignore[union-attr]
        assert client.post("/rates/refresh").status_code == 204
        assert client.portal.call(example.billing.get, "rates") is None  # type: ignore[union-attr]
        assert client.get("/").headers["x-cache"] == "MISS"
    assert example.pages.stats.hits == 1  # the view hit, counted on its own cache only


def test_gc_freeze_lifespan_freezes_after_startup() -> None:
    """The lifespan starts the cache, freezes the collector's objects, and the app caches."""
    cacheframe.configure(url="memory://")
    example = load("gc_freeze")
    try:
        with TestClient(example.app) as client:
            assert gc.get_freeze_count() > 0
            assert client.get("/items/3").headers["x-cache"] == "MISS"
            assert client.get("/items/3").headers["x-cache"] == "HIT"
    finally:
        gc.unfreeze()


def _pytest(*args: str) -> subprocess.CompletedProcess[str]:
    """Run pytest in a child process from the repository root, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_testing_recipe_runs_green() -> None:
    """The recipe's test module (an app's own tests) passes as written."""
    run = _pytest("examples/test_quickstart.py")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 passed" in run.stdout


def test_store_conformance_recipe_runs_with_the_url_option() -> None:
    """The conformance recipe runs the suite against --cacheframe-url, and fails without it."""
    run = _pytest("examples/test_store.py", "--cacheframe-url", "memory://")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "passed" in run.stdout and "failed" not in run.stdout
    assert _pytest("examples/test_store.py").returncode != 0


def test_decorator_options_and_order() -> None:
    """vary keys Accept-Language; @requires between route and @cache checks every request."""
    cacheframe.configure(url="memory://")
    example = load("decorator")
    with TestClient(example.app) as client:
        english = {"Accept-Language": "en"}
        assert client.get("/items?n=2", headers=english).headers["x-cache"] == "MISS"
        hit = client.get("/items?n=2", headers=english)
        assert (hit.headers["x-cache"], len(hit.json())) == ("HIT", 2)
        assert "accept-language" in hit.headers["vary"].lower()
        assert client.get("/items?n=2", headers={"Accept-Language": "fr"}).headers["x-cache"] == "MISS"

        member = {"X-Role": "member"}
        assert client.get("/members", headers=member).headers["x-cache"] == "MISS"
        assert client.get("/members", headers=member).headers["x-cache"] == "HIT"
        assert client.get("/members", headers={"X-Role": "guest"}).status_code == 403
        assert client.get("/members").status_code == 403
