"""The embedded default: a bounded in-process LRU store with per-entry TTL (cachetools).

It offers no store lock: it lives in one process, where single-flight already
keeps concurrent misses on one key to one computation.

``memory://`` or ``memory://?max_entries=50000&max_bytes=268435456``. Each
instance owns its own store; a lock makes it safe for the event loop and the
threads that sync functions run in.

Stamps (``SupportsStamps``) live in a table of their own, beside the entries: at most
``max_entries`` of them, each with its expiry. When the table is full, a write evicts
by second chance (CLOCK): a stamp read since it was last passed over gets another
round, so the stamps every hit reads (the prefix's, a namespace's) stay while
stamps nobody reads go. An evicted stamp only turns its entries into misses.

A hit reads its stamps' tokens from a memo (by the tuple of stamp keys), kept until the
first of those stamps expires and dropped whole by any change to the stamp table: the
tuple of tokens it hands out is then the same object from hit to hit, which lets the
engine skip comparing a seal it already checked against it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cachetools import Cache as _BaseCache
from cachetools import LRUCache
from pydantic import BaseModel, ConfigDict, Field

from .options import parse_options

if TYPE_CHECKING:
    from ..settings import CacheSettings

__all__ = ["MemoryBackend", "MemoryOptions"]

_peek = _BaseCache.__getitem__  # a read that leaves the LRU order alone
_OVERHEAD = 96  # rough per-entry bookkeeping, so many tiny values still count


class MemoryOptions(BaseModel):
    """Options of ``memory://`` URLs."""

    model_config = ConfigDict(extra="forbid")

    max_entries: int = Field(10_000, gt=0)
    max_bytes: int | None = Field(None, gt=0)


