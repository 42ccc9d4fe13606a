"""The store gateway: the one door to a backend, guarded by the circuit breaker.

Every call cacheframe makes to a store goes through here, and each concern is
written once:

- the breaker and fail-open: a failing call is counted, logged (rate-limited)
  and answered with a default, or raised when ``fail_open`` is false;
- reads: an in-process store (``SupportsGetNowait``) is read without a
  coroutine (:meth:`StoreGateway.peek`); on a network store, concurrent reads of
  one key in one loop share one store call (:meth:`StoreGateway.read`);
- decoding, with a memo of decoded entries owned here and bounded in bytes;
- writes, released together with the store lock where the backend can;

It knows entries (the envelope) and backends, and nothing of views, functions
or HTTP.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from . import envelope, stats
from ._local import LocalTier, message_of
from ._memo import BytesMemo
from ._timing import TimedBackend, Timing
from .breaker import CircuitBreaker
from .exceptions import BackendError, BackendTimeoutError, CacheframeError, ConfigurationError, EntryError
from .keys import loggable
from .settings import CacheSettings
from .stats import Observer
from .types import (
    Backend,
    StampedBytes,
    SupportsAdd,
    SupportsBroadcast,
    SupportsCreateStamps,
    SupportsGetNowait,
    SupportsLock,
    SupportsLockRoundTrips,
    SupportsStampBuckets,
    SupportsStamps,
    SupportsStampsNowait,
)

__all__ = ["CIRCUIT_OPEN", "NEEDS_IO", "STORE_DOWN", "STORE_ERRORS", "Entry", "Read", "StoreGateway", "down"]

log = logging.getLogger("cacheframe.store")
T = TypeVar("T")

Entry = envelope.ResponseEntry | envelope.ValueEntry

# Errors a store call may raise that must never reach a view when failing open. Backends
# wrap driver errors in BackendError; OSError/TimeoutError cover plugins that do not.
STORE_ERRORS: tuple[type[BaseException], ...] = (CacheframeError, OSError, TimeoutError)


class _Outcome(enum.Enum):
    STORE_DOWN = "store down"  # the store failed
    CIRCUIT_OPEN = "circuit open"  # the store was not asked: the circuit is open
    NEEDS_IO = "needs I/O"  # peek: the store is across the network; await read()


STORE_DOWN = _Outcome.STORE_DOWN
CIRCUIT_OPEN = _Outcome.CIRCUIT_OPEN
NEEDS_IO = _Outcome.NEEDS_IO
Read = Entry | _Outcome | None  # an entry, None (absent or damaged), STORE_DOWN or CIRCUIT_OPEN
Stamped = tuple[Read, Sequence[bytes | None]]  # an entry and the tokens of its stamps (never changed)
_NO_TOKENS: tuple[bytes | None, ...] = ()
_NO_ENTRY_KEY = "!no-entry"  # read beside stamps when only the stamps are wanted


def down(read: object) -> str | None:
    """The bypass reason of a read that found the store unusable (``STORE_DOWN``,
    ``CIRCUIT_OPEN``), else None."""
    if read is STORE_DOWN:
        return stats.STORE_DOWN
    if read is CIRCUIT_OPEN:
        return stats.BREAKER_OPEN
    return None


_LOG_INTERVAL = 30.0  # seconds between two warnings of failing store calls
# Decoded entries kept, in bytes of entry (counted twice: the stored bytes and the decoded
# copy of the body), so that a hot entry is decoded once, whatever its size.
DECODED_MAX_BYTES = 32 * 1024 * 1024
DECODED_MAX_ITEM = 4 * 1024 * 1024
_ENTRY_OVERHEAD = 256


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


def _own(backend: Backend, method: str, base: str) -> bool:
    """Whether ``backend``'s ``method`` is defined at or below the class defining ``base`` (a
    subclass overriding ``get`` to instrument or fail reads keeps its reads going through it)."""
    mro = type(backend).__mro__
    base_owner = next((c for c in mro if base in vars(c)), None)
    owner = next((c for c in mro if method in vars(c)), None)
    return base_owner is not None and owner is not None and issubclass(owner, base_owner)


class StoreGateway:
    """The guarded door to one backend (one per ``Cache``)."""

    def __init__(self, backend: Backend, settings: CacheSettings, observer: Observer, name: str) -> None:
        self.backend = backend
        self.settings = settings
        self.observer = observer
        self.name = name  # how logs and errors name the cache
        self.breaker = CircuitBreaker(
            settings.breaker_threshold, settings.breaker_cooldown, on_change=observer.on_breaker
        )
        self._get_nowait = _nowait_reader(backend)
        self.in_process = self._get_nowait is not None  # reads never suspend; no other process writes
        # Stamped reads: the backend's own (one round trip), else get() of each key.
        self._stamped: SupportsStamps | None = (
            backend if isinstance(backend, SupportsStamps) and _own(backend, "read_stamped", "get") else None
        )
        self._stamped_nowait: Callable[[str, Sequence[str]], StampedBytes] | None = None
        self._plain_get_nowait = self._get_nowait  # never timed: the fallback below times itself
        if self._get_nowait is not None:  # in-process: its own stamped read, else get_nowait() of each
            if isinstance(backend, SupportsStampsNowait) and _own(backend, "read_stamped_nowait", "get"):
                self._stamped_nowait = backend.read_stamped_nowait
            else:
                self._stamped_nowait = self._each_nowait
        # The store lock of stampede protection, if the backend has one and it is enabled.
        # (A runtime Protocol check costs ~10 µs: done once here, not per miss.)
        self.lock: SupportsLock | None = (
            backend if settings.stampede_lock and isinstance(backend, SupportsLock) else None
        )
        self.lock_round_trips: SupportsLockRoundTrips | None = (
            backend if self.lock is not None and isinstance(backend, SupportsLockRoundTrips) else None
        )
        # Store reads in flight, per loop and key: concurrent lookups share one. The value is the
        # list of waiting followers, created only when one turns up (most reads have none).
        self._reading: dict[asyncio.AbstractEventLoop, dict[str, list[asyncio.Future[Read]] | None]] = {}
        # Stamps being created, per loop: concurrent misses that find one missing share its
        # creation (so they all seal with the one token the store keeps).
        self._creating: dict[asyncio.AbstractEventLoop, dict[str, asyncio.Future[bytes | None]]] = {}
        self._reading_stamped: dict[
            asyncio.AbstractEventLoop, dict[tuple[str, tuple[str, ...]], list[asyncio.Future[Stamped]] | None]
        ] = {}
        # Decoded entries by store key, with the stored bytes they came from.
        self.decoded: BytesMemo[str, tuple[bytes, Entry]] = BytesMemo(DECODED_MAX_BYTES, DECODED_MAX_ITEM)
        self._last_logged = float("-inf")
        # Stamp buckets (a cluster): each entry and the copies of its stamps share a prefix.
        self.bucketed: SupportsStampBuckets | None = None
        self.buckets: tuple[str, ...] = ("",)
        if self._stamped is not None and isinstance(backend, SupportsStampBuckets):
            buckets = tuple(backend.stamp_buckets)
            if len(buckets) > 1:
                if len({len(b) for b in buckets}) != 1 or len(set(buckets)) != len(buckets) or "" in buckets:
                    raise ConfigurationError(
                        f"{name}: {type(backend).__name__}.stamp_buckets must be distinct, non-empty "
                        "prefixes of one length"
                    )
                self.bucketed, self.buckets = backend, buckets
        self._bucket_width = len(self.buckets[0])
        # Invalidations are announced on a channel wherever the store has one (whether this
        # process keeps copies or not: others may).
        self.broadcast: SupportsBroadcast | None = backend if isinstance(backend, SupportsBroadcast) else None
        self.channel = f"{settings.prefix}:!inv"
        self.local: LocalTier | None = None
        local_set = [
            name
            for name, spec in type(settings).model_fields.items()
            if name.startswith("local_") and getattr(settings, name) != spec.default
        ]
        if self.in_process and local_set:
            named = ", ".join(f"{n}={getattr(settings, n)!r} (CACHEFRAME_{n.upper()})" for n in local_set)
            raise ConfigurationError(
                f"{name}: {named} ask for an "
                f"in-process tier in front of a network store, but {type(backend).__name__} is "
                "in-process already; remove them (local_max_entries=0 turns the tier off), or use a "
                "network store (redis://, memcached://)"
            )
        if settings.local_max_entries:
            self.local = LocalTier(backend, settings, observer, name)
        self.tier = stats.TIER_STORE  # where the last read answered from (for the hit's label)

    def __repr__(self) -> str:
        return self.name

    def time_calls(self, timing: Timing) -> None:
        """Time every store call from now on (an exporter asked for it): the backend is then
        reached through a :class:`~cacheframe._timing.TimedBackend`."""
        real = self.backend.backend if isinstance(self.backend, TimedBackend) else self.backend
        timed = TimedBackend(real, timing)
        self.backend = timed
        if self._stamped is not None:
            self._stamped = timed
        if self._stamped_nowait is not None:
            if self._stamped_nowait == self._each_nowait:  # the fallback: one timed read in all
                each = self._each_nowait

                def read_each(key: str, stamps: Sequence[str]) -> StampedBytes:
                    with timing.store_call("get"):
                        return each(key, stamps)

                self._stamped_nowait = read_each
            else:
                self._stamped_nowait = timed.read_stamped_nowait
        if self._get_nowait is not None:
            self._get_nowait = timed.get_nowait
        if self.lock is not None:
            self.lock = timed
        if self.lock_round_trips is not None:
            self.lock_round_trips = timed

    # -- the breaker ----------------------------------------------------------------------

    def _allowed(self) -> bool:
        if self.breaker.allow():
            return True
        self.observer.on_short_circuit()
        if not self.settings.fail_open:
            raise BackendError(f"{self.name}: circuit open after repeated store failures")
        return False

    def _failed(self, action: str, exc: BaseException) -> None:
        self.breaker.failure()
        self.observer.on_store_error(action, isinstance(exc, TimeoutError))
        now = time.monotonic()
        if now - self._last_logged >= _LOG_INTERVAL:
            self._last_logged = now
            log.warning(
                "cacheframe: store %s failed on %s, serving uncached (%s: %s); "
                "further failures are logged at most every %.0f s",
                action,
                self.name,
                type(exc).__name__,
                exc,
                _LOG_INTERVAL,
            )
        if not self.settings.fail_open:
            if isinstance(exc, CacheframeError):
                raise exc
            raise BackendError(f"{action} failed: {exc}") from exc

    async def call(self, action: str, call: Awaitable[T], default: T) -> T:
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

    # -- reads ----------------------------------------------------------------------------

    def peek(self, key: str) -> Read | _Outcome:
        """The entry of an in-process store, read without a coroutine; ``NEEDS_IO`` when the
        store is across the network (then ``await read(key)``)."""
        get_nowait = self._get_nowait
        if get_nowait is None:
            return NEEDS_IO
        if self.breaker.opened_at is not None and not self._allowed():  # closed: always allowed
            return CIRCUIT_OPEN
        try:
            raw = get_nowait(key)
        except STORE_ERRORS as exc:
            self._failed("get", exc)
            return STORE_DOWN
        return self._got(key, raw)

    async def read(self, key: str) -> Read:
        """The entry under ``key``: ``None`` when absent or damaged, ``STORE_DOWN`` on failure.
        Concurrent reads of one key in this loop share one store call."""
        if self._get_nowait is not None:  # in-process: reads cannot overlap
            return self.peek(key)  # never NEEDS_IO here
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
        try:  # the store call is awaited here, not through read_once: one coroutine less per hit
            if self.breaker.opened_at is not None and not self._allowed():  # closed: always allowed
                entry = CIRCUIT_OPEN
                return entry
            try:
                raw = await self.backend.get(key)
            except STORE_ERRORS as exc:
                self._failed("get", exc)
                entry = STORE_DOWN
                return entry
            entry = self._got(key, raw)
            return entry
        finally:  # followers get what the read found (STORE_DOWN when it failed open); a
            # cancelled read, or one raising (fail_open=False), hands them None: a miss for them
            for waiter in reading.pop(key, None) or ():
                if not waiter.done():
                    waiter.set_result(entry)

    async def read_once(self, key: str) -> Read:
        """``read``, without sharing the store call with concurrent readers."""
        if self._get_nowait is not None:
            return self.peek(key)  # never NEEDS_IO here
        if self.breaker.opened_at is not None and not self._allowed():  # closed: always allowed
            return CIRCUIT_OPEN
        try:
            raw = await self.backend.get(key)
        except STORE_ERRORS as exc:
            self._failed("get", exc)
            return STORE_DOWN
        return self._got(key, raw)

    # -- stamped reads: an entry with the stamps it depends on ---------------------------------

    def peek_stamped(self, key: str, stamps: tuple[str, ...]) -> Stamped | _Outcome:
        """:meth:`peek` with the stamps' tokens: ``(entry, tokens)`` from an in-process store,
        ``NEEDS_IO`` when the store is across the network (then ``await read_stamped``)."""
        read = self._stamped_nowait
        if read is None:
            local = self.local
            if local is not None and local.serves:
                copies = local.get(key, stamps)
                if copies is not None:
                    self.tier = stats.TIER_LOCAL
                    return self.decode(key, copies[0]), copies[1:]
            return NEEDS_IO
        if self.breaker.opened_at is not None and not self._allowed():  # closed: always allowed
            return CIRCUIT_OPEN, _NO_TOKENS
        try:
            raw, tokens = read(key, stamps)
        except STORE_ERRORS as exc:
            self._failed("get", exc)
            return STORE_DOWN, _NO_TOKENS
        return self._got(key, raw), tokens

    async def read_stamped(self, key: str, stamps: tuple[str, ...]) -> Stamped:
        """The entry under ``key`` and the tokens of ``stamps`` (None when absent), read together
        (one round trip on a store with ``SupportsStamps``); concurrent identical reads in this
        loop share one store call. ``(STORE_DOWN | CIRCUIT_OPEN, [])`` when the store failed."""
        if self._stamped_nowait is not None:
            return self.peek_stamped(key, stamps)  # type: ignore[return-value]  # never NEEDS_IO here
        loop = asyncio.get_running_loop()
        reading = self._reading_stamped.get(loop)
        if reading is None:
            for closed in [lp for lp in self._reading_stamped if lp.is_closed()]:
                del self._reading_stamped[closed]
            reading = self._reading_stamped[loop] = {}
        slot = (key, stamps)
        if slot in reading:  # follow the read in flight
            waiters = reading[slot]
            if waiters is None:
                waiters = reading[slot] = []
            future: asyncio.Future[Stamped] = loop.create_future()
            waiters.append(future)
            return await future
        reading[slot] = None
        found: Stamped = (None, [None] * len(stamps))
        local = self.local
        tier = stats.TIER_STORE
        try:
            if self.breaker.opened_at is not None and not self._allowed():  # closed: always allowed
                found = (CIRCUIT_OPEN, _NO_TOKENS)
                return found
            kept = None
            if local is not None:
                ticket, read_at = local.applied, time.time()
                if local.serves:
                    local.trusted()  # (a lease: starts the channel on this loop if none runs yet)
                else:
                    kept = local.entry(key)
            try:
                if kept is not None:  # validate mode: the entry is here, its stamps are read
                    values = [kept, *await self._read_stamps(stamps)]
                    tier = stats.TIER_LOCAL
                elif self._stamped is not None:
                    values = await self._stamped.read_stamped(key, stamps)
                else:
                    values = list(await asyncio.gather(*(self.backend.get(k) for k in (key, *stamps))))
            except STORE_ERRORS as exc:
                self._failed("get", exc)
                found = (STORE_DOWN, _NO_TOKENS)
                return found
            entry = self._got(key, values[0])
            found = (entry, values[1:])
            if local is not None and kept is None and entry is not None and values[0] is not None:
                local.fill(ticket, key, values[0], entry.created + entry.ttl, stamps, values[1:], read_at)
            return found
        finally:
            self.tier = tier
            # followers get what the read found; a cancelled or raising read hands them a miss
            for waiter in reading.pop(slot, None) or ():
                if not waiter.done():
                    waiter.set_result(found)

    def _no_entry(self, stamps: Sequence[str]) -> str:
        """A key nothing is stored under, read beside ``stamps`` when only they are wanted (in
        their bucket, so that the read stays one command)."""
        if self._bucket_width and stamps:
            return stamps[0][: self._bucket_width] + _NO_ENTRY_KEY
        return _NO_ENTRY_KEY

    async def read_tokens(self, stamps: list[str]) -> list[bytes | None] | None:
        """The current tokens of ``stamps`` (None each when absent), in one round trip where the
        store allows it; None when the store failed (counted, logged)."""
        entry_key = self._no_entry(stamps)
        try:
            if self._stamped_nowait is not None:
                return list(self._stamped_nowait(entry_key, stamps)[1])
            if self._stamped is not None:
                return (await self._stamped.read_stamped(entry_key, stamps))[1:]
            return list(await asyncio.gather(*(self.backend.get(k) for k in stamps)))
        except STORE_ERRORS as exc:
            self._failed_quietly("get", exc)
            return None

    async def _read_stamps(self, stamps: Sequence[str]) -> list[bytes | None]:
        if self._stamped is not None:
            return (await self._stamped.read_stamped(self._no_entry(stamps), stamps))[1:]
        return list(await asyncio.gather(*(self.backend.get(k) for k in stamps)))

    def _each_nowait(self, key: str, stamps: Sequence[str]) -> StampedBytes:
        get = self._plain_get_nowait
        assert get is not None
        return get(key), [get(stamp) for stamp in stamps]

    async def write_stamps(
        self, stamps: Mapping[str, bytes], ttl: float, *, fail_open: bool, existing: bool = False
    ) -> bool:
        """Replace each stamp with its new token, durably. A failure is counted and logged; it
        raises :class:`BackendError` unless ``fail_open`` (an invalidation always raises: it
        never fails silently; a miss creating missing stamps only gives up storing).

        ``existing``: the stamps are bucket copies (``SupportsStampBuckets``): only those that
        exist are replaced (an absent copy validates nothing, and stays absent)."""
        if not stamps:
            return True
        try:
            if existing and self.bucketed is not None:  # replaced, then announced (see _local)
                await self.bucketed.replace_stamps(stamps, ttl)
                if self.broadcast is not None:
                    await self.broadcast.publish(self.channel, message_of(stamps))
            elif self.broadcast is not None:  # written and announced together (see _local)
                await self.broadcast.publish(self.channel, message_of(stamps), stamps, ttl)
            elif self._stamped is not None:
                await self._stamped.write_stamps(stamps, ttl)
            else:
                await asyncio.gather(*(self.backend.set(k, v, ttl) for k, v in stamps.items()))
        except STORE_ERRORS as exc:
            if self.local is not None:
                self.local.drop(stamps)
            self.breaker.failure()
            self.observer.on_store_error("set", isinstance(exc, BackendTimeoutError))
            log.warning(
                "cacheframe: writing %d stamp(s) failed on %s (%s: %s)",
                len(stamps),
                self.name,
                type(exc).__name__,
                exc,
            )
            if fail_open:
                return False
            if isinstance(exc, BackendError):
                raise
            raise BackendError(f"writing stamps failed: {exc}") from exc
        if self.local is not None:
            self.local.drop(stamps)
        self.breaker.success()
        return True

    async def create_stamps(self, stamps: Mapping[str, bytes], ttl: float) -> dict[str, bytes] | None:
        """Create each missing stamp with its token unless another process just did: the token
        each stamp now holds (so processes missing together seal alike), or None when the
        store failed (counted, logged; the caller then stores nothing). Concurrent creations
        of one stamp in this loop share one store call, whatever the store can do."""
        loop = asyncio.get_running_loop()
        creating = self._creating.setdefault(loop, {})
        joined = {key: creating[key] for key in stamps if key in creating}
        mine = {key: token for key, token in stamps.items() if key not in joined}
        futures: dict[str, asyncio.Future[bytes | None]] = {}
        for key in mine:
            futures[key] = creating[key] = loop.create_future()
        held: dict[str, bytes] | None = {}
        try:
            if mine:
                held = await self._create_stamps(mine, ttl)
        finally:
            for key, future in futures.items():
                future.set_result(None if held is None else held.get(key))
                if creating.get(key) is future:
                    del creating[key]
        if held is None:
            return None
        for key, future in joined.items():
            token = await future
            if token is None:
                return None
            held[key] = token
        return held

    async def _create_stamps(self, stamps: Mapping[str, bytes], ttl: float) -> dict[str, bytes] | None:
        backend = self.backend
        real = backend.backend if isinstance(backend, TimedBackend) else backend
        try:
            if self._stamped is not None:
                if isinstance(real, SupportsCreateStamps):
                    held = await real.create_stamps(stamps, ttl)
                else:  # the last writer wins: the others' entries are misses once
                    await self._stamped.write_stamps(stamps, ttl)
                    held = list(stamps.values())
            elif isinstance(real, SupportsAdd):

                async def create(key: str, token: bytes) -> bytes | None:
                    if await real.add(key, token, ttl):
                        return token
                    return await real.get(key)  # another process created it first: its token

                held = list(await asyncio.gather(*(create(k, v) for k, v in stamps.items())))
            else:
                await asyncio.gather(*(real.set(k, v, ttl) for k, v in stamps.items()))
                held = list(stamps.values())
        except STORE_ERRORS as exc:
            self._failed_quietly("set", exc)
            return None
        if None in held:  # created, then evicted at once: nothing to seal with
            return None
        return dict(zip(stamps, held, strict=True))  # type: ignore[arg-type]

    def _failed_quietly(self, action: str, exc: BaseException) -> None:
        """A store call failed where the caller fails open whatever the settings say."""
        self.breaker.failure()
        self.observer.on_store_error(action, isinstance(exc, BackendTimeoutError))
        log.warning("cacheframe: %s failed on %s (%s: %s)", action, self.name, type(exc).__name__, exc)

    def _got(self, key: str, raw: bytes | None) -> Entry | None:
        """A read answered: the breaker hears of it (only when not already closed and clean),
        and the stored bytes are decoded."""
        breaker = self.breaker
        if breaker.failures or breaker.opened_at is not None:
            breaker.success()
        return self.decode(key, raw)

    def decode(self, key: str, raw: bytes | None) -> Entry | None:
        """The entry in ``raw`` (``None`` when absent or damaged: counted, logged).

        The entry last decoded for ``key`` is reused when the stored bytes are the same
        (the same object from an in-process store, else equal bytes: a memory compare)."""
        if raw is None:
            return None
        known = self.decoded.get(key)
        if known is not None and (known[0] is raw or known[0] == raw):
            return known[1]
        try:
            decoded = envelope.decode(raw)
        except EntryError as exc:
            self.bad_entry(key, exc)
            return None
        self.decoded.put(key, (raw, decoded), 2 * len(raw) + _ENTRY_OVERHEAD)
        return decoded

    def bad_entry(self, key: str, exc: Exception) -> None:
        """Count and log an entry that could not be used (it will be overwritten); the key is
        logged with its user part hashed (:func:`~cacheframe.keys.loggable`)."""
        self.observer.on_bad_entry()
        log.warning("cacheframe: ignoring damaged entry %s: %s", loggable(key), exc)

    # -- writes ---------------------------------------------------------------------------

    async def write(self, key: str, entry: Entry, unlock: tuple[str, str] | None = None) -> str | None:
        """Encode and store an entry for its ttl plus stale window; errors are logged.

        None when stored, else why not: ``too-large`` (the caller counts it as not stored),
        ``store-down`` or ``breaker-open`` (counted here as a store error or a skipped call).
        ``unlock=(lock_key, token)`` releases the store lock in the same round trip
        (a backend with ``SupportsLockRoundTrips``).
        """
        try:
            data = envelope.encode(entry)
        except EntryError as exc:  # too large for the envelope (a 70 kB header): served, not stored
            log.info("cacheframe: not storing %s: %s", loggable(key), exc)
            return stats.NS_TOO_LARGE
        if not self._allowed():  # after encoding: a half-open breaker's probe is not spent on it
            return stats.BREAKER_OPEN
        try:
            if unlock is not None and self.lock_round_trips is not None:
                await self.lock_round_trips.set_and_release_lock(key, data, entry.ttl + entry.stale, *unlock)
            else:
                await self.backend.set(key, data, entry.ttl + entry.stale)
        except STORE_ERRORS as exc:
            self._failed("set", exc)
            return stats.STORE_DOWN
        if self.local is not None:
            self.local.drop((key,))
        self.breaker.success()
        self.observer.on_stored()
        return None

    async def delete(self, key: str) -> bool:
        """Remove ``key``; whether something was removed (always tried, even when open). Where
        the store has a channel, the removal is announced (other processes' copies go)."""
        try:
            removed = await self.backend.delete(key)
        except STORE_ERRORS as exc:
            self._failed("delete", exc)
            return False
        await self._announce((key,), "delete")
        return removed

    async def _announce(self, keys: Sequence[str], action: str) -> None:
        """Tell other processes' local tiers that ``keys`` changed (``prefix*``: all under it)."""
        if self.local is not None:
            self.local.drop(keys)
        if self.broadcast is None:
            return
        try:
            await self.broadcast.publish(self.channel, message_of(keys))
        except STORE_ERRORS as exc:
            self._failed_quietly(f"{action} announcement", exc)

    async def clear(self, namespace: str) -> None:
        """Remove every key under ``namespace`` (always tried, even when open)."""
        try:
            await self.backend.clear(namespace)
        except STORE_ERRORS as exc:
            self._failed("clear", exc)
            return
        await self._announce((namespace + "*",), "clear")

    # -- the store lock -------------------------------------------------------------------

    async def acquire_lock(self, lock_key: str, token: str, reread: str | None) -> tuple[bool, Read]:
        """Take the store lock ``lock_key``, failing open (a lock that cannot be taken counts
        as held); ``(held, entry)``, the entry under ``reread`` read with it (else None)."""
        lock = self.lock
        assert lock is not None
        lease = self.settings.lock_lease
        if reread is not None and self.lock_round_trips is not None:
            call = self.lock_round_trips.acquire_lock_and_get(lock_key, token, lease, reread)
            held, raw = await self.call("lock", call, (True, None))
            return held, self.decode(reread, raw)
        held = await self.call("lock", lock.acquire_lock(lock_key, token, lease), True)
        entry = await self.read_once(reread) if held and reread is not None else None
        return held, entry

    async def release_lock(self, lock_key: str, token: str) -> None:
        """Release the store lock (never raises when failing open)."""
        if self.lock is not None:
            await self.call("unlock", self.lock.release_lock(lock_key, token), False)
