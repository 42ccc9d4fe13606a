"""The interfaces cacheframe talks to: backends, serialisers, key builders.

Everything here is a ``typing.Protocol``: a third-party backend or serialiser
implements the methods and never inherits from cacheframe.

Key contract shared by every backend
------------------------------------
Keys arrive as ``str`` built by :mod:`cacheframe.keys`: printable ASCII from
``[A-Za-z0-9._~%:{}-]``, at most a few hundred characters, made of segments
joined by ``:``. A *namespace* passed to :meth:`Backend.clear` is always a run
of whole leading segments ending in ``:``; ``clear(ns)`` removes every key that
starts with ``ns``. Values are opaque ``bytes``: backends never serialise and
know nothing of HTTP.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .settings import CacheSettings

__all__ = [
    "Backend",
    "BackendFactory",
    "KeyBuilder",
    "Serializer",
    "StampedBytes",
    "Subscription",
    "SupportsAdd",
    "SupportsBroadcast",
    "SupportsCreateStamps",
    "SupportsGetNowait",
    "SupportsKeyedEntries",
    "SupportsLock",
    "SupportsLockRoundTrips",
    "SupportsStampBuckets",
    "SupportsStamps",
    "SupportsStampsNowait",
    "SupportsStats",
    "SupportsTTL",
]

#: What an in-process stamped read returns: the entry's bytes (None: absent) and the tokens
#: of its stamps, in order (None each: absent).
StampedBytes = tuple[bytes | None, Sequence[bytes | None]]


@runtime_checkable
class Backend(Protocol):
    """The minimal async store: bytes in, bytes out."""

    async def get(self, key: str) -> bytes | None:
        """Return the value stored under ``key``, or ``None`` when absent or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store ``value``; ``ttl`` in seconds (fractions honoured), ``None`` = no expiry."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove ``key``; return whether something was removed (best effort)."""
        ...

    async def clear(self, namespace: str) -> None:
        """Remove every key starting with ``namespace`` (whole segments ending in ``:``)."""
        ...

    async def close(self) -> None:
        """Release connections; the backend may be used again afterwards (it reconnects)."""
        ...


@runtime_checkable
class SupportsTTL(Protocol):
    """Capability: report the remaining lifetime of a key."""

    async def ttl(self, key: str) -> float | None:
        """Seconds left, ``None`` when the key is absent, ``inf`` when it never expires."""
        ...


@runtime_checkable
class SupportsAdd(Protocol):
    """Capability: atomic set-if-absent."""

    async def add(self, key: str, value: bytes, ttl: float | None) -> bool:
        """Store only when ``key`` is absent; return whether it was stored."""
        ...


@runtime_checkable
class SupportsGetNowait(Protocol):
    """Capability: the store answers in-process, without I/O (the memory backend).

    Reads then skip the coroutine machinery and the sharing of concurrent reads,
    which cannot overlap anyway. Only for stores that never block.
    """

    def get_nowait(self, key: str) -> bytes | None:
        """What ``get`` returns, synchronously."""
        ...


@runtime_checkable
class SupportsLock(Protocol):
    """Capability: a lease lock in the store, shared between processes."""

    async def acquire_lock(self, key: str, token: str, lease: float) -> bool:
        """Take the lock named ``key`` for ``lease`` seconds if free."""
        ...

    async def release_lock(self, key: str, token: str) -> bool:
        """Release the lock only if ``token`` still owns it."""
        ...


@runtime_checkable
class SupportsLockRoundTrips(SupportsLock, Protocol):
    """Capability: the lock's steps travel with the entry's read and write, one round trip each.

    A miss under the store lock then costs two round trips (take the lock and
    re-read the entry; write it and release the lock) instead of four.
    """

    async def acquire_lock_and_get(
        self, lock_key: str, token: str, lease: float, key: str
    ) -> tuple[bool, bytes | None]:
        """``acquire_lock(lock_key, ...)`` and ``get(key)``, together."""
        ...

    async def set_and_release_lock(
        self, key: str, value: bytes, ttl: float | None, lock_key: str, token: str
    ) -> bool:
        """``set(key, ...)``, then ``release_lock(lock_key, token)``, together; the release's result."""
        ...


