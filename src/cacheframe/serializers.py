"""Built-in serialisers for plain-function values (views store rendered bytes).

A serialiser factory, as registered in the ``cacheframe.serializers`` entry-point
group, is called as ``factory(secret=<bytes or None>)`` and returns an object
that satisfies :class:`cacheframe.types.Serializer`. A serialiser that also
implements :class:`cacheframe.types.SupportsKeyedEntries` has each value bound to
the store key it is written under (:func:`dumps_for` / :func:`loads_for`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import pickle
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, TypeAdapter

from .exceptions import ConfigurationError, EntryError

if TYPE_CHECKING:
    from .types import Serializer

__all__ = ["JsonSerializer", "PickleSerializer", "dumps_for", "loads_for"]


def dumps_for(serializer: Serializer, value: Any, key: str) -> bytes:
    """Encode ``value`` for the store key ``key`` (bound to it when the serialiser can)."""
    keyed = getattr(serializer, "dumps_keyed", None)
    return serializer.dumps(value) if keyed is None else keyed(value, key)


def loads_for(serializer: Serializer, data: bytes, key: str, type_hint: Any = Any) -> Any:
    """Decode ``data`` read from the store key ``key``; an entry bound to another key raises EntryError."""
    keyed = getattr(serializer, "loads_keyed", None)
    return serializer.loads(data, type_hint) if keyed is None else keyed(data, key, type_hint)


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        # round_trip: computed fields are left out, so the dump validates back into the model
        return value.model_dump(mode="json", round_trip=True)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__qualname__} is not JSON serialisable")


@lru_cache(maxsize=512)
def _adapter(type_hint: Any) -> TypeAdapter[Any]:
    return TypeAdapter(type_hint)


class JsonSerializer:
    """orjson; rebuilds pydantic models, dataclasses and datetimes from the return type."""

    name = "json"

    def __init__(self, *, secret: bytes | None = None) -> None:
        del secret  # JSON is data, not code: nothing to sign

    def dumps(self, value: Any) -> bytes:
        """Encode with orjson (pydantic models, dataclasses, datetimes, UUIDs, Decimals)."""
        return orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS)

    def loads(self, data: bytes, type_hint: Any = Any) -> Any:
        """Decode; with a concrete ``type_hint`` validate into that type."""
        try:
            if type_hint is Any:
                return orjson.loads(data)
            try:
                adapter = _adapter(type_hint)
            except TypeError:  # unhashable hint
                adapter = TypeAdapter(type_hint)
            return adapter.validate_json(data)
        except ValueError as exc:  # orjson.JSONDecodeError and ValidationError are ValueErrors
            # Named by type only: a validation error quotes the stored value, which logs must not show.
            raise EntryError(f"cannot decode JSON value ({type(exc).__name__})") from exc


class PickleSerializer:
    """pickle, signed with HMAC-SHA256; verified in constant time before unpickling.

    The algorithm is fixed here and never read from the stored bytes, so an
    entry cannot choose a weaker check. The MAC also covers the store key the
    entry is written under (``dumps_keyed``/``loads_keyed``), so a signed entry
    copied to another key is refused.
    """

    name = "pickle"
    exact = True  # rebuilds the object graph: cacheframe skips its decode-and-compare check
    _MAC_SIZE = hashlib.sha256().digest_size

    def __init__(self, *, secret: bytes | None = None) -> None:
        if not secret:
            raise ConfigurationError(
                "the 'pickle' serializer needs a signing key: set CACHEFRAME_SECRET "
                "(or secret=...) to a long random string, or use serializer='json'"
            )
        self._secret = secret

    def _mac(self, payload: bytes, key: str) -> bytes:
        # The key is length-prefixed, so no (key, payload) pair can pose as another.
        bound = key.encode("utf-8", "surrogatepass")
        context = b"cacheframe-pickle-v2\x00%d:%b" % (len(bound), bound)
        return hmac.new(self._secret, context + payload, "sha256").digest()

    def dumps(self, value: Any) -> bytes:
        """Pickle and prepend the MAC (bound to no key: use ``dumps_keyed`` for store entries)."""
        return self.dumps_keyed(value, "")

    def loads(self, data: bytes, type_hint: Any = Any) -> Any:
        """Verify the MAC of an unbound value, then unpickle."""
        return self.loads_keyed(data, "", type_hint)

    def dumps_keyed(self, value: Any, key: str) -> bytes:
        """Pickle and prepend the MAC over ``key`` and the payload."""
        payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        return self._mac(payload, key) + payload

    def loads_keyed(self, data: bytes, key: str, type_hint: Any = Any) -> Any:
        """Verify the MAC for ``key``, then unpickle; a bad MAC never reaches ``pickle.loads``."""
        del type_hint
        mac, payload = data[: self._MAC_SIZE], data[self._MAC_SIZE :]
        if len(mac) != self._MAC_SIZE or not hmac.compare_digest(mac, self._mac(payload, key)):
            raise EntryError("pickle entry failed signature verification (foreign, forged or moved); refused")
        try:
            return pickle.loads(payload)  # noqa: S301 - verified above
        except Exception as exc:  # a signed but unloadable payload (class gone, ...)
            raise EntryError(f"cannot unpickle verified entry: {exc}") from exc
