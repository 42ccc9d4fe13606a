"""Testing an app that uses cacheframe: the quick-start app's own tests, as a user writes them.

Run: ``pytest examples/test_quickstart.py`` (tests/test_examples.py runs it).
Each test gets a fresh default cache in the process, so no test sees another's
entries; one test turns caching off to check the view itself.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from examples.quickstart import app, exchange_rate
from fastapi.testclient import TestClient

import cacheframe


# --8<-- [start:fixtures]
@pytest.fixture
def client() -> Iterator[TestClient]:
    cacheframe.configure(url="memory://")  # a new, empty default cache for this test
    with TestClient(app) as client:  # runs the lifespan: startup checks included
        yield client


def test_second_read_is_a_hit(client: TestClient) -> None:
    assert client.get("/items/1").headers["x-cache"] == "MISS"
    hit = client.get("/items/1")
    assert (hit.headers["x-cache"], hit.json()) == ("HIT", {"item_id": 1, "q": None})


def test_view_without_the_cache(client: TestClient) -> None:
    cacheframe.configure(url="memory://", enabled=False)  # every request runs the view
    assert client.get("/items/2").headers["x-cache"] == "BYPASS"


async def test_plain_function_is_cached() -> None:
    cache = cacheframe.configure(url="memory://")
    assert await exchange_rate("EUR") == 1.08
    assert await exchange_rate("EUR") == 1.08
    assert cache.stats.hits == 1


# --8<-- [end:fixtures]
