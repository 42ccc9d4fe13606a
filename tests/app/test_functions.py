"""@cache on plain async and sync functions (not views), on every backend."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import inspect
import threading
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, SecretStr, computed_field

import cacheframe
from cacheframe import KeyBuildError, keys

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


class WithSecret(BaseModel):
    user: str
    password: SecretStr


class WithExcluded(BaseModel):
    a: int
    internal: str = Field("default", exclude=True)


class WithExtras(BaseModel):
    model_config = ConfigDict(extra="allow")
    a: int


class WithComputed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def double(self) -> int:
        return 2 * self.a


class Measured(BaseModel):
    value: float


@dataclasses.dataclass
class Derived:
    a: int
    b: int = dataclasses.field(init=False)
    note: str = dataclasses.field(default="n", compare=False)

    def __post_init__(self) -> None:
        self.b = self.a + 1


class Plain:
    def __init__(self, a: int) -> None:
        self.a = a

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plain) and other.a == self.a

    __hash__ = None  # type: ignore[assignment]


# (name, the value the function returns, its return annotation)
EXACTNESS_CASES: list[tuple[str, Any, Any]] = [
    ("secret", WithSecret(user="ann", password=SecretStr("hunter2")), WithSecret),
    ("excluded-field", WithExcluded(a=1, internal="set"), WithExcluded),
    ("extras", WithExtras(a=1, b=[1, 2], c={"x": "y"}), WithExtras),
    ("computed", WithComputed(a=2), WithComputed),
    ("dataclass-init-false", Derived(1, note="kept"), Derived),
    ("model-under-any", WithExtras(a=1), Any),
    ("mixed-set", {1, "a", (2, 3)}, Any),
    ("bytes", b"\x00\xff", bytes),
    ("custom-class", Plain(1), Plain),
    ("nan", float("nan"), float),
    ("int-for-float", 1, float),
    ("tuple-under-any", (1, 2), Any),
    ("dict-int-keys", {1: "a"}, dict[int, str]),
    ("decimal-under-any", Decimal("1.10"), Any),
    ("unvalidated-model-field", Measured.model_construct(value=1), Measured),
]


def _exactly(got: Any, expected: Any) -> bool:
    if isinstance(expected, float) and expected != expected:
        return isinstance(got, float) and got != got
    if isinstance(expected, Derived):
        return type(got) is Derived and (got.a, got.b, got.note) == (expected.a, expected.b, expected.note)
    if isinstance(expected, Measured):
        return type(got) is Measured and type(got.value) is type(expected.value) and got == expected
    if isinstance(expected, WithSecret):
        return type(got) is WithSecret and got.password.get_secret_value() == "hunter2" and got == expected
    return type(got) is type(expected) and got == expected


@pytest.mark.parametrize(
    ("value", "hint"), [c[1:] for c in EXACTNESS_CASES], ids=[c[0] for c in EXACTNESS_CASES]
)
async def test_values_come_back_exactly_or_are_not_cached(
    value: Any, hint: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Every call returns exactly what the function returned; a value JSON would change is not cached."""
    runs: list[int] = []

    async def source() -> Any:
        runs.append(1)
        return value

    source.__annotations__["return"] = hint
    cached = cacheframe.cache(ttl=60)(source)
    for _ in range(3):
        assert _exactly(await cached(), value)
    warnings = [r for r in caplog.records if "returned uncached" in r.getMessage()]
    if len(runs) == 1:  # cached: it round-trips exactly
        assert not warnings
    else:
        assert len(runs) == 3
        assert len(warnings) == 1
        message = warnings[0].getMessage()
        assert "serializer='json'" in message and "serializer='pickle'" in message
        assert "hunter2" not in message


def test_sync_values_come_back_exactly_or_are_not_cached() -> None:
    """A sync function's excluded field and secret come back exactly (not as a default or a mask)."""
    runs: list[int] = []

    @cacheframe.cache(ttl=60)
    def secret() -> WithSecret:
        runs.append(1)
        return WithSecret(user="ann", password=SecretStr("hunter2"))

    @cacheframe.cache(ttl=60)
    def excluded() -> WithExcluded:
        runs.append(2)
        return WithExcluded(a=1, internal="set")

    for _ in range(2):
        assert secret().password.get_secret_value() == "hunter2"
        assert excluded().internal == "set"
    assert runs == [1, 2, 1, 2]


async def test_pickle_serializer_caches_what_json_cannot(app_cache: cacheframe.Cache) -> None:
    """serializer="pickle" (with CACHEFRAME_SECRET) caches secrets and excluded fields exactly."""
    cacheframe.configure(
        url=app_cache.settings.url, prefix=app_cache.settings.prefix, secret="s" * 32, timeout=5.0
    )
    runs: list[int] = []

    @cacheframe.cache(ttl=60, serializer="pickle")
    async def exact(i: int) -> Any:
        runs.append(i)
        return (
            WithSecret(user="ann", password=SecretStr("hunter2")),
            WithExcluded(a=i, internal="set"),
            {1, "a"},
        )

    for _ in range(2):
        got = await exact(1)
        assert got[0].password.get_secret_value() == "hunter2" and got[1].internal == "set"
        assert got[2] == {1, "a"}
    assert runs == [1]


