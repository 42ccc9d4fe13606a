"""Key canonicalisation: deterministic, unambiguous, type-aware."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import enum
import inspect
import math
import subprocess
import sys
import uuid
from decimal import Decimal
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, PrivateAttr

from cacheframe import keys
from cacheframe.exceptions import KeyBuildError

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary()
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


def _typed(v: Any) -> Any:
    """A structure that is equal only when types are equal too (1 != True != 1.0)."""
    if isinstance(v, list | tuple):
        return (type(v).__name__, tuple(_typed(x) for x in v))
    if isinstance(v, dict):
        return ("dict", tuple(sorted(((repr(k), _typed(x)) for k, x in v.items()), key=repr)))
    return (type(v).__name__, v)


@given(values)
def test_equal_values_equal_keys(v: Any) -> None:
    """Encoding is a function of the value: the same value encodes the same way twice."""
    assert keys.canonical(v) == keys.canonical(v)


@given(values, values)
def test_distinct_values_distinct_keys(a: Any, b: Any) -> None:
    """Distinct values (including 1/True/1.0) never share an encoding."""
    if _typed(a) != _typed(b):
        assert keys.canonical(a) != keys.canonical(b)


@given(st.lists(st.text(), min_size=1, max_size=4), st.lists(st.text(), min_size=1, max_size=4))
def test_separators_cannot_collide(a: list[str], b: list[str]) -> None:
    """("a:b", "c") and ("a", "b:c") differ, whatever the separators."""
    if a != b:
        assert keys.canonical(tuple(a)) != keys.canonical(tuple(b))


def test_one_true_float_differ() -> None:
    """1, True and 1.0 are three keys."""
    assert len({keys.canonical(1), keys.canonical(True), keys.canonical(1.0)}) == 3


def test_dict_order_irrelevant() -> None:
    """Dicts with the same items in another order are one key."""
    assert keys.canonical({"a": 1, "b": 2}) == keys.canonical({"b": 2, "a": 1})


class Color(enum.Enum):
    RED = "red"


class Model(BaseModel):
    a: int
    b: list[str]


@dataclasses.dataclass
class DC:
    a: int


@pytest.mark.parametrize(
    "value",
    [
        Color.RED,
        Model(a=1, b=["x"]),
        DC(1),
        dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        dt.date(2024, 1, 1),
        dt.time(1, 2),
        dt.timedelta(seconds=5),
        uuid.UUID(int=5),
        Decimal("1.10"),
        frozenset({1, 2}),
    ],
)
def test_supported_types(value: Any) -> None:
    """Enums, models, dataclasses, datetimes, UUIDs, Decimals and sets are keyed."""
    assert keys.canonical(value) == keys.canonical(value)


def test_enum_differs_from_its_value() -> None:
    """An enum member and its raw value are different keys."""
    assert keys.canonical(Color.RED) != keys.canonical("red")


def test_unsupported_type_message() -> None:
    """An unsupported object raises with its type and the way out."""
    with pytest.raises(KeyBuildError, match="object.*exclude"):
        keys.canonical(object())


def test_function_digest_binds_signature() -> None:
    """f(1, b=2), f(1, 2) and f(a=1, b=2) (and the default) are one key."""

    def f(a: int, b: int = 2) -> None: ...

    sig = inspect.signature(f)
    d = {
        keys.function_digest(sig, a, k)
        for a, k in [((1, 2), {}), ((1,), {"b": 2}), ((), {"a": 1, "b": 2}), ((1,), {})]
    }
    assert len(d) == 1
    assert keys.function_digest(sig, (1, 3), {}) not in d


def test_digest_stable_across_processes() -> None:
    """The same call digests identically in another interpreter (no salted hash())."""
    here = keys.digest(keys.canonical(["a", 1, {"k": (1.5, None)}]))
    code = "from cacheframe import keys; print(keys.digest(keys.canonical(['a', 1, {'k': (1.5, None)}])))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == here


@given(st.text())
def test_safe_segment_alphabet(text: str) -> None:
    """Segments hold only the safe alphabet and stay short."""
    seg = keys.safe_segment(text)
    assert seg and len(seg) <= 96 + 40
    assert all(c.isascii() and (c.isalnum() or c in "._-%~") for c in seg)


@given(st.text(max_size=20), st.text(max_size=20))
def test_safe_segment_injective(a: str, b: str) -> None:
    """Distinct texts give distinct segments (escaping, not stripping)."""
    if a != b:
        assert keys.safe_segment(a) != keys.safe_segment(b)


def test_long_segment_hashed() -> None:
    """10 kB of text becomes a short hashed segment; two such texts differ."""
    a, b = keys.safe_segment("x" * 10_000), keys.safe_segment("x" * 9_999 + "y")
    assert len(a) < 100 and a != b


def _digest(headers: dict[str, list[str]], **kw: Any) -> str:
    from starlette.datastructures import Headers

    raw = [(k.encode(), v.encode()) for k, vs in headers.items() for v in vs]
    return keys.request_digest(
        method="GET", root_path="", path="/p", query_string="", headers=Headers(raw=raw), cookies={}, **kw
    )


def test_request_digest_header_boundaries() -> None:
    """Vary values cannot shift between headers (Django's ("ab","c") vs ("a","bc") collision)."""
    a = _digest({"x-a": ["ab"], "x-b": ["c"]}, vary=["x-a", "x-b"])
    b = _digest({"x-a": ["a"], "x-b": ["bc"]}, vary=["x-a", "x-b"])
    assert a != b


def test_request_digest_absent_vs_empty_header() -> None:
    """An absent vary header and an empty one are different keys."""
    assert _digest({}, vary=["x-a"]) != _digest({"x-a": [""]}, vary=["x-a"])


def test_request_digest_head_is_get_and_private_differs() -> None:
    """HEAD shares GET's key; private keys differ per Authorization."""
    from starlette.datastructures import Headers

    common = {"root_path": "", "path": "/p", "query_string": "a=1", "cookies": {}}
    get = keys.request_digest(method="GET", headers=Headers(), **common)  # type: ignore[arg-type]
    head = keys.request_digest(method="HEAD", headers=Headers(), **common)  # type: ignore[arg-type]
    assert get == head
    alice = _digest({"authorization": ["Bearer a"]}, private=True)
    bob = _digest({"authorization": ["Bearer b"]}, private=True)
    assert alice != bob != _digest({}, private=True)


def test_request_digest_private_keys_scheme_credentials() -> None:
    """private keys each scheme's credential header and query values, also under a custom key."""
    from starlette.datastructures import Headers

    def key(headers: dict[str, str], query: str) -> str:
        return keys.request_digest(
            method="GET",
            root_path="",
            path="/p",
            query_string=query,
            headers=Headers(headers),
            cookies={},
            private=True,
            custom=b"same",
            credential_headers=("x-api-key",),
            credential_query=("api_key",),
        )

    assert key({"x-api-key": "alice"}, "") != key({"x-api-key": "bob"}, "")
    assert key({}, "api_key=alice") != key({}, "api_key=bob") != key({}, "")
    assert key({}, "api_key=a%20b") == key({}, "api_key=a+b")  # decoded as Starlette decodes it
    assert key({}, "other=1") == key({}, "other=2")  # the custom key replaced the rest of the URL


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")
    a: int


class WithPrivate(BaseModel):
    a: int
    _mode: str = PrivateAttr("fast")


class Defaulted(BaseModel):
    a: int = 1


class Name(str):
    pass


class Pair(NamedTuple):
    x: int
    y: int


def test_model_extras_are_keyed() -> None:
    """Two extra="allow" models differing only in their extras get different keys."""
    assert keys.canonical(Open(a=1, role="admin")) != keys.canonical(Open(a=1, role="guest"))
    assert keys.canonical(Open(a=1, role="admin")) != keys.canonical(Open(a=1))
    assert keys.canonical(Open(a=1, role="admin")) == keys.canonical(Open(a=1, role="admin"))


def test_model_private_state_and_set_fields_are_keyed() -> None:
    """Private attributes and which fields were set (exclude_unset sees it) are keyed."""
    slow = WithPrivate(a=1)
    slow._mode = "slow"
    assert keys.canonical(WithPrivate(a=1)) != keys.canonical(slow)
    assert keys.canonical(Defaulted()) != keys.canonical(Defaulted(a=1))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (Name("x"), "x"),
        (Pair(1, 2), (1, 2)),
        (frozenset({1}), {1}),
        (bytearray(b"x"), b"x"),
        (collections.OrderedDict(a=1), {"a": 1}),
        (0.0, -0.0),
        (
            dt.datetime(2024, 1, 1, tzinfo=ZoneInfo("Europe/Paris")),
            dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        ),
        (dt.datetime(2024, 1, 1, 2, 30), dt.datetime(2024, 1, 1, 2, 30, fold=1)),
        (dt.time(1, tzinfo=ZoneInfo("Europe/Paris")), dt.time(1, tzinfo=ZoneInfo("Europe/Berlin"))),
    ],
    ids=[
        "str-subclass",
        "namedtuple",
        "frozenset",
        "bytearray",
        "ordereddict",
        "zero-sign",
        "zone",
        "fold",
        "time-zone",
    ],
)
def test_arguments_that_compare_equal_but_differ_are_keyed_apart(a: Any, b: Any) -> None:
    """Values a function can tell apart (type, zone, fold, sign) never share a key, though == may hold."""
    assert keys.canonical(a) != keys.canonical(b)


