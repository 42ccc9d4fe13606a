"""The in-process tier: copies of a network store's values, with a bound on their staleness.

Turned on by ``local_max_entries`` (a network store only). It keeps the stored bytes of
entries and of the stamps they were sealed with (``_stamps``), by store key, so that a hit
reads no store at all: at most ``local_max_entries`` entries, least recently used first
out, and ``local_max_bytes`` in all. A stamp's copy is kept while a kept entry depends on
it (so a hot entry's stamps never age out from under it, and hits touch only the entry).
Whether a copy may answer depends on what the store offers:

- **lease** (a store with :class:`~cacheframe.types.SupportsBroadcast`: Redis). Every
  invalidation writes its stamps and publishes their keys on a channel, acknowledged
  before it returns. This process keeps one connection subscribed to that channel, and
  PINGs on it. The server sends one connection's messages in order, so once the pong of
  a PING sent at time *s* is read, every invalidation acknowledged before *s* has
  been applied here (the copies of its keys dropped). A copy answers only while the last
  answered PING was sent less than ``local_max_staleness`` ago: an invalidation that
  returned at T is never missed by a hit after T + ``local_max_staleness``. A lost or
  silent channel makes the tier answer nothing (hits go to the store) and empties it;
  it is trusted again after a new subscription's first pong.
- **ttl** (``local_ttl`` set, no channel: Memcached). A copy answers for at most
  ``local_ttl`` seconds; that is the bound.
- **validate** (no channel, no ``local_ttl``). Only entries are kept; a hit reads the
  stamps from the store (small) and judges the copy by them: never stale, one round trip.

In every mode a copy of an entry lives at most until the entry stops being fresh
(stale entries are read from the store, where another process may have refreshed
them), and a read that overlapped a change heard on the channel fills nothing (its
*ticket*, the count of changes when it started, is older than the last change to one of
its keys, or than a reset): a value read before an invalidation is never kept after it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from .settings import CacheSettings
from .stats import Observer
from .types import Backend, Subscription, SupportsBroadcast

__all__ = ["LEASE", "TTL", "VALIDATE", "LocalTier", "channel_name", "message_of"]

log = logging.getLogger("cacheframe.local")

LEASE, TTL, VALIDATE = "lease", "ttl", "validate"
_OVERHEAD = 120  # bytes counted per kept value beyond its key and bytes
_LOG_INTERVAL = 30.0
_MAX_PINGS = 8  # PINGs in flight at most on the channel
_CHANGED_MAX = 100_000  # keys whose last change is remembered for the fill guard


def channel_name(prefix: str) -> str:
    """The channel a cache's invalidations are announced on."""
    return f"{prefix}:!inv"


def message_of(keys: Iterable[str]) -> bytes:
    """The message naming changed store keys (``prefix*`` names every key under ``prefix``;
    keys never hold ``*`` or a newline)."""
    return "\n".join(keys).encode()


def _under(key: str, prefix: str) -> bool:
    """Whether store key ``key`` starts with ``prefix``, after its stamp bucket's hash tag if any."""
    if key.startswith(prefix):
        return True
    if key[:1] == "{":
        end = key.find("}")
        return end > 0 and key.startswith(prefix, end + 1)
    return False