@runtime_checkable
class SupportsStamps(Protocol):
    """Capability: an entry and its validation stamps read in one round trip.

    A stamp is a small random token under a key of its own. Invalidating replaces
    a stamp; an entry records the stamps it was computed under and is valid only
    while they are all still there, unchanged (a stamp that is missing, evicted or
    replaced makes its entries misses). Without this capability the core reads the
    entry and each stamp with ``get`` (one round trip each, concurrently) and
    writes stamps with ``set``: correct, only slower.
    """

    async def read_stamped(self, key: str, stamps: Sequence[str]) -> list[bytes | None]:
        """``[entry, *stamp values]`` under ``key`` and ``stamps`` (None when absent), in one
        round trip where the store allows it."""
        ...

    async def write_stamps(self, stamps: Mapping[str, bytes], ttl: float | None) -> None:
        """Store every stamp (replacing it), each for ``ttl`` seconds; return only once the
        store acknowledged all of them, raise :class:`~cacheframe.exceptions.BackendError`
        otherwise (an invalidation never fails silently)."""
        ...


@runtime_checkable
class SupportsCreateStamps(Protocol):
    """Capability: stamps created only where absent, atomically (with :class:`SupportsStamps`).

    Processes that miss together then seal their entries with the same token; without
    it the last writer wins and the others' entries are misses once (safe, wasteful).
    """

    async def create_stamps(self, stamps: Mapping[str, bytes], ttl: float | None) -> list[bytes | None]:
        """For each stamp: store its token unless the stamp exists; the token each now holds,
        in order (None if it vanished at once). Raises ``BackendError`` like ``write_stamps``."""
        ...


@runtime_checkable
class SupportsStampBuckets(Protocol):
    """Capability: stamps kept in one copy per *bucket*, so that a stamped read names keys of
    one shard only (with :class:`SupportsStamps`; Redis Cluster: one ``MGET`` on one node).

    ``stamp_buckets`` are two or more key prefixes of one length (hash tags on a cluster).
    The core puts each entry in one of them (its key, and its lock's, start with that
    prefix, picked by a hash of the key) and reads and creates the stamps the entry depends
    on under the same prefix. An invalidation replaces every copy of a stamp with
    :meth:`replace_stamps`: a copy that does not exist validates nothing, so it need not be
    created. ``clear(ns)`` also removes the keys that start with a bucket prefix and then ``ns``.
    """

    stamp_buckets: tuple[str, ...]

    async def replace_stamps(self, stamps: Mapping[str, bytes], ttl: float | None) -> None:
        """Store each stamp that exists (keeping absent ones absent), for ``ttl`` seconds;
        return only once the store acknowledged all of them, raise
        :class:`~cacheframe.exceptions.BackendError` otherwise."""
        ...


@runtime_checkable
class SupportsStampsNowait(Protocol):
    """Capability: :class:`SupportsStamps`'s read answered in-process, without I/O."""

    def read_stamped_nowait(self, key: str, stamps: Sequence[str]) -> StampedBytes:
        """What ``read_stamped`` returns, synchronously, as ``(entry, tokens)``. The caller
        never changes ``tokens``: the store may hand out the same sequence (a tuple) again
        while those stamps are unchanged, and the engine then skips checking an entry's seal
        against tokens it has already checked it against."""
        ...


class Subscription(Protocol):
    """One live subscription to a broadcast channel (see :class:`SupportsBroadcast`)."""

    async def ping(self) -> None:
        """Return once the server answered a ping sent on this subscription's connection, and
        is still the store's master (behind Sentinel: the one the sentinels name). Every
        message published (and acknowledged) before the ping was sent has then been handed to
        ``on_message``. Raises :class:`~cacheframe.exceptions.BackendError` when the
        subscription is lost, or its server no longer the master."""
        ...

    async def close(self) -> None:
        """End the subscription (``on_lost`` is not called)."""
        ...