def test_nan_is_one_key() -> None:
    """Every NaN is the same argument (deliberately): a function cannot tell them apart by value."""
    assert keys.canonical(float("nan")) == keys.canonical(float("-nan")) == keys.canonical(math.nan)


def _factory(rate: int) -> Any:
    def scaled(x: int) -> int:
        return x * rate

    return scaled


def _branches(kind: str) -> Any:
    if kind == "a":

        def f(x: int) -> int:
            return x + 1

    else:

        def f(x: int) -> int:
            return x + 2

    return f


def test_local_functions_get_distinct_identities() -> None:
    """Closures of one factory, same-named local functions and same-line lambdas never share an identity."""
    two, three = keys.function_identity(_factory(2)), keys.function_identity(_factory(3))
    assert two[0] != three[0] and two[1] and three[1]
    assert keys.function_identity(_factory(2)) == two  # the same closure values: the same identity
    assert keys.function_identity(_branches("a"))[0] != keys.function_identity(_branches("b"))[0]
    first, second = (lambda x: x + 1), (lambda x: x + 2)
    assert keys.function_identity(first)[0] != keys.function_identity(second)[0]
    assert keys.function_identity(test_nan_is_one_key) == (f"{__name__}.test_nan_is_one_key", True)


def test_local_function_with_unkeyable_closure_is_per_process() -> None:
    """A closure over an unkeyable object gets a random token: never shared, flagged as per-process."""
    lock = object()

    def locked(x: int) -> int:
        return x if lock else 0

    one, other = keys.function_identity(locked), keys.function_identity(locked)
    assert one[0] != other[0] and not one[1]
    named = keys.function_identity(locked, named=True)  # an explicit namespace names it
    assert named == keys.function_identity(locked, named=True) and named[1]