class LocalTier:
    """One per ``Cache`` on a network store with ``local_max_entries`` > 0."""

    def __init__(self, backend: Backend, settings: CacheSettings, observer: Observer, name: str) -> None:
        self.max_entries = settings.local_max_entries
        self.max_bytes = settings.local_max_bytes
        self.bound = settings.local_max_staleness
        self.cap = settings.local_ttl
        self.broadcast: SupportsBroadcast | None = backend if isinstance(backend, SupportsBroadcast) else None
        self.mode = LEASE if self.broadcast is not None else (TTL if self.cap else VALIDATE)
        self.channel = channel_name(settings.prefix)
        self.observer = observer
        self.name = name
        # entries: store key -> (bytes, expiry, size, the stamps it holds a reference to)
        self._values: OrderedDict[str, tuple[bytes, float, int, tuple[str, ...]]] = OrderedDict()
        self._stamps: dict[str, tuple[bytes, float, int]] = {}  # stamp key -> (token, expiry, size)
        self._refs: dict[str, int] = {}  # stamp key -> kept entries referring to it
        self.nbytes = 0  # entries and stamps
        # Held by every change to the copies: a fill (checking its ticket, then keeping) is one
        # step against changes heard meanwhile, even from another thread (a sync function's
        # store calls run on the portal loop's thread; the channel is read on the app's loop).
        self._lock = threading.Lock()
        self.applied = 0  # changes heard or made so far: the ticket a read takes when it starts
        self._changed: dict[str, int] = {}  # key: the change that last dropped it (recent ones)
        self._floor = 0  # reads that started before this change fill nothing (a reset, a prefix)
        self.hits = 0
        self.bypassed = 0  # hits not answered here because the lease had run out
        self.resets = 0
        self._proven = -math.inf  # monotonic send time of the last PING answered
        # PINGs go out every quarter of the bound while hits want the lease, several in flight:
        # a loaded loop's slow pong then does not let the lease lapse (each pong proves its own
        # send time, and they come back in order).
        self._interval = self.bound / 4
        self._last_sent = -math.inf
        self._ping_timeout = max(1.0, 4 * settings.timeout)
        self._sub: Subscription | None = None
        self._gen = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting = False
        self._pinging = 0  # PINGs in flight
        self._retry_at = 0.0
        self._backoff = 0.05
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_logged = -math.inf

    def __repr__(self) -> str:
        return f"LocalTier({self.name}, {self.mode})"

    # -- reads ----------------------------------------------------------------------------

    @property
    def serves(self) -> bool:
        """Whether copies answer without the store (lease and ttl modes)."""
        return self.mode != VALIDATE

    def get(self, key: str, stamps: Sequence[str]) -> list[bytes] | None:
        """``[entry, *stamps]`` kept here and still good, else None (then read the store)."""
        if self.mode == LEASE and not self.trusted():
            if key in self._values:
                self.bypassed += 1
            return None
        values = self._values
        found = values.get(key)
        if found is None:
            return None
        now = time.time()
        if found[1] <= now:
            with self._lock:
                self._pop(key)
            return None
        out = [found[0]]
        kept_stamps = self._stamps
        for stamp in stamps:
            kept = kept_stamps.get(stamp)
            if kept is None or kept[1] <= now:
                return None
            out.append(kept[0])
        try:
            values.move_to_end(key)
        except KeyError:  # dropped meanwhile by another thread (the sync portal's)
            return None
        self.hits += 1
        return out

    def entry(self, key: str) -> bytes | None:
        """The kept bytes of an entry (validate mode: the caller reads its stamps)."""
        found = self._values.get(key)
        if found is None:
            return None
        if found[1] <= time.time():
            with self._lock:
                self._pop(key)
            return None
        try:
            self._values.move_to_end(key)
        except KeyError:
            return None
        return found[0]

    def trusted(self) -> bool:
        """Lease mode: whether the last answered PING was sent within the bound (asking for
        another one every quarter of it)."""
        now = time.monotonic()
        age = now - self._proven
        if age > self._interval and (self._sub is None or now - self._last_sent >= self._interval):
            self._want()
        return age <= self.bound

    # -- fills ----------------------------------------------------------------------------

    def fill(
        self,
        ticket: int,
        key: str,
        raw: bytes,
        fresh_until: float,
        stamps: Sequence[str],
        tokens: Sequence[bytes | None],
        read_at: float | None = None,
    ) -> None:
        """Keep an entry read from the store (fresh until ``fresh_until``, Unix time) and its
        stamps' tokens, unless a change was heard since the read began (``ticket``) or, in
        lease mode, nothing is listening. ``local_ttl`` counts from ``read_at``, when the
        read began (default: now)."""
        with self._lock:
            if ticket < self._floor:
                return
            changed = self._changed
            if changed and (
                changed.get(key, -1) > ticket or any(changed.get(s, -1) > ticket for s in stamps)
            ):
                return
            if self.mode == LEASE and self._sub is None:
                return
            now = time.time()
            born = now if read_at is None else min(read_at, now)
            until = fresh_until if self.cap is None else min(fresh_until, born + self.cap)
            if until <= now:
                return
            if self.mode == VALIDATE:  # the stamps are read from the store on every hit
                self._put(key, raw, until, ())
                self._evict()
                return
            held = tuple(stamps)
            if not self._put(key, raw, until, held):
                return
            stamp_until = math.inf if self.cap is None else born + self.cap
            for stamp, token in zip(held, tokens, strict=False):
                if token is None:  # missing in the store: an older copy says nothing true
                    self._forget_stamp(stamp)
                else:
                    self._put_stamp(stamp, token, stamp_until)
            self._evict()

    def _put(self, key: str, raw: bytes, until: float, stamps: tuple[str, ...]) -> bool:
        """Keep an entry (replacing its copy) and refer to its stamps, bounds not enforced yet
        (``_evict``); False when it alone is larger than the byte bound."""
        self._pop(key)
        size = len(raw) + len(key) + _OVERHEAD
        if size > self.max_bytes:
            return False
        self._values[key] = (raw, until, size, stamps)
        self.nbytes += size
        refs = self._refs
        for stamp in stamps:
            refs[stamp] = refs.get(stamp, 0) + 1
        return True

    def _put_stamp(self, stamp: str, token: bytes, until: float) -> None:
        if stamp not in self._refs:  # evicted with its last entry meanwhile
            return
        self._forget_stamp(stamp)
        size = len(token) + len(stamp) + _OVERHEAD
        self._stamps[stamp] = (token, until, size)
        self.nbytes += size

    def _forget_stamp(self, stamp: str) -> None:
        old = self._stamps.pop(stamp, None)
        if old is not None:
            self.nbytes -= old[2]

    def _evict(self) -> None:
        """Drop the least recently used entries (and the stamps only they referred to) until
        within both bounds."""
        values = self._values
        while values and (len(values) > self.max_entries or self.nbytes > self.max_bytes):
            self._release(*values.popitem(last=False))

    def _release(self, key: str, kept: tuple[bytes, float, int, tuple[str, ...]]) -> None:
        self.nbytes -= kept[2]
        refs = self._refs
        for stamp in kept[3]:
            left = refs[stamp] - 1
            if left:
                refs[stamp] = left
            else:
                del refs[stamp]
                self._forget_stamp(stamp)

    def _pop(self, key: str) -> None:
        old = self._values.pop(key, None)
        if old is not None:
            self._release(key, old)

    def drop(self, keys: Iterable[str]) -> None:
        """Forget ``keys`` (changed here or heard on the channel; ``prefix*``: every key under
        it, in a stamp bucket too: ``{tag}prefix...``), and void the reads under way that read
        them."""
        with self._lock:
            for key in keys:
                self.applied += 1
                if key.endswith("*"):
                    prefix = key[:-1]
                    for kept in [k for k in self._values if _under(k, prefix)]:
                        self._pop(kept)
                    for stamp in [k for k in self._stamps if _under(k, prefix)]:
                        self._forget_stamp(stamp)
                    self._floor = self.applied
                else:
                    self._pop(key)
                    self._forget_stamp(key)
                    self._changed[key] = self.applied
            if len(self._changed) > _CHANGED_MAX:  # forget them all: reads under way fill nothing
                self._changed.clear()
                self._floor = self.applied

    def clear(self) -> None:
        """Forget every copy, and void reads under way."""
        with self._lock:
            self._values.clear()
            self._stamps.clear()
            self._refs.clear()
            self._changed.clear()
            self.nbytes = 0
            self.applied += 1
            self._floor = self.applied

    def __len__(self) -> int:
        return len(self._values)

    # -- the channel ----------------------------------------------------------------------

    def _on_message(self, message: bytes) -> None:
        if message == b"*":
            self.clear()
        else:
            self.drop(message.decode("ascii", "replace").split("\n"))

    def _want(self) -> None:
        """Ask, without waiting, for a subscription or a fresh PING on the channel's loop."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # a sync caller's thread: the channel's loop does it, if there is one
            loop = None
        own = self._loop
        if own is not None and own.is_closed():  # its loop is gone, and its connection with it
            self._forget()
            own = None
        if own is None:
            if loop is not None:
                self._kick(loop)
        elif own is loop:
            self._kick(loop)
        else:
            own.call_soon_threadsafe(self._kick, own)

    def _kick(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sub is None:
            if not self._connecting and time.monotonic() >= self._retry_at:
                self._connecting = True
                self._loop = loop
                self._spawn(loop, self._connect())
        elif self._pinging < _MAX_PINGS and time.monotonic() - self._last_sent >= self._interval:
            self._pinging += 1
            self._last_sent = time.monotonic()
            self._spawn(loop, self._ping(self._sub))

    def _spawn(self, loop: asyncio.AbstractEventLoop, work: Any) -> None:
        task = loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self) -> None:
        assert self.broadcast is not None
        self._gen += 1
        gen = self._gen
        try:
            sub = await self.broadcast.subscribe(self.channel, self._on_message, lambda: self._lost(gen))
        except Exception as exc:
            self._connecting = False
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(2 * self._backoff, 2.0)
            self._warn("subscribing to the invalidation channel failed", exc)
            return
        self._connecting = False
        if gen != self._gen:  # forgotten meanwhile
            await sub.close()
            return
        self._reset()  # changes may have gone unheard while nothing listened
        self._sub = sub
        self._backoff = 0.05
        self._pinging += 1
        self._last_sent = time.monotonic()
        await self._ping(sub)

    async def _ping(self, sub: Subscription) -> None:
        sent = time.monotonic()
        try:
            async with asyncio.timeout(self._ping_timeout):
                await sub.ping()
        except Exception as exc:
            self._pinging = max(0, self._pinging - 1)
            if sub is self._sub:
                self._warn("the invalidation channel did not answer", exc)
                self._sub = None
                self._gen += 1
                self._reset()
                await sub.close()
            return
        self._pinging = max(0, self._pinging - 1)
        if sub is self._sub and sent > self._proven:
            healthy_again = self._proven == -math.inf
            self._proven = sent
            if healthy_again:
                self.observer.on_tier_health(True)

    def _lost(self, gen: int) -> None:
        if gen != self._gen:
            return
        self._sub = None
        self._gen += 1
        self._reset()
        self._warn("the invalidation channel's connection was lost", None)

    def _reset(self) -> None:
        """Untrusted until a new PING is answered, and empty (changes may have gone unheard)."""
        if self._proven != -math.inf:
            self.observer.on_tier_health(False)
        self._proven = -math.inf
        self._last_sent = -math.inf
        self.resets += 1
        self.clear()

    def _forget(self) -> None:
        self._sub = None
        self._gen += 1
        self._loop = None
        self._connecting = False
        self._pinging = 0
        self._tasks.clear()
        self._reset()

    def _warn(self, what: str, exc: BaseException | None) -> None:
        now = time.monotonic()
        if now - self._last_logged >= _LOG_INTERVAL:
            self._last_logged = now
            why = "" if exc is None else f" ({type(exc).__name__}: {exc})"
            log.warning(
                "cacheframe: %s on %s%s; the local tier is bypassed until it answers again",
                what,
                self.name,
                why,
            )

    async def close(self) -> None:
        """End the subscription (``Cache.close``)."""
        sub, self._sub = self._sub, None
        self._gen += 1
        self._proven = -math.inf
        self.clear()
        if sub is not None and self._loop is not None and not self._loop.is_closed():
            try:
                if asyncio.get_running_loop() is self._loop:
                    await sub.close()
            except RuntimeError:
                pass
        for task in list(self._tasks):
            task.cancel()
        self._loop = None
