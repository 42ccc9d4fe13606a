"""Serialisers: JSON round trips; signed pickle refuses anything not signed by our key."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import os
import pickle
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, computed_field

from cacheframe import Cache, ConfigurationError
from cacheframe.exceptions import EntryError
from cacheframe.serializers import JsonSerializer, PickleSerializer, dumps_for, loads_for
from cacheframe.types import SupportsKeyedEntries

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=10,
)


class M(BaseModel):
    a: int
    when: dt.datetime


@dataclasses.dataclass
class D:
    a: int
    tags: list[str]


@given(json_values)
def test_json_round_trip(value: Any) -> None:
    """JSON-native values round-trip exactly."""
    s = JsonSerializer()
    assert s.loads(s.dumps(value)) == value


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        (M(a=1, when=dt.datetime(2024, 1, 1, tzinfo=dt.UTC)), M),
        (D(1, ["x"]), D),
        (dt.datetime(2024, 1, 1, 3, tzinfo=dt.UTC), dt.datetime),
        (uuid.UUID(int=7), uuid.UUID),
        (Decimal("1.25"), Decimal),
        ([M(a=2, when=dt.datetime(2024, 1, 2, tzinfo=dt.UTC))], list[M]),
    ],
)
def test_json_rebuilds_types(value: Any, hint: Any) -> None:
    """With the return type, models, dataclasses, datetimes, UUIDs and Decimals come back."""
    s = JsonSerializer()
    assert s.loads(s.dumps(value), hint) == value


def test_json_bad_data_is_entry_error() -> None:
    """Undecodable or mistyped JSON raises EntryError (a miss), not a crash."""
    s = JsonSerializer()
    with pytest.raises(EntryError):
        s.loads(b"{nope")
    with pytest.raises(EntryError):
        s.loads(b'"x"', int)


def test_pickle_requires_secret() -> None:
    """Selecting pickle without a secret is a configuration error."""
    with pytest.raises(ConfigurationError, match="CACHEFRAME_SECRET"):
        Cache(url="memory://", serializer="pickle")


@given(json_values)
def test_pickle_round_trip(value: Any) -> None:
    """Signed pickle round-trips."""
    s = PickleSerializer(secret=b"k" * 32)
    assert s.loads(s.dumps(value)) == value


class _Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_malicious_pickle_never_runs(tmp_path: Path) -> None:
    """An unsigned, forged or foreign-key pickle is refused before unpickling: no file appears."""
    target = tmp_path / "pwned"
    evil = pickle.dumps(_Exploit(str(target)))
    s = PickleSerializer(secret=b"right-key" * 4)
    forged_other_key = hmac.new(b"wrong-key", b"cacheframe-pickle-v2\x000:" + evil, "sha256").digest() + evil
    downgrade = hashlib.md5(evil).digest() + evil  # a weaker 'signature' of another algorithm
    for data in (evil, b"\x00" * 32 + evil, forged_other_key, downgrade, b"", b"short"):
        with pytest.raises(EntryError):
            s.loads(data)
    assert not target.exists()


async def test_malicious_pickle_in_store_is_a_miss(tmp_path: Path) -> None:
    """A malicious pickle written into the store under a real key is a miss; the file never appears."""
    from cacheframe import envelope

    target = tmp_path / "pwned"
    cache = Cache(url="memory://", serializer="pickle", secret=os.urandom(16).hex())
    await cache.set("k", 1)
    evil = pickle.dumps(_Exploit(str(target)))
    entry = envelope.ValueEntry("pickle", b"\x01" * 32 + evil, 0, 1e12)
    await cache.backend.set(cache._engine.key("kv", "k"), envelope.encode(entry), 60)
    assert await cache.get("k", "default") == "default"
    assert not target.exists()
    assert cache.stats.bad_entries == 1


def test_pickle_mac_covers_the_key() -> None:
    """A value signed for one store key is refused under another, and under no key."""
    s = PickleSerializer(secret=b"k" * 32)
    data = s.dumps_keyed({"role": "admin"}, "p:ns:alice")
    assert s.loads_keyed(data, "p:ns:alice") == {"role": "admin"}
    for other in ("p:ns:bob", "p:ns:alic", "p:ns:alice ", ""):
        with pytest.raises(EntryError, match="signature"):
            s.loads_keyed(data, other)
    with pytest.raises(EntryError):
        s.loads(data)
    assert isinstance(s, SupportsKeyedEntries)


async def test_kv_entry_copied_to_another_key_is_refused() -> None:
    """Cache.get refuses a signed pickle entry copied from another key (the KV API binds keys too)."""
    cache = Cache(url="memory://", serializer="pickle", secret=os.urandom(16).hex())
    await cache.set("alice", "admin")
    raw = await cache.backend.get(cache._engine.key("kv", "alice"))
    assert raw is not None
    await cache.backend.set(cache._engine.key("kv", "bob"), raw, 60)
    assert await cache.get("alice") == "admin"
    assert await cache.get("bob", "default") == "default"
    assert cache.stats.bad_entries == 1


class _Plugin:
    """A third-party serialiser with only the base protocol (no key binding)."""

    name = "json"

    def dumps(self, value: Any) -> bytes:
        return JsonSerializer().dumps(value)

    def loads(self, data: bytes, type_hint: Any = Any) -> Any:
        return JsonSerializer().loads(data, type_hint)


def test_serializers_without_key_binding_still_work() -> None:
    """dumps_for/loads_for fall back to dumps/loads for serialisers without SupportsKeyedEntries."""
    plugin = _Plugin()
    assert not isinstance(plugin, SupportsKeyedEntries)
    assert loads_for(plugin, dumps_for(plugin, [1, "a"], "k"), "other") == [1, "a"]


def test_json_dumps_models_so_they_validate_back() -> None:
    """Computed fields are left out of the dump, so a model with extra="forbid" validates back."""

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")
        a: int

        @computed_field  # type: ignore[prop-decorator]
        @property
        def double(self) -> int:
            return 2 * self.a

    s = JsonSerializer()
    assert s.loads(s.dumps(Strict(a=2)), Strict) == Strict(a=2)
