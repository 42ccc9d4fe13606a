"""The contract every backend keeps, as a pytest test class to inherit.

A backend's whole test module::

    import pytest_asyncio
    from cacheframe.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        @pytest_asyncio.fixture
        async def backend(self):
            backend = MyBackend.from_url("mine://127.0.0.1:9999")
            yield backend
            await backend.close()

Optional capabilities (``SupportsTTL``, ``SupportsAdd``, ``SupportsLock``,
``SupportsStats``) are tested when the backend implements them and skipped,
with the reason shown, when it does not. Every test writes under a fresh
namespace, so the suite can run against a shared server.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from ..types import Backend, SupportsAdd, SupportsLock, SupportsLockRoundTrips, SupportsStats, SupportsTTL

__all__ = ["BackendConformance"]

# Long enough for stores with whole-second expiry (memcached rounds up to 1 s, ±1 s).
EXPIRY_TTL = 1.0
EXPIRY_WAIT = 2.2


def _ns() -> str:
    return f"cf-conf-{uuid.uuid4().hex[:12]}:"


@pytest.mark.asyncio
class BackendConformance:
    """Inherit and provide an async ``backend`` fixture yielding a fresh backend."""

    large_value_size = 512 * 1024

    @pytest.fixture
    def ns(self) -> str:
        """A namespace no other test uses: ``cf-conf-<random>:``."""
        return _ns()

    @pytest_asyncio.fixture
    async def store(self, backend: Backend, ns: str) -> AsyncIterator[Backend]:
        """The backend under test, its namespace cleared afterwards."""
        yield backend
        await backend.clear(ns)

    # -- the base contract ----------------------------------------------------------

    async def test_satisfies_protocol(self, store: Backend) -> None:
        """The object implements the Backend protocol."""
        assert isinstance(store, Backend)

    async def test_missing_key_is_none(self, store: Backend, ns: str) -> None:
        """An absent key reads as None."""
        assert await store.get(ns + "absent") is None

    async def test_bytes_round_trip(self, store: Backend, ns: str) -> None:
        """Every byte value, including empty and all 256 byte values, comes back exactly."""
        values = {"empty": b"", "all": bytes(range(256)), "text": "héllo".encode(), "nul": b"\x00\r\n"}
        for name, value in values.items():
            await store.set(ns + name, value, 30)
        for name, value in values.items():
            got = await store.get(ns + name)
            assert got == value, name
            assert isinstance(got, bytes)

    async def test_overwrite(self, store: Backend, ns: str) -> None:
        """A second set replaces the first."""
        await store.set(ns + "k", b"one", 30)
        await store.set(ns + "k", b"two", 30)
        assert await store.get(ns + "k") == b"two"

    async def test_ttl_expiry(self, store: Backend, ns: str) -> None:
        """An entry is gone after its ttl; one without ttl stays."""
        await store.set(ns + "short", b"v", EXPIRY_TTL)
        await store.set(ns + "forever", b"v", None)
        await store.set(ns + "long", b"v", 600)
        assert await store.get(ns + "short") == b"v"
        await asyncio.sleep(EXPIRY_WAIT)
        assert await store.get(ns + "short") is None
        assert await store.get(ns + "forever") == b"v"
        assert await store.get(ns + "long") == b"v"

    async def test_fractional_ttl_is_not_forever(self, store: Backend, ns: str) -> None:
        """A sub-second ttl still expires (it must not become 'never')."""
        await store.set(ns + "frac", b"v", 0.4)
        await asyncio.sleep(EXPIRY_WAIT)
        assert await store.get(ns + "frac") is None

    async def test_delete(self, store: Backend, ns: str) -> None:
        """Delete removes a key and reports whether it existed."""
        await store.set(ns + "k", b"v", 30)
        assert await store.delete(ns + "k") is True
        assert await store.get(ns + "k") is None
        assert await store.delete(ns + "k") is False

    async def test_clear_namespace_isolated(self, store: Backend, ns: str) -> None:
        """clear(ns) removes that namespace only: siblings, prefixes and look-alikes stay."""
        keys = {
            "inside": f"{ns}a:1",
            "inside_deep": f"{ns}a:sub:2",
            "sibling": f"{ns}b:1",
            "lookalike": f"{ns}ab:1",
        }
        for key in keys.values():
            await store.set(key, b"v", 60)
        await store.clear(f"{ns}a:")
        assert await store.get(keys["inside"]) is None
        assert await store.get(keys["inside_deep"]) is None
        assert await store.get(keys["sibling"]) == b"v"
        assert await store.get(keys["lookalike"]) == b"v"
        await store.set(keys["inside"], b"again", 60)
        assert await store.get(keys["inside"]) == b"again"

    async def test_clear_other_prefix_untouched(self, store: Backend, ns: str) -> None:
        """Clearing one prefix leaves another prefix's identical namespace alone."""
        other = _ns()
        try:
            await store.set(f"{ns}x:1", b"mine", 60)
            await store.set(f"{other}x:1", b"theirs", 60)
            await store.clear(ns)
            assert await store.get(f"{ns}x:1") is None
            assert await store.get(f"{other}x:1") == b"theirs"
        finally:
            await store.clear(other)

    async def test_odd_keys(self, store: Backend, ns: str) -> None:
        """Keys using the whole key alphabet, and long keys, are distinct and round-trip."""
        odd = [
            "a%2A%3F%5B%5D",
            "{tag}:x",
            "x~" + "f" * 32,
            "dots.and-dashes_",
            "L" * 400,
            "L" * 399 + "M",
            "glob*?[",  # never produced by cacheframe, but must not act as a pattern
        ]
        for i, name in enumerate(odd):
            await store.set(ns + name, str(i).encode(), 60)
        for i, name in enumerate(odd):
            assert await store.get(ns + name) == str(i).encode(), name

    async def test_glob_characters_do_not_widen_clear(self, store: Backend, ns: str) -> None:
        """A namespace holding glob characters clears only itself."""
        await store.set(f"{ns}n*:1", b"star", 60)
        await store.set(f"{ns}nX:1", b"plain", 60)
        await store.clear(f"{ns}n*:")
        assert await store.get(f"{ns}n*:1") is None
        assert await store.get(f"{ns}nX:1") == b"plain"

    async def test_large_value(self, store: Backend, ns: str) -> None:
        """A value of ``large_value_size`` bytes round-trips."""
        value = os.urandom(self.large_value_size)
        await store.set(ns + "big", value, 60)
        assert await store.get(ns + "big") == value

    async def test_concurrent_use(self, store: Backend, ns: str) -> None:
        """Hundreds of concurrent sets and gets each see their own value."""

        async def one(i: int) -> bytes | None:
            await store.set(f"{ns}c:{i}", f"value-{i}".encode(), 60)
            return await store.get(f"{ns}c:{i}")

        results = await asyncio.gather(*(one(i) for i in range(300)))
        assert results == [f"value-{i}".encode() for i in range(300)]

    async def test_usable_after_close(self, store: Backend, ns: str) -> None:
        """close() releases connections; the next call reconnects."""
        await store.set(ns + "k", b"v", 60)
        await store.close()
        assert await store.get(ns + "k") == b"v"

    # -- optional capabilities --------------------------------------------------------

    @staticmethod
    def _require(store: Any, capability: type) -> None:
        if not isinstance(store, capability):
            pytest.skip(f"backend does not declare {capability.__name__}")

    async def test_remaining_ttl(self, store: Backend, ns: str) -> None:
        """SupportsTTL: remaining seconds, None when absent."""
        self._require(store, SupportsTTL)
        assert isinstance(store, SupportsTTL)
        await store.set(ns + "k", b"v", 100)
        left = await store.ttl(ns + "k")
        assert left is not None and 95 <= left <= 100
        assert await store.ttl(ns + "absent") is None

    async def test_add(self, store: Backend, ns: str) -> None:
        """SupportsAdd: set-if-absent is atomic under concurrency."""
        self._require(store, SupportsAdd)
        assert isinstance(store, SupportsAdd)
        results = await asyncio.gather(*(store.add(ns + "k", str(i).encode(), 60) for i in range(20)))
        assert results.count(True) == 1
        winner = results.index(True)
        assert await store.get(ns + "k") == str(winner).encode()

    async def test_lock(self, store: Backend, ns: str) -> None:
        """SupportsLock: one owner; a wrong token cannot release; the lease expires."""
        self._require(store, SupportsLock)
        assert isinstance(store, SupportsLock)
        assert await store.acquire_lock(ns + "lock", "a", 1.0) is True
        assert await store.acquire_lock(ns + "lock", "b", 1.0) is False
        assert await store.release_lock(ns + "lock", "b") is False
        assert await store.release_lock(ns + "lock", "a") is True
        assert await store.acquire_lock(ns + "lock", "b", EXPIRY_TTL) is True
        await asyncio.sleep(EXPIRY_WAIT)
        assert await store.acquire_lock(ns + "lock", "c", 1.0) is True

    async def test_lock_round_trips(self, store: Backend, ns: str) -> None:
        """SupportsLockRoundTrips: the combined calls act as their two halves would."""
        self._require(store, SupportsLockRoundTrips)
        assert isinstance(store, SupportsLockRoundTrips)
        lock, key = ns + "k:lock", ns + "k"
        assert await store.acquire_lock_and_get(lock, "a", 5.0, key) == (True, None)
        assert await store.acquire_lock_and_get(lock, "b", 5.0, key) == (False, None)
        assert await store.set_and_release_lock(key, b"v", 60, lock, "b") is False  # not b's lock
        assert await store.get(key) == b"v"  # the write happened all the same
        assert await store.acquire_lock_and_get(lock, "c", 5.0, key) == (False, b"v")  # a still holds it
        assert await store.set_and_release_lock(key, b"w", 60, lock, "a") is True
        assert await store.acquire_lock_and_get(lock, "c", 5.0, key) == (True, b"w")
        await store.release_lock(lock, "c")

    async def test_stats(self, store: Backend) -> None:
        """SupportsStats: a mapping of figures."""
        self._require(store, SupportsStats)
        assert isinstance(store, SupportsStats)
        stats = await store.stats()
        assert isinstance(dict(stats), dict) and stats
