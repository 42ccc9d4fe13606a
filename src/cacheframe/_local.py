"""The in-process tier: copies of a network store's values, with a bound on their staleness.

Turned on by ``local_max_entries`` (a network store only). It keeps the stored bytes of
entries and of the stamps they were sealed with (``_stamps``), by store key, bounded in
entries and in bytes, so that a hit reads no store at all. Whether a copy may answer
depends on what the store offers:

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
*ticket*, the count of changes applied when it started, no longer matches): a value read
before an invalidation is never kept after it.
"""

from __future__ import annotations

import asyncio
import logging
import math
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
        self._values: OrderedDict[str, tuple[bytes, float, int]] = OrderedDict()  # key: bytes, expiry, size
        self.nbytes = 0
        self.applied = 0  # changes applied and resets: the ticket a read takes when it starts
        self.hits = 0
        self.bypassed = 0  # hits not answered here because the lease had run out
        self.resets = 0
        self._proven = -math.inf  # monotonic send time of the last PING answered
        self._refresh_after = self.bound / 2
        self._ping_timeout = max(1.0, 4 * settings.timeout)
        self._sub: Subscription | None = None
        self._gen = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting = False
        self._pinging = False
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
            self._pop(key)
            return None
        out = [found[0]]
        for stamp in stamps:
            kept = values.get(stamp)
            if kept is None or kept[1] <= now:
                return None
            out.append(kept[0])
        values.move_to_end(key)
        self.hits += 1
        return out

    def entry(self, key: str) -> bytes | None:
        """The kept bytes of an entry (validate mode: the caller reads its stamps)."""
        found = self._values.get(key)
        if found is None:
            return None
        if found[1] <= time.time():
            self._pop(key)
            return None
        self._values.move_to_end(key)
        return found[0]

    def trusted(self) -> bool:
        """Lease mode: whether the last answered PING was sent within the bound (asking for a
        new one when it is half way there)."""
        age = time.monotonic() - self._proven
        if age > self._refresh_after:
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
    ) -> None:
        """Keep an entry read from the store (fresh until ``fresh_until``, Unix time) and its
        stamps' tokens, unless a change was heard since the read began (``ticket``) or, in
        lease mode, nothing is listening."""
        if ticket != self.applied:
            return
        if self.mode == LEASE and self._sub is None:
            return
        now = time.time()
        until = fresh_until if self.cap is None else min(fresh_until, now + self.cap)
        if until <= now:
            return
        self._put(key, raw, until)
        if self.mode == VALIDATE:
            return
        stamp_until = math.inf if self.cap is None else now + self.cap
        for stamp, token in zip(stamps, tokens, strict=False):
            if token is not None:
                self._put(stamp, token, stamp_until)

    def _put(self, key: str, raw: bytes, until: float) -> None:
        size = len(raw) + len(key) + _OVERHEAD
        if size > self.max_bytes:
            return
        values = self._values
        old = values.pop(key, None)
        if old is not None:
            self.nbytes -= old[2]
        values[key] = (raw, until, size)
        self.nbytes += size
        while len(values) > self.max_entries or self.nbytes > self.max_bytes:
            _, (_, _, dropped) = values.popitem(last=False)
            self.nbytes -= dropped

    def _pop(self, key: str) -> None:
        old = self._values.pop(key, None)
        if old is not None:
            self.nbytes -= old[2]

    def drop(self, keys: Iterable[str]) -> None:
        """Forget ``keys`` (this process changed them), and void reads under way. ``prefix*``
        names every key under ``prefix``, in a stamp bucket too (``{tag}prefix...``)."""
        for key in keys:
            if key.endswith("*"):
                prefix = key[:-1]
                for kept in [k for k in self._values if _under(k, prefix)]:
                    self._pop(kept)
            else:
                self._pop(key)
        self.applied += 1

    def clear(self) -> None:
        """Forget every copy, and void reads under way."""
        self._values.clear()
        self.nbytes = 0
        self.applied += 1

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
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        own = self._loop
        if own is not None and own.is_closed():  # its loop is gone, and its connection with it
            self._forget()
            own = None
        if own is None or own is loop:
            self._kick(loop)
        else:
            own.call_soon_threadsafe(self._kick, own)

    def _kick(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sub is None:
            if not self._connecting and time.monotonic() >= self._retry_at:
                self._connecting = True
                self._loop = loop
                self._spawn(loop, self._connect())
        elif not self._pinging:
            self._pinging = True
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
        self._pinging = True
        await self._ping(sub)

    async def _ping(self, sub: Subscription) -> None:
        sent = time.monotonic()
        try:
            async with asyncio.timeout(self._ping_timeout):
                await sub.ping()
        except Exception as exc:
            self._pinging = False
            if sub is self._sub:
                self._warn("the invalidation channel did not answer", exc)
                self._sub = None
                self._gen += 1
                self._reset()
                await sub.close()
            return
        self._pinging = False
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
        self.resets += 1
        self.clear()

    def _forget(self) -> None:
        self._sub = None
        self._gen += 1
        self._loop = None
        self._connecting = False
        self._pinging = False
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