class MemoryBackend:
    """Bounded LRU (cachetools ``LRUCache``) with per-entry expiry; optional byte bound.

    Expiry is checked on every read, so an expired entry is never returned and is
    dropped when met. Entries nobody reads again leave by LRU eviction; once the
    store is full, a write first sweeps out everything expired (at most once a
    second), so dead entries do not push live ones out.
    """

    def __init__(self, max_entries: int = 10_000, max_bytes: int | None = None) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._data: LRUCache[str, tuple[bytes, float]] = self._new_store()
        self._stamps: OrderedDict[str, list[Any]] = OrderedDict()  # key -> [value, deadline, read]
        # stamp keys -> (until, their tokens): emptied by every change to ``_stamps``
        self._tokens: dict[tuple[str, ...], tuple[float, tuple[bytes | None, ...]]] = {}
        self._hits = self._misses = 0
        self._next_sweep = 0.0

    def _new_store(self) -> LRUCache[str, tuple[bytes, float]]:
        if self.max_bytes is None:
            return LRUCache(maxsize=self.max_entries)
        return LRUCache(maxsize=self.max_bytes, getsizeof=lambda v: len(v[0]) + _OVERHEAD)

    def _sweep(self, now: float) -> None:
        """Drop every expired entry (caller holds the lock). Reads through the base class
        ``Cache.__getitem__``: ``LRUCache``'s own would mark every entry as just used."""
        data = self._data
        for key in [k for k in data if _peek(data, k)[1] <= now]:
            del data[key]

    def _full(self, value: bytes) -> bool:
        """Whether storing ``value`` under a new key would evict something."""
        data = self._data
        size = len(value) + _OVERHEAD if self.max_bytes is not None else 1
        return len(data) >= self.max_entries or data.currsize + size > data.maxsize

    @classmethod
    def from_url(cls, url: str, settings: CacheSettings | None = None) -> MemoryBackend:
        """Build from ``memory://``; query options override the settings' bounds."""
        defaults: dict[str, Any] = {}
        if settings is not None:
            defaults = {"max_entries": settings.max_entries, "max_bytes": settings.max_bytes}
        options = parse_options(url, MemoryOptions, defaults)
        return cls(max_entries=options.max_entries, max_bytes=options.max_bytes)

    def __repr__(self) -> str:
        return f"MemoryBackend(max_entries={self.max_entries}, max_bytes={self.max_bytes})"

    def __len__(self) -> int:
        with self._lock:
            self._sweep(time.monotonic())
            return len(self._data)

    @staticmethod
    def _deadline(ttl: float | None) -> float:
        return math.inf if ttl is None else time.monotonic() + ttl

    async def get(self, key: str) -> bytes | None:
        """Return the live value or ``None``."""
        return self.get_nowait(key)

    def get_nowait(self, key: str) -> bytes | None:
        """``get`` without a coroutine (``SupportsGetNowait``): the hit path's read."""
        with self._lock:
            item = self._live(key, time.monotonic())
        if item is None:
            self._misses += 1
            return None
        self._hits += 1
        return item[0]

    def _live(self, key: str, now: float) -> tuple[bytes, float] | None:
        """The unexpired item under ``key`` (an expired one is dropped); caller holds the lock."""
        try:
            item = self._data[key]  # marks it used; .get() adds two more calls on every hit
        except KeyError:
            return None
        if item[1] <= now:
            del self._data[key]
            return None
        return item

    async def read_stamped(self, key: str, stamps: Sequence[str]) -> list[bytes | None]:
        """The entry and its stamps (``SupportsStamps``); no I/O."""
        entry, tokens = self.read_stamped_nowait(key, stamps)
        return [entry, *tokens]

    def read_stamped_nowait(
        self, key: str, stamps: Sequence[str]
    ) -> tuple[bytes | None, Sequence[bytes | None]]:
        """The entry and its stamps' tokens, synchronously (``SupportsStampsNowait``): every
        hit's read. The tokens of a tuple of stamps come from the memo while it holds them
        (the same tuple each time); else plain dict lookups, a stamp read being only flagged
        (its second chance), never moved."""
        with self._lock:
            now = time.monotonic()
            item = self._live(key, now)
            if item is None:
                self._misses += 1
                entry = None
            else:
                self._hits += 1
                entry = item[0]
            known = self._tokens.get(stamps) if type(stamps) is tuple else None
            if known is not None and known[0] > now:
                return entry, known[1]
            return entry, self._read_tokens(stamps, now)

    def _read_tokens(self, stamps: Sequence[str], now: float) -> tuple[bytes | None, ...]:
        """The tokens of ``stamps``, each flagged as read, kept in the memo for a tuple of
        them until the first expires (caller holds the lock)."""
        get = self._stamps.get
        until = math.inf
        tokens: list[bytes | None] = []
        for name in stamps:
            stamp = get(name)
            if stamp is not None and stamp[1] > now:
                stamp[2] = True
                tokens.append(stamp[0])
                until = min(until, stamp[1])
            else:
                tokens.append(None)
        found = tuple(tokens)
        if type(stamps) is tuple:
            memo = self._tokens
            if len(memo) >= self.max_entries:  # at most one set of stamps per entry: the oldest goes
                del memo[next(iter(memo))]
            memo[stamps] = (until, found)
        return found

    async def write_stamps(self, stamps: Mapping[str, bytes], ttl: float | None) -> None:
        """Replace each stamp (``SupportsStamps``); past ``max_entries`` stamps, evict by CLOCK."""
        deadline = self._deadline(ttl)
        with self._lock:
            self._tokens.clear()
            table, now = self._stamps, time.monotonic()
            for name, value in stamps.items():
                if table.pop(name, None) is None:  # a replaced stamp starts again at the young end
                    self._make_room_for_stamp(now)
                table[name] = [bytes(value), deadline, False]

    async def create_stamps(self, stamps: Mapping[str, bytes], ttl: float | None) -> list[bytes | None]:
        """Store each stamp unless it is live (``SupportsCreateStamps``); the token each holds."""
        held: list[bytes | None] = []
        with self._lock:
            table, now = self._stamps, time.monotonic()
            for name, value in stamps.items():
                stamp = table.get(name)
                if stamp is not None and stamp[1] > now:
                    held.append(stamp[0])
                    continue
                self._tokens.clear()
                if table.pop(name, None) is None:
                    self._make_room_for_stamp(now)
                table[name] = [value, self._deadline(ttl), False]
                held.append(value)
        return held

    def _make_room_for_stamp(self, now: float) -> None:
        """Evict stamps from the old end until one more fits; one read since it was last
        passed over goes to the young end instead, unread (caller holds the lock)."""
        table = self._stamps
        while len(table) >= self.max_entries:
            name, stamp = table.popitem(last=False)
            if stamp[2] and stamp[1] > now:
                stamp[2] = False
                table[name] = stamp

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store; a value larger than the byte bound is dropped (and any older one removed)."""
        with self._lock:
            self._store(key, value, ttl)

    def _store(self, key: str, value: bytes, ttl: float | None) -> bool:
        """Store under the lock the caller holds; ``False`` when larger than the byte bound."""
        if key not in self._data and self._full(value):
            now = time.monotonic()
            if now >= self._next_sweep:  # evict the dead before the living
                self._next_sweep = now + 1.0
                self._sweep(now)
        try:
            self._data[key] = (bytes(value), self._deadline(ttl))
        except ValueError:  # larger than max_bytes on its own
            self._data.pop(key, None)
            return False
        while len(self._data) > self.max_entries:
            self._data.popitem()
        return True

    async def delete(self, key: str) -> bool:
        """Remove ``key`` (an entry or a stamp)."""
        with self._lock:
            stamp = self._stamps.pop(key, None)
            if stamp is not None:
                self._tokens.clear()
            return self._data.pop(key, None) is not None or stamp is not None

    async def clear(self, namespace: str) -> None:
        """Remove every key under ``namespace``, entries and stamps."""
        with self._lock:
            for key in [k for k in self._data if k.startswith(namespace)]:
                self._data.pop(key, None)
            for key in [k for k in self._stamps if k.startswith(namespace)]:
                del self._stamps[key]
                self._tokens.clear()

    async def close(self) -> None:
        """Nothing to release; the data stays (a closed memory backend keeps working)."""

    async def ttl(self, key: str) -> float | None:
        """Seconds left for ``key``."""
        with self._lock:
            item = self._live(key, time.monotonic())
        if item is None:
            return None
        return max(0.0, item[1] - time.monotonic())

    async def add(self, key: str, value: bytes, ttl: float | None) -> bool:
        """Store only if absent."""
        with self._lock:
            if self._live(key, time.monotonic()) is not None:
                return False
            return self._store(key, value, ttl)

    async def stats(self) -> Mapping[str, Any]:
        """Entries, bytes, bounds and hit counts."""
        with self._lock:
            self._sweep(time.monotonic())
            entries = len(self._data)
            size = sum(len(_peek(self._data, k)[0]) for k in self._data)
            stamps = len(self._stamps)
        return {
            "backend": "memory",
            "entries": entries,
            "bytes": size,
            "max_entries": self.max_entries,
            "max_bytes": self.max_bytes,
            "hits": self._hits,
            "misses": self._misses,
            "stamps": stamps,
        }
