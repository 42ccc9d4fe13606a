"""Real uses of the public API, as a user's code writes them; checked by mypy (``nox -s typecheck``).

Each ``assert_type`` pins what a user's type checker sees; each ``type: ignore[code]`` pins an
error it must report (mypy's ``warn_unused_ignores`` fails the run if the error goes away).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, assert_type

from fastapi import FastAPI, Request, Response

import cacheframe
from cacheframe import (
    BackendError,
    Cache,
    CacheframeError,
    CacheSettings,
    CacheStats,
    ConfigurationError,
    cache,
    configure,
    fastpath,
    get_cache,
    invalidates,
    lifespan,
)

app = FastAPI(lifespan=lifespan)


@app.get("/items/{item_id}")
@cache(ttl=60)
async def read_item(item_id: int, q: str | None = None) -> dict[str, Any]:
    return {"item_id": item_id, "q": q}


@app.get("/report")
@cache(ttl=timedelta(minutes=5), vary=["Accept-Language"], stale_while_revalidate=30, stale_if_error=300)
def report(request: Request, response: Response) -> dict[str, str]:
    response.headers["x-report"] = "1"
    return {"path": request.url.path}


@app.put("/items/{item_id}")
@invalidates(read_item, tags=["item:{item_id}"])
async def update_item(item_id: int) -> dict[str, int]:
    return {"item_id": item_id}


@cache(ttl=300, namespace="rates", xfetch_beta=1.0, tags=["rate:{currency}"])
async def fetch_rate(currency: str) -> float:
    return 1.0


@cache(ttl=10, exclude=["verbose"])
def square(n: int, verbose: bool = False) -> int:
    return n * n


my_cache = Cache("memory://", prefix="app", default_ttl=30)
other_app = FastAPI(lifespan=my_cache.lifespan)
fastpath.install(other_app)


@cache(ttl=60, result_tags=lambda rows: [f"item:{row}" for row in rows])
async def listing() -> list[int]:
    cacheframe.tag("items")
    return [1, 2]


@my_cache.cache(ttl=1, private=True, serializer="json")
async def profile(user_id: int) -> dict[str, int]:
    return {"user_id": user_id}


async def use() -> None:
    """The decorated functions keep their signatures; the KV API is typed."""
    assert_type(await fetch_rate("EUR"), float)
    assert_type(square(3), int)
    assert_type(await profile(1), dict[str, int])
    assert_type(await read_item(1), dict[str, Any])
    await fetch_rate(1)  # type: ignore[arg-type]
    square("3")  # type: ignore[arg-type]

    assert_type(await my_cache.set("k", {"a": 1}, ttl=5), bool)
    assert_type(await my_cache.set("k", [1], ttl=timedelta(seconds=5), namespace="ns"), bool)
    value: Any = await my_cache.get("k", default=None)
    assert_type(await my_cache.delete("k"), bool)
    await my_cache.invalidate_tags("item:3", "items", soft=True)
    await fetch_rate.invalidate("EUR")
    square.invalidate(3)
    await read_item.invalidate(item_id=3)
    await my_cache.clear()
    await my_cache.clear("rates")
    stats: CacheStats = my_cache.stats
    assert_type(stats.hits, int)
    assert_type(stats.as_dict(), dict[str, int])
    settings: CacheSettings = my_cache.settings
    assert_type(settings.default_ttl, float)
    await my_cache.close()
    del value


def configure_and_errors() -> None:
    """The process default and the exception tree."""
    assert_type(configure("memory://", prefix="p"), Cache)
    assert_type(get_cache(), Cache)
    assert_type(cacheframe.get_cache().stats, CacheStats)
    try:
        Cache("nope://")
    except ConfigurationError as exc:
        assert_type(exc, ConfigurationError)
    except BackendError:
        pass
    except CacheframeError:
        pass