@runtime_checkable
class SupportsBroadcast(Protocol):
    """Capability: a channel that tells every process of a change, in order, on one connection.

    The in-process tier (``local_max_entries``) keeps copies of store values only while its
    subscription proves, by a ping answered on the same connection, that it has heard of
    every change acknowledged before that ping. A message is the store keys that changed,
    joined by newlines, or ``*`` for all of them.
    """

    async def publish(
        self,
        channel: str,
        message: bytes,
        stamps: Mapping[str, bytes] | None = None,
        ttl: float | None = None,
    ) -> None:
        """Write ``stamps`` (as :meth:`SupportsStamps.write_stamps`), then publish ``message`` on
        ``channel``; return once the server acknowledged both, raise
        :class:`~cacheframe.exceptions.BackendError` otherwise."""
        ...

    async def subscribe(
        self, channel: str, on_message: Callable[[bytes], None], on_lost: Callable[[], None]
    ) -> Subscription:
        """Subscribe a connection of its own to ``channel``; return once subscribed.
        ``on_message`` gets each message in order; ``on_lost`` is called once if the connection
        fails (messages may then have been lost: the subscription is dead)."""
        ...


@runtime_checkable
class SupportsStats(Protocol):
    """Capability: report store statistics for ``cacheframe stats``."""

    async def stats(self) -> Mapping[str, Any]:
        """A flat mapping of figures (entries, bytes, hits, ...)."""
        ...


class BackendFactory(Protocol):
    """What an entry point in ``cacheframe.backends`` resolves to (usually the backend class).

    cacheframe calls ``factory.from_url(url, settings)``: the cache's settings, or
    ``None`` (the conformance suite, a URL alone). A classmethod
    ``from_url(cls, url: str, settings: CacheSettings | None = None) -> MyBackend``
    matches; mypy checks a plugin against this with ``_: BackendFactory = MyBackend``.
    """

    def from_url(self, url: str, settings: CacheSettings | None, /) -> Backend:
        """Build a backend from its URL (query parameters carry options; see
        :func:`cacheframe.backends.options.parse_options`); ``settings.timeout`` is the
        deadline of one store call."""
        ...


@runtime_checkable
class Serializer(Protocol):
    """Turns plain-function return values into bytes and back (views store bytes).

    A value is stored only if ``loads(dumps(value), hint)`` gives it back exactly, unless
    the serialiser's class sets ``exact = True`` (it rebuilds values itself, as pickle does).
    """

    name: str

    def dumps(self, value: Any) -> bytes:
        """Encode ``value``."""
        ...

    def loads(self, data: bytes, type_hint: Any = Any) -> Any:
        """Decode ``data``; ``type_hint`` (the function's return annotation) may rebuild types."""
        ...


@runtime_checkable
class SupportsKeyedEntries(Protocol):
    """Capability of a serialiser: bind each encoded value to the store key it is written under.

    cacheframe then calls these instead of ``dumps``/``loads`` for store entries, so an
    entry copied to another key fails to decode (``EntryError``). Signing serialisers
    should implement it; a serialiser without it works unchanged.
    """

    def dumps_keyed(self, value: Any, key: str) -> bytes:
        """Encode ``value`` for the store key ``key``."""
        ...

    def loads_keyed(self, data: bytes, key: str, type_hint: Any = Any) -> Any:
        """Decode ``data`` read from ``key``; raise ``EntryError`` if it was made for another key."""
        ...


KeyBuilder = Callable[..., "str | bytes | Awaitable[str | bytes]"]
"""A custom key builder: ``builder(func, request, args, kwargs) -> str | bytes``.

``request`` is the Starlette ``Request`` for a view and ``None`` for a plain
function; ``args``/``kwargs`` are the call's arguments (for a view: what
FastAPI passed, without the injected request/response). It may be async. The
result is hashed and placed under the prefix and namespace, so it may be any
length and contain any character.
"""
