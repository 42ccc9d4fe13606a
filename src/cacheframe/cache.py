"""The ``Cache`` object: a backend, a serialiser and settings, plus the guarded store calls."""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

from . import envelope, keys
from .breaker import CircuitBreaker
from .exceptions import BackendError, CacheframeError, EntryError
from .policy import DecoratorOptions, ttl_seconds
from .registry import load_backend_factory, load_serializer_factory
from .serializers import dumps_for, loads_for
from .settings import CacheSettings, load_settings
from .stampede import Flights
from .startup import check_store
from .types import Backend, Serializer, SupportsGetNowait, SupportsLock, SupportsLockRoundTrips

if TYPE_CHECKING:
    from .decorator import Decorator

__all__ = ["Cache", "CacheStats"]

log = logging.getLogger("cacheframe")
T = TypeVar("T")

KV_NAMESPACE = "kv"
_DECODED_MAX = 512
_DECODED_HEAD = 80  # envelope bytes through the ETag: what the decoded-entry memo is keyed by
_LOG_INTERVAL = 30.0

# Errors a store call may raise that must never reach a view when failing open. Backends
# wrap driver errors in BackendError; OSError/TimeoutError cover plugins that do not.
STORE_ERRORS: tuple[type[BaseException], ...] = (CacheframeError, OSError, TimeoutError)


class StoreDown(enum.Enum):
    """Returned by ``read_entry`` when the store failed or the circuit is open."""

    STORE_DOWN = "store down"


STORE_DOWN = StoreDown.STORE_DOWN
Read = envelope.ResponseEntry | envelope.ValueEntry | StoreDown | None


