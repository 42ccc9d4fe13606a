"""Key canonicalisation: deterministic, unambiguous, type-aware."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import inspect
import subprocess
import sys
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

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


def test_query_normalisation() -> None:
    """Parameters sort by name; repeated values keep their order."""
    assert keys.normalize_query("b=2&a=1") == keys.normalize_query("a=1&b=2")
    assert keys.normalize_query("a=2&a=1") != keys.normalize_query("a=1&a=2")
    assert keys.normalize_query("a;b=1") == [("a;b", "1")]  # no ';' parameter cloaking


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


@given(st.text(alphabet=st.characters(blacklist_characters="%+", codec="utf-8"), max_size=40))
def test_query_fast_split_matches_parse_qsl(query: str) -> None:
    """The undecoded fast split gives exactly what parse_qsl gives."""
    from urllib.parse import parse_qsl

    assert keys.normalize_query(query) == sorted(parse_qsl(query, keep_blank_values=True), key=lambda p: p[0])


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
