"""@cache on plain async and sync functions (not views), on every backend."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
from typing import Any

import pytest
from pydantic import BaseModel

import cacheframe
from cacheframe import KeyBuildError

pytestmark = pytest.mark.usefixtures("app_cache")


class Point(BaseModel):
    x: int
    y: int


@dataclasses.dataclass
class Box:
    w: int
    when: dt.datetime


async def test_async_function_cached_by_arguments() -> None:
    """Equal calls hit (f(1, b=2) == f(1, 2)); other arguments miss."""
    seen: list[tuple[int, int]] = []

    @cacheframe.cache(ttl=60)
    async def add(a: int, b: int = 0) -> int:
        seen.append((a, b))
        return a + b

    assert await add(1, 2) == 3
    assert await add(1, b=2) == 3
    assert await add(a=1, b=2) == 3
    assert await add(2, 2) == 4
    assert seen == [(1, 2), (2, 2)]


async def test_types_are_distinct_arguments() -> None:
    """1, True and 1.0 are different keys."""
    seen: list[Any] = []

    @cacheframe.cache(ttl=60)
    async def ident(v: Any) -> str:
        seen.append(v)
        return repr(v)

    assert [await ident(v) for v in (1, True, 1.0, 1, True)] == ["1", "True", "1.0", "1", "True"]
    assert len(seen) == 3


async def test_none_is_cached() -> None:
    """A function returning None is cached like any value."""
    seen: list[int] = []

    @cacheframe.cache(ttl=60)
    async def nothing(x: int) -> None:
        seen.append(x)

    assert await nothing(1) is None and await nothing(1) is None
    assert seen == [1]


async def test_pydantic_and_dataclass_values_round_trip() -> None:
    """The return annotation rebuilds pydantic models and dataclasses from JSON."""
    when = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)

    @cacheframe.cache(ttl=60)
    async def model(x: int) -> Point:
        return Point(x=x, y=2)

    @cacheframe.cache(ttl=60)
    async def boxes(w: int) -> list[Box]:
        return [Box(w=w, when=when)]

    assert await model(1) == await model(1) == Point(x=1, y=2)
    assert isinstance(await model(1), Point)
    assert await boxes(3) == await boxes(3) == [Box(w=3, when=when)]


def test_sync_function_stays_sync() -> None:
    """A def function stays sync for its caller and is cached."""
    seen: list[int] = []

    @cacheframe.cache(ttl=60)
    def square(x: int) -> int:
        seen.append(x)
        return x * x

    assert square(3) == 9 and square(3) == 9 and square(x=3) == 9
    assert seen == [3]


async def test_sync_function_called_inside_running_loop() -> None:
    """Calling a cached def function from a thread running an event loop does not deadlock."""

    @cacheframe.cache(ttl=60)
    def double(x: int) -> int:
        return 2 * x

    assert double(4) == 8  # the loop of this test is running in this thread
    assert double(4) == 8


def test_sync_function_from_many_threads() -> None:
    """Concurrent threads calling a cached def function get their own results."""

    @cacheframe.cache(ttl=60)
    def neg(x: int) -> int:
        return -x

    results: dict[int, int] = {}

    def work(i: int) -> None:
        results[i] = neg(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: -i for i in range(20)}


async def test_unsupported_argument_names_parameter() -> None:
    """An unkeyable argument raises KeyBuildError naming the parameter and the fixes."""

    @cacheframe.cache(ttl=60)
    async def use(conn: object, x: int) -> int:
        return x

    with pytest.raises(KeyBuildError, match=r"parameter 'conn'.*exclude=.*key_builder"):
        await use(object(), 1)


async def test_exclude_parameter() -> None:
    """exclude=[...] leaves a parameter out of the key."""
    seen: list[int] = []

    @cacheframe.cache(ttl=60, exclude=["conn"])
    async def use(conn: object, x: int) -> int:
        seen.append(x)
        return x

    assert await use(object(), 1) == await use(object(), 1) == 1
    assert seen == [1]


async def test_custom_key_builder() -> None:
    """key_builder(func, request, args, kwargs) replaces the key; may be async."""
    seen: list[str] = []

    async def by_lower(func: Any, request: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        assert request is None
        return str(args[0]).lower()

    @cacheframe.cache(ttl=60, key_builder=by_lower)
    async def greet(name: str) -> str:
        seen.append(name)
        return f"hi {name}"

    assert await greet("Ann") == await greet("ANN") == "hi Ann"
    assert seen == ["Ann"]


async def test_configure_rebinds_decorated_functions() -> None:
    """Functions decorated before configure() use the new default from then on."""

    @cacheframe.cache(ttl=60)
    async def val(x: int) -> int:
        return x

    await val(1)
    first = cacheframe.get_cache()
    second = cacheframe.configure(url="memory://", prefix="other")
    assert first is not second
    await val(1)
    assert second.stats.misses == 1 and first.stats.misses == 1


async def test_disabled_runs_function() -> None:
    """enabled=False runs the function each time."""
    cacheframe.configure(url="memory://", enabled=False)
    seen: list[int] = []

    @cacheframe.cache(ttl=60)
    async def f(x: int) -> int:
        seen.append(x)
        return x

    await f(1)
    await f(1)
    assert seen == [1, 1]


async def test_concurrent_calls_keep_values_apart() -> None:
    """Many concurrent calls with distinct arguments each get their own value."""

    @cacheframe.cache(ttl=60)
    async def echo(i: int) -> int:
        await asyncio.sleep(0)
        return i

    assert await asyncio.gather(*(echo(i) for i in range(100))) == list(range(100))
    assert await asyncio.gather(*(echo(i) for i in range(100))) == list(range(100))


async def test_shared_namespace_keeps_functions_apart() -> None:
    """Two functions given the same namespace never share entries (the qualified name is keyed)."""

    @cacheframe.cache(ttl=60, namespace="users")
    async def user_name(uid: int) -> str:
        return f"name-{uid}"

    @cacheframe.cache(ttl=60, namespace="users")
    async def user_email(uid: int) -> str:
        return f"email-{uid}"

    assert await user_name(1) == "name-1"
    assert await user_email(1) == "email-1"
    assert await user_email(1) == "email-1"


async def test_helper_given_a_request_is_not_a_view() -> None:
    """A cached helper called with request=... is keyed as a function (Request must be excluded)."""
    from starlette.requests import Request

    @cacheframe.cache(ttl=60, exclude=["request"])
    async def helper(request: Request, x: int) -> dict[str, int]:
        return {"x": x}

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    assert await helper(request=Request(scope), x=1) == {"x": 1}
    assert await helper(request=Request(scope), x=1) == {"x": 1}

    @cacheframe.cache(ttl=60)
    async def careless(request: Request) -> int:
        return 1

    with pytest.raises(KeyBuildError, match="parameter 'request' of type starlette.requests.Request"):
        await careless(request=Request(scope))


async def test_loose_value_comes_back_exactly_uncached(caplog: pytest.LogCaptureFixture) -> None:
    """A value JSON would change (datetime, tuple under -> Any) is returned as is, uncached, warned once."""
    when = dt.datetime(2024, 1, 1)
    runs: list[int] = []

    @cacheframe.cache(ttl=60)
    async def loose() -> Any:
        runs.append(1)
        return {"at": when, "pair": (1, 2)}

    for _ in range(3):
        value = await loose()
        assert value == {"at": when, "pair": (1, 2)} and isinstance(value["pair"], tuple)
    assert len(runs) == 3
    warnings = [r for r in caplog.records if "returned uncached" in r.getMessage()]
    assert len(warnings) == 1 and "serializer='pickle'" in warnings[0].getMessage()


async def test_decorator_serializer_option() -> None:
    """@cache(serializer="pickle") keeps exact Python types (signed with the configured secret)."""
    cacheframe.configure(url="memory://", secret="s" * 32)
    when = dt.datetime(2024, 1, 1)

    @cacheframe.cache(ttl=60, serializer="pickle")
    async def exact() -> Any:
        return {"at": when, "pair": (1, 2)}

    assert await exact() == await exact() == {"at": when, "pair": (1, 2)}
    assert isinstance((await exact())["pair"], tuple)


async def test_cache_instance_decorator() -> None:
    """Cache(...).cache(...) binds the decorator to that instance, not the default."""
    own = cacheframe.Cache(url="memory://", prefix="own")
    runs: list[int] = []

    @own.cache(ttl=60)
    async def f(x: int) -> int:
        runs.append(x)
        return x

    assert await f(1) == await f(1) == 1
    assert runs == [1] and own.stats.hits == 1
    assert cacheframe.get_cache().stats.hits == 0