def test_local_function_identity_stable_across_processes() -> None:
    """A factory's closure has the same identity in every process (entries are shared), per closure value."""
    code = (
        "from cacheframe import keys\n"
        "def make(rate):\n"
        "    def scaled(x):\n"
        "        return x * rate\n"
        "    return scaled\n"
        "print(keys.function_identity(make(2))[0], keys.function_identity(make(3))[0])\n"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True) for _ in "ab"
    ]
    assert runs[0].stdout == runs[1].stdout
    two, three = runs[0].stdout.split()
    assert two != three and two.startswith("__main__.make.<locals>.scaled@")


def test_local_function_with_cyclic_closure_is_per_process() -> None:
    """A closure over a self-referencing list (RecursionError when keyed) is per-process, never an error."""
    loop: list[Any] = []
    loop.append(loop)

    def cyclic() -> int:
        return len(loop)

    assert not keys.function_identity(cyclic)[1]


def test_unkeyable_private_attribute_names_itself() -> None:
    """A model whose private attribute cannot be keyed raises KeyBuildError saying where it is."""
    holder = WithPrivate(a=1)
    holder._mode = object()  # type: ignore[assignment]
    with pytest.raises(KeyBuildError, match=r"argument \(private attribute\)\['_mode'\]"):
        keys.canonical(holder)


def test_main_module_functions_include_their_code() -> None:
    """Two scripts' top-level functions of one name (module __main__) get different identities."""
    code = "from cacheframe import keys\ndef fetch(x):\n    return x {}\n"
    code += "print(keys.function_identity(fetch)[0])\n"
    plus, minus = (
        subprocess.run(
            [sys.executable, "-c", code.format(op)], capture_output=True, text=True, check=True
        ).stdout
        for op in ("+ 1", "- 1")
    )
    assert plus != minus and plus.startswith("__main__.fetch@")


def test_uri_segment_separates_paths_and_root_paths() -> None:
    """A view key's path segment: one per (root path, path), length-prefixed, ending in ':'."""
    seg = keys.uri_segment("", "/items/1")
    assert seg.endswith(":") and ":" not in seg[:-1] and seg == keys.uri_segment("", "/items/1")
    others = {
        keys.uri_segment("", "/items/2"),
        keys.uri_segment("/items", "/1"),
        keys.uri_segment("/items/1", ""),
    }
    assert seg not in others and len(others) == 3
