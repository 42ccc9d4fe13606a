"""Every app in examples/ runs and does what its docstring says."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.testclient import TestClient

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TESTED = {"crud", "per_user", "sentinel", "custom_backend"}


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
