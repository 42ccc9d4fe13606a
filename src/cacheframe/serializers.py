"""Built-in serialisers for plain-function values (views store rendered bytes).

A serialiser factory, as registered in the ``cacheframe.serializers`` entry-point
group, is called as ``factory(secret=<bytes or None>)`` and returns an object
that satisfies :class:`cacheframe.types.Serializer`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import pickle
from decimal import Decimal
from functools import lru_cache
from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter

from .exceptions import ConfigurationError, EntryError

__all__ = ["JsonSerializer", "PickleSerializer"]


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
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
            raise EntryError(f"cannot decode JSON value: {exc}") from exc


class PickleSerializer:
    """pickle, signed with HMAC-SHA256; verified in constant time before unpickling.

    The algorithm is fixed here and never read from the stored bytes, so an
    entry cannot choose a weaker check.
    """

    name = "pickle"
    _MAC_SIZE = hashlib.sha256().digest_size

    def __init__(self, *, secret: bytes | None = None) -> None:
        if not secret:
            raise ConfigurationError(
                "the 'pickle' serializer needs a signing key: set CACHEFRAME_SECRET "
                "(or secret=...) to a long random string, or use serializer='json'"
            )
        self._secret = secret

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, b"cacheframe-pickle-v1\x00" + payload, "sha256").digest()

    def dumps(self, value: Any) -> bytes:
        """Pickle and prepend the MAC."""
        payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        return self._mac(payload) + payload

    def loads(self, data: bytes, type_hint: Any = Any) -> Any:
        """Verify the MAC, then unpickle; a bad MAC never reaches ``pickle.loads``."""
        del type_hint
        mac, payload = data[: self._MAC_SIZE], data[self._MAC_SIZE :]
        if len(mac) != self._MAC_SIZE or not hmac.compare_digest(mac, self._mac(payload)):
            raise EntryError("pickle entry failed signature verification; refused")
        try:
            return pickle.loads(payload)  # noqa: S301 - verified above
        except Exception as exc:  # a signed but unloadable payload (class gone, ...)
            raise EntryError(f"cannot unpickle verified entry: {exc}") from exc