class Query(BaseModel):
    model_config = ConfigDict(extra="allow")
    q: str


async def test_model_extras_are_keyed() -> None:
    """Two extra="allow" arguments differing only in their extras never share an entry."""

    @cacheframe.cache(ttl=60)
    async def role(query: Query) -> str:
        return str((query.model_extra or {}).get("role"))

    assert await role(Query(q="x", role="admin")) == "admin"
    assert await role(Query(q="x", role="guest")) == "guest"
    assert await role(Query(q="x")) == "None"
    assert await role(Query(q="x", role="admin")) == "admin"


def _rate_function(rate: int) -> Any:
    @cacheframe.cache(ttl=60)
    async def convert(amount: int) -> int:
        return amount * rate

    return convert


async def test_factory_closures_never_share_entries() -> None:
    """Functions made by one factory (same qualname, other closure values) keep their own entries."""
    double, triple = _rate_function(2), _rate_function(3)
    assert await double(10) == 20
    assert await triple(10) == 30
    assert await double(10) == 20
    again = _rate_function(2)  # the same closure values: the same function, shared entries
    assert await again(10) == 20
    assert cacheframe.get_cache().stats.hits >= 2


def _by_kind(kind: str) -> Any:
    if kind == "plus":

        @cacheframe.cache(ttl=60)
        async def f(x: int) -> int:
            return x + 1

    else:

        @cacheframe.cache(ttl=60)
        async def f(x: int) -> int:
            return x - 1

    return f


async def test_same_named_local_functions_never_share_entries() -> None:
    """Two local functions of one qualname (other code, empty closures) keep their own entries."""
    assert await _by_kind("plus")(1) == 2
    assert await _by_kind("minus")(1) == 0
    assert await _by_kind("plus")(1) == 2


def test_same_line_lambdas_never_share_entries() -> None:
    """Two lambdas of one module share a qualname (<lambda>) but never entries."""
    inc, dec = cacheframe.cache(ttl=60)(lambda x: x + 1), cacheframe.cache(ttl=60)(lambda x: x - 1)
    assert inc(1) == 2 and dec(1) == 0 and inc(1) == 2


async def test_unkeyable_closure_is_per_process(caplog: pytest.LogCaptureFixture) -> None:
    """A closure over an unkeyable object is cached apart from every other function, with one warning."""

    def make(tag: object, sign: int) -> Any:
        @cacheframe.cache(ttl=60)
        async def signed(x: int) -> int:
            assert tag is not None
            return sign * x

        return signed

    plus, minus = make(object(), 1), make(object(), -1)
    assert await plus(5) == 5 and await minus(5) == -5 and await plus(5) == 5
    assert sum("kept apart per process" in r.getMessage() for r in caplog.records) == 2  # one per function


async def test_signed_pickle_entry_moved_to_another_key_is_refused(app_cache: cacheframe.Cache) -> None:
    """A signed pickle entry copied under another function's key is refused (a miss), not returned."""
    settings = app_cache.settings
    cache = cacheframe.configure(url=settings.url, prefix=settings.prefix, secret="s" * 32, timeout=5.0)
    runs: list[str] = []

    @cacheframe.cache(ttl=60, serializer="pickle", namespace="roles")
    async def role(user: str) -> str:
        runs.append(user)
        return "admin" if user == "alice" else "guest"

    assert await role("alice") == "admin"
    assert await role("bob") == "guest"
    bound = role.__cacheframe__.bind(role.__wrapped__)  # type: ignore[attr-defined]
    sig = inspect.signature(role.__wrapped__)  # type: ignore[attr-defined]
    place = bound.engine.stamps.place  # the store key (in its stamp bucket on a cluster)
    alice = place(bound.namespace + keys.function_digest(sig, ("alice",), {}, (), bound.identity))
    bob = place(bound.namespace + keys.function_digest(sig, ("bob",), {}, (), bound.identity))
    await cache.backend.set(bob, await cache.backend.get(alice), 60)  # type: ignore[arg-type]
    assert await role("bob") == "guest"
    # Refused twice over: its seal names alice's call (a miss), and its MAC names alice's key.
    assert runs == ["alice", "bob", "bob"]


def _named_rate_function(rate: int) -> Any:
    @cacheframe.cache(ttl=60, namespace="rates")
    async def convert(amount: int) -> int:
        return amount * rate

    return convert


async def test_explicit_namespace_still_keys_closure_values() -> None:
    """Factory products sharing an explicit namespace still keep apart when their closures differ."""
    assert await _named_rate_function(2)(10) == 20
    assert await _named_rate_function(3)(10) == 30
    assert await _named_rate_function(2)(10) == 20


async def test_unpicklable_value_is_returned_uncached(app_cache: cacheframe.Cache) -> None:
    """A value pickle cannot encode (a local function inside) is returned, not raised, and not cached."""
    settings = app_cache.settings
    cacheframe.configure(url=settings.url, prefix=settings.prefix, secret="s" * 32, timeout=5.0)
    runs: list[int] = []

    @cacheframe.cache(ttl=60, serializer="pickle")
    async def with_callback(x: int) -> Any:
        runs.append(x)
        return {"x": x, "callback": lambda: x}

    assert (await with_callback(1))["callback"]() == 1
    assert (await with_callback(1))["callback"]() == 1
    assert runs == [1, 1]