@dataclass
class CacheStats:
    """Counters of one ``Cache`` (process-local)."""

    hits: int = 0
    fast_hits: int = 0
    misses: int = 0
    bypasses: int = 0
    stale: int = 0
    stores: int = 0
    not_stored: int = 0
    backend_errors: int = 0
    short_circuited: int = 0
    bad_entries: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain mapping."""
        return asdict(self)


def _nowait_reader(backend: Backend) -> Callable[[str], bytes | None] | None:
    """``backend.get_nowait``, unless a subclass overrides ``get`` below it (to instrument or
    fail reads): then reads go through ``get``."""
    if not isinstance(backend, SupportsGetNowait):
        return None
    mro = type(backend).__mro__
    get_owner = next((c for c in mro if "get" in vars(c)), None)
    nowait_owner = next((c for c in mro if "get_nowait" in vars(c)), None)
    if get_owner is None or nowait_owner is None:  # provided dynamically (a proxy, a mock): not trusted
        return None
    return backend.get_nowait if issubclass(nowait_owner, get_owner) else None


class Cache:
    """A cache: owns its backend, serialiser and settings; offers ``@cache`` and a KV API.

    ``Cache(url="redis://127.0.0.1:6379/0", prefix="app")``; options mirror
    :class:`~cacheframe.settings.CacheSettings` and override ``CACHEFRAME_*``.
    ``backend=`` takes a ready backend object instead of a URL.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        backend: Backend | None = None,
        settings: CacheSettings | None = None,
        **options: Any,
    ) -> None:
        if url is not None:
            options["url"] = url
        if settings is not None and options:  # re-validate the merged values
            settings = load_settings(**{**settings.model_dump(), **options})
        self.settings = settings if settings is not None else load_settings(**options)
        secret = self.settings.secret.get_secret_value().encode() if self.settings.secret else None
        self.serializer: Serializer = load_serializer_factory(self.settings.serializer)(secret=secret)
        if backend is None:
            factory = load_backend_factory(self.settings.url)
            backend = factory.from_url(self.settings.url, self.settings)
        self.backend: Backend = backend
        self.stats = CacheStats()
        self.breaker = CircuitBreaker(self.settings.breaker_threshold, self.settings.breaker_cooldown)
        self.flights = Flights()  # computations in flight, by key
        # Store reads in flight, per loop and key: concurrent lookups share one. The value is the
        # list of waiting followers, created only when one turns up (most reads have none).
        self._reading: dict[asyncio.AbstractEventLoop, dict[str, list[asyncio.Future[Read]] | None]] = {}
        # A store answering in-process (memory) is read synchronously; nothing to share.
        self._get_nowait = _nowait_reader(backend)
        self.in_process = self._get_nowait is not None  # reads never suspend; no other process writes
        # The store lock of stampede protection, if the backend has one and it is enabled.
        # (A runtime Protocol check costs ~10 µs: done once here, not per miss.)
        self.lock: SupportsLock | None = (
            backend if self.settings.stampede_lock and isinstance(backend, SupportsLock) else None
        )
        # The longest computation of each decorated view seen here (seconds, by qualified name):
        # a view never slower than stampede_lock_min_cost skips the store lock, since a duplicate
        # run costs less than the lock. One slow run is enough to lock that view's misses again.
        self.compute_cost: dict[str, float] = {}
        self.lock_round_trips: SupportsLockRoundTrips | None = (
            backend if self.lock is not None and isinstance(backend, SupportsLockRoundTrips) else None
        )
        # Recently decoded entries, by their first stored bytes (see decode_entry).
        self._decoded: dict[bytes, tuple[bytes, envelope.ResponseEntry | envelope.ValueEntry]] = {}
        self.refreshing: dict[str, float] = {}  # keys with a background refresh under way, since
        self.invalidations = 0  # bumped by delete/clear: a miss started before must not write back
        # Path clears of unsafe requests under way, per loop and prefix (see unsafe.py).
        self.clearing: dict[tuple[asyncio.AbstractEventLoop, str], Any] = {}
        self._prefix = keys.safe_segment(self.settings.prefix)
        self._last_logged: float = float("-inf")

    def __repr__(self) -> str:
        return f"Cache(backend={self.backend!r}, prefix={self.settings.prefix!r})"

    # -- keys ---------------------------------------------------------------------------

    def namespace_key(self, namespace: str | None) -> str:
        """The backend namespace (ending in ``:``) for a namespace, or for all of this prefix."""
        if namespace is None:
            return f"{self._prefix}:"
        return f"{self._prefix}:{keys.safe_segment(namespace)}:"

    def key(self, namespace: str, name: str) -> str:
        """The full store key for ``name`` (any text) under ``namespace``."""
        return self.namespace_key(namespace) + keys.safe_segment(name)

    # -- guarded store calls ------------------------------------------------------------

    def _allowed(self) -> bool:
        if self.breaker.allow():
            return True
        self.stats.short_circuited += 1
        if not self.settings.fail_open:
            raise BackendError(f"{self!r}: circuit open after repeated store failures")
        return False

    def _failed(self, action: str, exc: BaseException) -> None:
        self.breaker.failure()
        self.stats.backend_errors += 1
        now = time.monotonic()
        if now - self._last_logged >= _LOG_INTERVAL:
            self._last_logged = now
            log.warning(
                "cacheframe: %s failed on %r, serving uncached (%s: %s); "
                "further failures are logged at most every %.0f s",
                action,
                self,
                type(exc).__name__,
                exc,
                _LOG_INTERVAL,
            )
        if not self.settings.fail_open:
            if isinstance(exc, CacheframeError):
                raise exc
            raise BackendError(f"{action} failed: {exc}") from exc

    def claim_refresh(self, key: str) -> bool:
        """Whether the caller should start the one background refresh of ``key`` now.

        A claim older than the lock lease is presumed lost (its task never ran) and
        may be taken over, so a key is never stuck serving stale for the whole window.
        """
        now = time.monotonic()
        since = self.refreshing.get(key)
        if since is not None and now - since < self.settings.lock_lease:
            return False
        self.refreshing[key] = now
        return True

    async def guarded(self, action: str, call: Awaitable[T], default: T) -> T:
        """Await a store call under the breaker; on failure log, count and return ``default``."""
        if not self._allowed():
            if inspect.iscoroutine(call):
                call.close()
            return default
        try:
            result = await call
        except STORE_ERRORS as exc:
            self._failed(action, exc)
            return default
        self.breaker.success()
        return result

    async def read_entry(self, key: str) -> Read:
        """Fetch and decode an entry: ``None`` when absent or damaged, ``STORE_DOWN`` on failure."""
        if self._get_nowait is not None:
            return self._read_nowait(key, self._get_nowait)
        if not self._allowed():
            return STORE_DOWN
        try:
            raw = await self.backend.get(key)
        except STORE_ERRORS as exc:
            self._failed("get", exc)
            return STORE_DOWN
        self.breaker.success()
        return self.decode_entry(key, raw)

    def read_nowait(self, key: str) -> Read:
        """``read_entry`` without a coroutine, for an in-process store (``in_process`` true)."""
        if self._get_nowait is None:
            raise TypeError(f"{self.backend!r} is not an in-process store (SupportsGetNowait)")
        return self._read_nowait(key, self._get_nowait)

    def _read_nowait(self, key: str, get_nowait: Callable[[str], bytes | None]) -> Read:
        breaker = self.breaker
        healthy = breaker.opened_at is None  # closed: allow() and success() have nothing to do
        if not healthy and not self._allowed():
            return STORE_DOWN
        try:
            raw = get_nowait(key)
        except STORE_ERRORS as exc:
            self._failed("get", exc)
            return STORE_DOWN
        if breaker.failures or not healthy:
            breaker.success()
        # The store hands back the object it holds, whose hash is cached: key the memo by it.
        return self.decode_entry(key, raw, raw)

    def decode_entry(
        self, key: str, raw: bytes | None, memo_key: bytes | None = None
    ) -> envelope.ResponseEntry | envelope.ValueEntry | None:
        """The entry in ``raw`` (``None`` when absent or damaged: counted, logged).

        Recently decoded entries are kept by ``memo_key``, by default the first bytes of
        ``raw`` (creation time, TTL and ETag: cheap to hash, unlike a whole body read from
        the network), and reused only when all of ``raw`` is equal (a memory compare, or
        identity for an in-process store).
        """
        if raw is None:
            return None
        head = raw[:_DECODED_HEAD] if memo_key is None else memo_key
        known = self._decoded.get(head)
        if known is not None and known[0] == raw:
            return known[1]
        try:
            decoded = envelope.decode(raw)
        except EntryError as exc:
            self.bad_entry(key, exc)
            return None
        if len(self._decoded) >= _DECODED_MAX:
            self._decoded.clear()
        self._decoded[head] = (raw, decoded)
        return decoded

    async def read_shared(self, key: str) -> Read:
        """``read_entry``, but concurrent reads of one key in this loop share one store call."""
        if self._get_nowait is not None:  # in-process: reads cannot overlap
            return self._read_nowait(key, self._get_nowait)
        loop = asyncio.get_running_loop()
        reading = self._reading.get(loop)
        if reading is None:
            for closed in [lp for lp in self._reading if lp.is_closed()]:
                del self._reading[closed]
            reading = self._reading[loop] = {}
        if key in reading:  # follow the read in flight
            waiters = reading[key]
            if waiters is None:
                waiters = reading[key] = []
            future: asyncio.Future[Read] = loop.create_future()
            waiters.append(future)
            return await future
        reading[key] = None
        entry: Read = None
        try:  # read_entry, inlined: one coroutine less on every network hit
            breaker = self.breaker
            if breaker.opened_at is not None and not self._allowed():  # closed: always allowed
                entry = STORE_DOWN
                return entry
            try:
                raw = await self.backend.get(key)
            except STORE_ERRORS as exc:
                self._failed("get", exc)
                entry = STORE_DOWN
                return entry
            if breaker.failures or breaker.opened_at is not None:
                breaker.success()
            entry = self.decode_entry(key, raw)
            return entry
        finally:  # a failed or cancelled read hands its followers None: they go on as on a miss
            for waiter in reading.pop(key, None) or ():
                if not waiter.done():
                    waiter.set_result(entry)

    def bad_entry(self, key: str, exc: Exception) -> None:
        """Count and log an entry that could not be used (it will be overwritten)."""
        self.stats.bad_entries += 1
        log.warning("cacheframe: ignoring damaged entry %s: %s", key, exc)

    async def write_entry(
        self,
        key: str,
        entry: envelope.ResponseEntry | envelope.ValueEntry,
        unlock: tuple[str, str] | None = None,
    ) -> bool:
        """Encode and store an entry for its ttl plus stale window; errors are logged.

        ``unlock=(lock_key, token)`` releases the store lock in the same round trip
        (a backend with ``SupportsLockRoundTrips``).
        """
        try:
            data = envelope.encode(entry)
        except EntryError as exc:  # too large for the envelope (a 70 kB header): served, not stored
            self.stats.not_stored += 1
            log.info("cacheframe: not storing %s: %s", key, exc)
            return False
        if not self._allowed():  # after encoding: a half-open breaker's probe is not spent on it
            return False
        try:
            if unlock is not None and self.lock_round_trips is not None:
                await self.lock_round_trips.set_and_release_lock(key, data, entry.ttl + entry.stale, *unlock)
            else:
                await self.backend.set(key, data, entry.ttl + entry.stale)
        except STORE_ERRORS as exc:
            self._failed("set", exc)
            return False
        self.breaker.success()
        self.stats.stores += 1
        return True

    # -- key/value API ------------------------------------------------------------------

    async def get(self, key: str, default: Any = None, *, namespace: str = KV_NAMESPACE) -> Any:
        """The value stored under ``key``, or ``default``."""
        full = self.key(namespace, key)
        entry = await self.read_entry(full)
        if not isinstance(entry, envelope.ValueEntry) or entry.age() >= entry.ttl:
            return default
        if entry.serializer != self.serializer.name:
            return default
        try:
            return loads_for(self.serializer, entry.payload, full)
        except EntryError as exc:
            self.bad_entry(key, exc)
            return default

    async def set(
        self, key: str, value: Any, ttl: float | timedelta | None = None, *, namespace: str = KV_NAMESPACE
    ) -> bool:
        """Store ``value`` under ``key``; return whether the store accepted it."""
        seconds = ttl_seconds(ttl, self.settings.default_ttl)
        full = self.key(namespace, key)
        payload = dumps_for(self.serializer, value, full)
        entry = envelope.ValueEntry(self.serializer.name, payload, time.time(), seconds)
        return await self.write_entry(full, entry)

    async def delete(self, key: str, *, namespace: str = KV_NAMESPACE) -> bool:
        """Remove ``key``; return whether something was removed (always tried, even when open)."""
        self.invalidations += 1
        try:
            return await self.backend.delete(self.key(namespace, key))
        except STORE_ERRORS as exc:
            self._failed("delete", exc)
            return False

    async def clear(self, namespace: str | None = None) -> None:
        """Remove every entry of ``namespace`` (a decorated function's, or ``"kv"``), or all."""
        self.invalidations += 1
        try:
            await self.backend.clear(self.namespace_key(namespace))
        except STORE_ERRORS as exc:
            self._failed("clear", exc)

    async def close(self) -> None:
        """Close the backend's connections."""
        await self.backend.close()

    @asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """FastAPI lifespan: ``FastAPI(lifespan=my_cache.lifespan)``; checks the store at startup
        (unreachable: a warning, or an error when ``fail_open`` is false), closes on shutdown."""
        await check_store(self.backend, self.settings)
        try:
            yield
        finally:
            await self.close()

    # -- decorator ----------------------------------------------------------------------

    def cache(self, ttl: float | timedelta | None = None, **options: Unpack[DecoratorOptions]) -> Decorator:
        """``@cache`` bound to this cache instead of the process default (same options)."""
        from .decorator import Decorator

        return Decorator(lambda: self, ttl=ttl, **options)

    def resolve_serializer(self, serializer: str | Serializer | None) -> Serializer:
        """The decorator's serialiser: its own (by name or object) or this cache's."""
        if serializer is None:
            return self.serializer
        if isinstance(serializer, str):
            if serializer == self.serializer.name:
                return self.serializer
            secret = self.settings.secret.get_secret_value().encode() if self.settings.secret else None
            made: Serializer = load_serializer_factory(serializer)(secret=secret)
            return made
        return serializer
