"""The read/fill engine: classify what the store holds, and fill a miss once.

The one algorithm behind every decorated view and function:

- **classify** an entry read through the gateway: fresh, stale (servable while
  one background refresh runs), expired or missing;
- **fill** a miss: concurrent misses of one key in this process share one
  computation (single-flight); across processes, a backend with
  ``SupportsLock`` holds a lease lock named ``<entry key>:lock`` while one of
  them computes, and the others poll the store for its entry until the lease
  runs out, so a crashed or cancelled holder strands nobody beyond the lease;
- a stale entry stands in for a failed computation (stale-if-error);
- nothing computed before an invalidation is written back after it (the epoch);
- one background refresh per stale key (the refresh claim).

It runs over a :class:`Producer`, the way dogpile's ``Lock`` runs over
callables: the view and function adapters say how to compute, how to turn a
result into an entry, and how to answer; the engine decides when.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeGuard, TypeVar

from . import _stamps, keys, stats
from ._gateway import CIRCUIT_OPEN, STORE_DOWN, Entry, Read, StoreGateway
from ._memo import BytesMemo
from ._stamps import Deps, StampKeys
from ._timing import Timing, Timings
from .envelope import NO_SEAL, Seal, freshness
from .exceptions import ConfigurationError, EntryError
from .policy import Policy, ttl_seconds
from .registry import load_serializer_factory
from .settings import CacheSettings
from .stats import Observer
from .types import Serializer

__all__ = [
    "BYPASS",
    "COLLAPSED",
    "DOWN",
    "EXPIRED",
    "FRESH",
    "INVALID",
    "HIT",
    "MISS",
    "MISSING",
    "STALE",
    "STALE_IF_ERROR",
    "SOFT",
    "STALE_LABEL",
    "Bindable",
    "Binding",
    "Engine",
    "Flights",
    "Producer",
    "StoreLock",
    "X_CACHE",
]

log = logging.getLogger("cacheframe.engine")
R = TypeVar("R")
A = TypeVar("A")
A_co = TypeVar("A_co", covariant=True)
Sealing = tuple[Deps, list[bytes | None]]  # the stamps a computation's lookup read, and their tokens
Lookup = tuple[Deps, Sequence[bytes | None]]  # the stamps a lookup read, and their tokens (as read)

# What a lookup found.
FRESH, STALE, EXPIRED, MISSING, DOWN = "fresh", "stale", "expired", "missing", "down"
INVALID, SOFT = "invalid", "soft"  # sealed with stamps replaced since: hard, or soft only
RESULT_TAGS = "result-tags"
RECHECK = "recheck"  # tagged from its result: its tags' stamps must be read before it is judged
# How an answer came about (the X-Cache value of a view's reply).
HIT, MISS, STALE_LABEL, BYPASS = b"HIT", b"MISS", b"STALE", b"BYPASS"
# Two more that producers tell apart (for Cache-Status), answered under an X-Cache value above.
COLLAPSED = b"COLLAPSED"  # a miss answered by a computation another request led
STALE_IF_ERROR = b"STALE-IF-ERROR"  # the computation failed: a stale entry stands in
X_CACHE = {
    HIT: HIT,
    MISS: MISS,
    STALE_LABEL: STALE_LABEL,
    BYPASS: BYPASS,
    COLLAPSED: HIT,
    STALE_IF_ERROR: STALE_LABEL,
}

LOCK_SUFFIX = ":lock"
_POLL = 0.025  # seconds between two looks at the store while another process fills
KEY_DEPS_MAX_BYTES = 4 * 1024 * 1024  # per cache: the stamps of hot store keys
URL_KEYS_MAX_BYTES = 8 * 1024 * 1024  # per cache: store keys of hot URLs
REPLIES_MAX_BYTES = 8 * 1024 * 1024  # per cache: reply headers of hot entries


class Producer(Protocol[R, A_co]):
    """What the engine needs of an adapter: compute a result, turn it into an entry, answer.

    ``R`` is what one computation returns (a view's rendered response, a function's
    value), ``A`` what the caller gets back.
    """

    async def compute(self, label: bytes) -> R:
        """Run the view or function once (``label``: the cache status its answer will carry)."""
        ...

    def failed(self, result: R) -> bool:
        """Whether ``result`` is a failure a stale entry should stand in for (a 5xx)."""
        ...

    def to_entry(self, result: R, cost: float) -> Entry | str:
        """The entry to store for ``result`` (which took ``cost`` seconds), or the not-stored
        reason code (:data:`cacheframe.stats.NOT_STORED_REASONS`) when it may not be stored."""
        ...

    def answer(self, entry: Entry, label: bytes) -> A_co:
        """An entry read, shared or kept as stale, as the caller's answer (raises
        ``EntryError`` when it cannot be used: then it counts as absent)."""
        ...

    def answer_result(self, result: R, entry: Entry | None, label: bytes, not_stored: str | None) -> A_co:
        """A result just computed as the caller's answer (``entry``: what was made of it;
        ``not_stored``: why it was not stored, None when it was or the store was bypassed)."""
        ...

    def stale_on_error(self, exc: Exception) -> bool:
        """Whether a stale entry may stand in when the computation raised ``exc``."""
        ...


class Bindable(Protocol):
    """A configured ``@cache(...)`` as the layers below the decorator see it: its policy, and
    the binding of a function it decorated to the current cache."""

    policy: Policy

    def bind(self, func: Any) -> Binding:
        """The current cache's view of ``func``."""
        ...


class Engine:
    """One per ``Cache``: the gateway, and the state of the fills it runs."""

    def __init__(self, gateway: StoreGateway, settings: CacheSettings, serializer: Serializer) -> None:
        self.gateway = gateway
        self.settings = settings
        self.serializer = serializer
        self.observer: Observer = gateway.observer
        self.flights = Flights()  # computations in flight, by key
        self.refreshing: dict[str, float] = {}  # keys with a background refresh under way, since
        # The longest computation of each decorated function seen here (seconds, by qualified
        # name): one never slower than stampede_lock_min_cost skips the store lock, since a
        # duplicate run costs less than the lock. One slow run is enough to lock its misses again.
        self.compute_cost: dict[str, float] = {}
        # Bumped by every invalidation: a fill started before one never writes back.
        self.epoch = 0
        # Called with (tags, soft) after each tag invalidation is durable (Cache.on_invalidate).
        self.invalidation_hooks: list[Callable[[list[str], bool], Any]] = []
        self._prefix = keys.safe_segment(settings.prefix)
        self.stamps = StampKeys(self._prefix, gateway.buckets)
        # The stamps of each store key's entries, as the full path found them: the fast path,
        # which sees no arguments, reads them from here (and passes a key not known yet on).
        self.key_deps: BytesMemo[str, Deps] = BytesMemo(KEY_DEPS_MAX_BYTES)
        self.timing: Timing | None = None  # fill and store-call durations, when an exporter asks
        # Store keys of requests keyed by their URL alone, by (namespace, method, scheme, host,
        # root path, path, query string); and a hit's reply headers by store key: (the entry,
        # its age in seconds, the headers). Owned here, bounded in bytes for the whole cache.
        self.url_keys: BytesMemo[tuple[str, str, str, str, str, str, bytes], str] = BytesMemo(
            URL_KEYS_MAX_BYTES
        )
        self.replies: BytesMemo[str, tuple[Entry, int, list[tuple[bytes, bytes]]]] = BytesMemo(
            REPLIES_MAX_BYTES
        )

    # -- keys and bindings ----------------------------------------------------------------

    def namespace_key(self, namespace: str | None) -> str:
        """The store namespace (ending in ``:``) for a namespace, or for all of this prefix."""
        if namespace is None:
            return f"{self._prefix}:"
        return f"{self._prefix}:{keys.safe_segment(namespace)}:"

    def key(self, namespace: str, name: str) -> str:
        """The full store key for ``name`` (any text) under ``namespace``."""
        return self.namespace_key(namespace) + keys.safe_segment(name)

    def bind(self, policy: Policy, qualname: str, identity: str, shared: bool) -> Binding:
        """A decorated function's view of this engine."""
        return Binding(
            engine=self,
            policy=policy,
            namespace=self.namespace_key(policy.namespace or qualname),
            qualname=qualname,
            stats_name=policy.namespace or qualname,
            ttl=ttl_seconds(policy.ttl, self.settings.default_ttl),
            serializer=self.resolve_serializer(policy.serializer),
            status_header=self.settings.cache_status_header.lower().encode("latin-1"),
            status_name=self.settings.cache_status_name.encode("ascii")
            if self.settings.cache_status
            else None,
            identity=identity,
            local_only=not shared,
            url_keys=self.url_keys,
            replies=self.replies,
        )

    def add_timing(self, timing: Timing) -> None:
        """Time fills and store calls for one more exporter (off until the first one asks)."""
        current = self.timing
        if current is None:
            combined: Timing = timing
        else:
            parts = current.parts if isinstance(current, Timings) else [current]
            combined = Timings([*parts, timing])
        self.timing = combined
        self.gateway.time_calls(combined)

    def resolve_serializer(self, serializer: str | Serializer | None) -> Serializer:
        """A decorator's serialiser: its own (by name or object) or the cache's."""
        if serializer is None:
            return self.serializer
        if isinstance(serializer, str):
            if serializer == self.serializer.name:
                return self.serializer
            secret = self.settings.secret.get_secret_value().encode() if self.settings.secret else None
            made: Serializer = load_serializer_factory(serializer)(secret=secret)
            return made
        return serializer

    # -- invalidation and refresh claims ----------------------------------------------------

    def remember_deps(self, key: str, deps: Deps) -> None:
        """Keep ``deps`` as the stamps of ``key``'s entries (for the fast path)."""
        if self.key_deps.get(key) is not deps:
            self.key_deps.put(key, deps, len(key) + 64)

    def invalidated(self) -> None:
        """Something was invalidated: fills running now must not write back."""
        self.epoch += 1

    async def invalidate(self, stamps: list[str], label: str, *, fail_open: bool = False) -> bool:
        """Replace ``stamps`` with fresh tokens: every entry sealed with them, in every process
        sharing the store, is invalid from the moment this returns. The write is durable
        before it returns; a store that cannot take it raises :class:`BackendError` (unless
        ``fail_open``: then False), however ``fail_open`` is set for reads."""
        self.invalidated()
        self.observer.on_invalidation(label)
        return await self._replace(stamps, fail_open)

    async def _replace(self, stamps: list[str], fail_open: bool) -> bool:
        """Fresh tokens for ``stamps`` (logical keys): written, or, with buckets, replacing every
        copy that exists (one token per stamp, the same in each bucket)."""
        fresh = dict(zip(stamps, _stamps.new_tokens(len(stamps)), strict=True))
        keys = self.stamps
        if keys.bucketed:
            fresh = {bucket + stamp: token for stamp, token in fresh.items() for bucket in keys.buckets}
        return await self.gateway.write_stamps(
            fresh, _stamps.STAMP_TTL, fail_open=fail_open, existing=keys.bucketed
        )

    async def _still_sealed(self, entry: Entry, sealing: Sealing | None) -> bool:
        """Whether each stamp this caller's lookup found absent now holds the token ``entry``
        (a leader's, which :func:`_follows` accepted) was sealed with. An absent stamp may
        since have been created by the leader, lost, and invalidated while absent (on a store
        with buckets an invalidation replaces only the copies that exist; anywhere, the loss
        may follow the invalidation): a stamp still holding the leader's token has held it
        since its creation (tokens are never reused), so no invalidation was lost. One read,
        only when a stamp was absent (a cold start)."""
        if sealing is None:
            return True
        deps, tokens = sealing
        absent = [i for i, token in enumerate(tokens[: len(deps.hard) + len(deps.soft)]) if token is None]
        if not absent:
            return True
        now = await self.gateway.read_tokens([deps.keys[i] for i in absent])
        if now is None:
            return False
        sealed = entry.seal.hard + entry.seal.soft
        size = _stamps.TOKEN_BYTES
        return all(
            token is not None and sealed[i * size : (i + 1) * size] == token
            for i, token in zip(absent, now, strict=True)
        )

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

    # -- lookup ---------------------------------------------------------------------------

    def classify(
        self,
        binding: Binding,
        key: str,
        entry: Read,
        kind: type,
        max_age: int | None = None,
        *,
        fast: bool = False,
        count: bool = True,
        sealing: Lookup | None = None,
        tag_tokens: list[bytes | None] | None = None,
    ) -> str:
        """What ``entry`` (read for ``key``) is worth: ``FRESH`` (counted as a hit unless not
        ``count``; ``fast``: on the fast path), ``STALE``, ``EXPIRED``, ``MISSING`` (absent, or
        of another ``kind``: counted as damaged) or ``DOWN`` (see ``_gateway.down``).

        ``max_age`` (a request's ``Cache-Control: max-age``) caps the age and rules out stale.
        With ``sealing`` (the stamps read with the entry), an entry not sealed with their
        tokens is ``INVALID`` (invalidated since: a miss, never stale), and one whose soft
        tokens alone changed is ``SOFT`` (invalidated softly: served stale while one refresh
        runs)."""
        if type(entry) is kind:
            # Tokens the entry's seal was already found to match (the same tuple, handed out
            # again by an in-process store while its stamps are unchanged) need no new check.
            if sealing is not None and (
                sealing[1] is not entry.checked or sealing[0] is not entry.checked_deps  # type: ignore[union-attr]
            ):
                judged = _judge_seal(entry, sealing[0], sealing[1], tag_tokens)  # type: ignore[arg-type]
                if judged is not None:
                    return judged
            now = time.time()
            policy = binding.policy
            if max_age is None and not policy.xfetch_beta and now - entry.created < entry.ttl:  # type: ignore[union-attr]
                if count:  # the hot path: no call beyond this one
                    self.observer.on_hit(binding.stats_name, self.gateway.tier, fast)
                return FRESH
            state = freshness(
                entry,  # type: ignore[arg-type]
                max_age=max_age,
                stale_while_revalidate=policy.stale_while_revalidate,
                xfetch_beta=policy.xfetch_beta,
                now=now,
            )
            if state is FRESH and count:
                self.observer.on_hit(binding.stats_name, self.gateway.tier, fast)
            return state
        if entry is None:
            return MISSING
        if entry is STORE_DOWN or entry is CIRCUIT_OPEN:
            return DOWN
        self.gateway.bad_entry(
            key, EntryError(f"a {type(entry).__name__} where a {kind.__name__} was expected")
        )
        return MISSING

    @staticmethod
    def usable_on_error(binding: Binding, entry: Entry) -> Entry | None:
        """``entry`` if it may still stand in for a failed computation (stale-if-error)."""
        return entry if entry.age() < entry.ttl + min(entry.stale, binding.policy.stale_if_error) else None

    def serve_stale(
        self,
        binding: Binding,
        key: str,
        entry: Entry,
        producer: Producer[Any, A],
        reason: str = stats.WHILE_REVALIDATE,
    ) -> tuple[A, bool]:
        """A stale entry as the answer, and whether this caller should now start the one
        background refresh (:meth:`refresh`) of ``key``; ``reason``: why it is stale
        (``while-revalidate``, or ``soft-invalidation``)."""
        answer = producer.answer(entry, STALE_LABEL)
        self.observer.on_stale(binding.stats_name, reason)
        return answer, self.claim_refresh(key)

    async def refresh(
        self, binding: Binding, key: str, producer: Producer[Any, Any], sealing: Sealing | None = None
    ) -> None:
        """The background refresh of a stale entry; a failure keeps the stale entry served.
        Logged by the exception's type (its text, which may quote the arguments, at DEBUG)."""
        try:
            await self.fill(binding, key, producer, None, sealing=sealing)
        except Exception as exc:
            log.warning(
                "cacheframe: background refresh of %s (%s) failed with %s; the stale entry stays served",
                binding.qualname,
                keys.loggable(key),
                type(exc).__name__,
            )
            log.debug("cacheframe: background refresh of %s failed", binding.qualname, exc_info=exc)
        finally:
            self.refreshing.pop(key, None)

    # -- fill -----------------------------------------------------------------------------

    async def fill(
        self,
        binding: Binding,
        key: str,
        producer: Producer[Any, A],
        stale: Entry | None,
        *,
        use_store: bool = True,
        reread: bool = False,
        sealing: Sealing | None = None,
    ) -> A:
        """A miss: share a computation already in flight, or lead one (under the store lock).

        ``sealing``: the stamps the lookup read with the entry and their tokens; the entry
        computed is sealed with them (see :mod:`cacheframe._stamps`), and an entry found
        meanwhile is used only if it was sealed with them too.

        The leader first looks at the store once more (``reread``): another request or
        process may have filled the entry since this caller's read. With ``use_store=False``
        (the store just failed) the computation is still shared in this process, but nothing
        is locked in or written to the store. ``stale`` stands in if the computation fails.
        """
        flights = self.flights
        pending = flights.pending(key, self.epoch)
        if pending is not None:
            shared = await follow(pending, self.settings.stampede_wait)
            # Only what was computed under the stamps this caller read: an invalidation made
            # (in any process) since the leader read them must not reach this caller.
            if shared is not None and _follows(shared, sealing) and await self._still_sealed(shared, sealing):
                try:
                    answer = producer.answer(shared, COLLAPSED if use_store else BYPASS)
                except EntryError:
                    pass
                else:
                    if use_store:
                        self.observer.on_collapsed(binding.stats_name)
                    _tag_caller(shared)
                    return answer
            seal = await self.seal(sealing) if use_store else NO_SEAL
            return (await self._compute(binding, key, producer, stale, use_store, None, seal, sealing))[0]
        future = flights.start(key, self.epoch)
        result: Entry | None = None
        try:
            # The tokens to seal with, read before computing (missing stamps created now).
            seal = await self.seal(sealing) if use_store else NO_SEAL
            if not use_store or not self._worth_locking(binding, stale):
                # In this process single-flight makes this the one computation; across
                # processes a duplicate run of a cheap one costs less than the lock would.
                answer, result = await self._compute(
                    binding, key, producer, stale, use_store, None, seal, sealing
                )
                return answer
            lock = StoreLock(self.gateway, key)
            try:
                held, current = await lock.acquire(reread)
                entry = current if _fresh(current) and await self._taken(current, seal, key) else None
                label = HIT  # found in the store on the re-read
                if entry is None and not held:  # another process computes: wait for its entry
                    entry = await self._wait_for_entry(key, seal)
                    label = COLLAPSED
                if entry is not None:
                    try:
                        answer = producer.answer(entry, label)
                    except EntryError:
                        pass
                    else:
                        result = entry
                        if label is HIT:
                            self.observer.on_hit(binding.stats_name, stats.TIER_STORE)
                        else:
                            self.observer.on_collapsed(binding.stats_name)
                        _tag_caller(entry)
                        return answer
                answer, result = await self._compute(
                    binding, key, producer, stale, use_store, lock, seal, sealing
                )
                return answer
            finally:
                await lock.release()
        finally:  # followers get the entry, or None (then compute themselves) after a failure
            flights.finish(key, future, result)

    def _worth_locking(self, binding: Binding, stale: Entry | None) -> bool:
        """Whether this miss takes the store lock: the backend has one, and the computation is
        not known to be cheap (its slowest run here, or the stale entry's, took at least
        ``stampede_lock_min_cost``; one not measured yet counts as slow)."""
        if self.gateway.lock is None:
            return False
        cost = self.compute_cost.get(binding.qualname)
        if stale is not None:  # measured where it was computed, maybe in another process
            cost = stale.delta if cost is None else max(cost, stale.delta)
        return cost is None or cost >= self.settings.stampede_lock_min_cost

    async def _compute(
        self,
        binding: Binding,
        key: str,
        producer: Producer[Any, A],
        stale: Entry | None,
        use_store: bool,
        lock: StoreLock | None = None,
        seal: Seal | None = NO_SEAL,
        sealing: Sealing | None = None,
    ) -> tuple[A, Entry | None]:
        """Compute once, stand a stale entry in for a failure, store what may be stored
        (sealed with ``seal``, the tokens read before; None: its stamps could not be made)."""
        label = MISS if use_store else BYPASS
        epoch, started = self.begin(binding, use_store)
        collected, token = _stamps.collect()  # tags the computation takes from its result
        try:
            if self.timing is None:
                result = await producer.compute(label)
            else:  # an exporter asked for fill durations
                with self.timing.fill(binding.stats_name):
                    result = await producer.compute(label)
        except Exception as exc:
            _stamps.stop_collecting(token)
            answer = self.instead_of_error(binding, stale, producer, exc)
            if answer is None:
                raise
            return answer, None
        _stamps.stop_collecting(token)
        if stale is not None and producer.failed(result):
            answer = self.stale_instead(binding, stale, producer, None)
            if answer is not None:
                return answer, None
        entry = self.made(binding, producer, result, started, use_store)
        if isinstance(entry, str):
            return producer.answer_result(result, None, label, entry if use_store else None), None
        not_stored = None
        unsealed: str = stats.STORE_DOWN  # its stamps could not be written: it would never be valid
        if use_store and collected and seal is not None:
            tagged = await self.tag_seal(binding, seal, sealing, collected)
            seal, unsealed = (None, tagged) if isinstance(tagged, str) else (tagged, unsealed)
        if use_store:
            if seal is None:
                not_stored = unsealed
                if unsealed != stats.STORE_DOWN:  # (a store failure is counted as one already)
                    self.observer.on_not_stored(binding.stats_name, unsealed)
                return producer.answer_result(result, entry, label, not_stored), None  # nor shared
            else:
                entry.seal = seal
                not_stored = await self.store(binding, key, entry, epoch, lock)
        return producer.answer_result(result, entry, label, not_stored), entry

    async def tag_seal(
        self, binding: Binding, seal: Seal, sealing: Sealing | None, collected: list[str]
    ) -> Seal | str:
        """``seal`` with the tags a computation took from its result, or why the entry must not
        be stored (a not-stored reason): its tag epoch changed while it ran (``invalidated``: a
        tag it learnt only now may have been invalidated meanwhile), it was not read (the
        function's first tagged result: later lookups read it), a tag is bad or there are too
        many (``result-tags``), or the store failed (``store-down``)."""
        names = list(dict.fromkeys(collected))
        try:
            for name in names:
                _stamps.check_tag(name)
        except ConfigurationError as exc:  # a tag built from data: the result is answered, not stored
            log.warning("cacheframe: %s tagged a result badly (%s): not stored", binding.qualname, exc)
            return stats.NS_RESULT_TAGS
        if len(names) > _stamps.MAX_TAGS:
            log.warning(
                "cacheframe: %s tagged a result with %d tags (at most %d): not stored",
                binding.qualname,
                len(names),
                _stamps.MAX_TAGS,
            )
            return stats.NS_RESULT_TAGS
        stamps = self.stamps
        bucket = "" if sealing is None else sealing[0].bucket
        epoch_key = bucket + stamps.epoch_key
        if sealing is None or not sealing[0].keys or sealing[0].keys[-1] != epoch_key:
            binding.learned.add(RESULT_TAGS)  # its lookups read the tag epoch from now on
            return stats.NS_RESULT_TAGS
        before = sealing[1][-1]
        keys = [*self._tag_stamps(names, bucket), epoch_key]
        tokens = await self.gateway.read_tokens(keys)
        if tokens is None:
            return stats.STORE_DOWN
        if before is None or tokens[-1] != before:
            return stats.NS_INVALIDATED
        missing = {keys[i]: token for i, token in enumerate(tokens[:-1]) if token is None}
        if missing:
            fresh = dict(zip(missing, _stamps.new_tokens(len(missing)), strict=True))
            held = await self.gateway.create_stamps(fresh, _stamps.STAMP_TTL)
            if held is None:
                return stats.STORE_DOWN
            tokens = [held.get(key, token) for key, token in zip(keys, tokens, strict=True)]
        n = len(names)
        return dataclasses.replace(
            seal,
            tags=tuple(names),
            tag_hard=b"".join(tokens[:n]),  # type: ignore[arg-type]
            tag_soft=b"".join(tokens[n : 2 * n]),  # type: ignore[arg-type]
        )

    def _tag_stamps(self, names: list[str] | tuple[str, ...], bucket: str) -> list[str]:
        """The hard stamps of the tags ``names``, then their soft ones, in ``bucket``."""
        pairs = [self.stamps.tag(name) for name in names]
        return [bucket + hard for hard, _ in pairs] + [bucket + soft for _, soft in pairs]

    async def result_tag_tokens(self, entry: Entry, bucket: str = "") -> list[bytes | None]:
        """The current tokens of the tags ``entry`` (in ``bucket``) took from its result (hard,
        then soft)."""
        keys = self._tag_stamps(entry.seal.tags, bucket)
        tokens = await self.gateway.read_tokens(keys)
        return tokens if tokens is not None else [None] * len(keys)

    async def invalidate_tags(self, tags: list[str], soft: bool) -> None:
        """Replace the tag epoch, then each tag's hard (or soft) stamp: a computation that
        takes its tags from its result and ran across this sees the epoch move."""
        stamps = self.stamps
        await self._replace([stamps.epoch_key], fail_open=False)  # counted once, below
        await self.invalidate([stamps.tag(name)[1 if soft else 0] for name in tags], "tags")
        for hook in self.invalidation_hooks:  # durable here: now tell what is in front (a CDN)
            try:
                done = hook(list(tags), soft)
                if inspect.isawaitable(done):
                    await done
            except Exception as exc:  # the invalidation itself holds: a hook failing is logged
                log.warning("cacheframe: on_invalidate hook %r failed for %s: %s", hook, tags, exc)

    async def seal(self, sealing: Sealing | None) -> Seal | None:
        """The seal of an entry computed from now on: the tokens its lookup read, a fresh one
        written first for each stamp that was missing. None when that write failed.

        A tag epoch created here is also filled into the lookup's tokens (``sealing``'s list):
        the computation starts after it existed, so :meth:`tag_seal` may check it against
        the epoch read once the computation is over (rather than not store the entry)."""
        if sealing is None:
            return NO_SEAL
        deps, tokens = sealing
        hard, soft = len(deps.hard), len(deps.soft)  # (the tag epoch, if read, is last: never sealed)
        missing = [i for i, token in enumerate(tokens) if token is None]
        if missing:
            read = tokens
            tokens = list(tokens)
            fresh = dict(zip((deps.keys[i] for i in missing), _stamps.new_tokens(len(missing)), strict=True))
            held = await self.gateway.create_stamps(fresh, _stamps.STAMP_TTL)
            if held is None:
                return None
            for i in missing:
                tokens[i] = held[deps.keys[i]]
            if len(read) > hard + soft and read[-1] is None:
                read[-1] = tokens[-1]
        return Seal(deps.digest, b"".join(tokens[:hard]), b"".join(tokens[hard : hard + soft]))  # type: ignore[arg-type]

    # The steps of a computation, shared by _compute and the sync shell of plain functions
    # (which runs the function in its caller's thread and only sequences these steps).

    def begin(self, binding: Binding, use_store: bool = True) -> tuple[int, float]:
        """A computation starts: counted as a miss (unless the store is bypassed); the
        invalidation epoch it must still be in to write back, and its start time."""
        if use_store:
            self.observer.on_miss(binding.stats_name)
        return self.epoch, time.perf_counter()

    def instead_of_error(
        self, binding: Binding, stale: Entry | None, producer: Producer[Any, A], exc: Exception
    ) -> A | None:
        """The stale entry standing in for a computation that raised ``exc``, or None (then
        the exception propagates)."""
        if stale is None or not producer.stale_on_error(exc):
            return None
        return self.stale_instead(binding, stale, producer, exc)

    def made(
        self, binding: Binding, producer: Producer[R, Any], result: R, started: float, use_store: bool = True
    ) -> Entry | str:
        """The entry of a computed result, or why it may not be stored (counted when the
        store was not bypassed); its cost is recorded for the store lock's rule."""
        cost = time.perf_counter() - started
        entry = producer.to_entry(result, cost)
        if isinstance(entry, str):
            if use_store:
                self.observer.on_not_stored(binding.stats_name, entry)
            return entry
        name = binding.qualname
        self.compute_cost[name] = max(cost, self.compute_cost.get(name, 0.0))
        return entry

    def stale_instead(
        self, binding: Binding, stale: Entry, producer: Producer[Any, A], exc: Exception | None
    ) -> A | None:
        """The stale entry as the answer to a failed computation, or None if it is unusable."""
        try:
            answer = producer.answer(stale, STALE_IF_ERROR)
        except EntryError:
            return None
        what = f"raised {type(exc).__name__}" if exc is not None else "failed"
        log.warning("cacheframe: %s %s; serving the stale entry (stale-if-error)", binding.qualname, what)
        if exc is not None:  # its text may quote the arguments: at DEBUG only
            log.debug("cacheframe: %s raised", binding.qualname, exc_info=exc)
        self.observer.on_stale(binding.stats_name, stats.IF_ERROR)
        return answer

    async def store(
        self, binding: Binding, key: str, entry: Entry, epoch: int, lock: StoreLock | None = None
    ) -> str | None:
        """Write ``entry`` unless something was invalidated since ``epoch``: a value computed
        before an invalidation never lands after it. None when written, else why not (a
        not-stored reason, counted, or ``store-down``/``breaker-open``, counted by the gateway)."""
        if self.epoch != epoch:
            self.observer.on_not_stored(binding.stats_name, stats.NS_INVALIDATED)
            return stats.NS_INVALIDATED
        if lock is not None:
            why = await lock.write(entry)  # with the lock's release, where the backend can
        else:
            why = await self.gateway.write(key, entry)
        if why == stats.NS_TOO_LARGE:
            self.observer.on_not_stored(binding.stats_name, why)
        return why

    async def _wait_for_entry(self, key: str, seal: Seal | None) -> Entry | None:
        """Poll the store for a fresh entry under ``key`` (sealed with ``seal``) until the lock
        lease has passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.lock_lease
        while loop.time() < deadline:
            await asyncio.sleep(_POLL)
            entry = await self.gateway.read_once(key)
            if _fresh(entry) and await self._taken(entry, seal, key):
                return entry
        return None

    async def _taken(self, entry: Entry, seal: Seal | None, key: str) -> bool:
        """Whether a fresh entry found in the store under ``key`` may answer this caller as its
        own: sealed with the tokens this caller read (``seal``: None, never), and, when it took
        tags from its result, holding those tags' current tokens (another process's computation
        took them; they may have been invalidated since it stored the entry)."""
        if seal is None:
            return False
        own = entry.seal
        if own.deps != seal.deps or own.hard != seal.hard or own.soft != seal.soft:
            return False
        if not own.tags:
            return True
        tokens = await self.result_tag_tokens(entry, self.stamps.bucket_of(key))
        if any(token is None for token in tokens):
            return False
        n = len(own.tags)
        return own.tag_hard == b"".join(tokens[:n]) and own.tag_soft == b"".join(tokens[n:])  # type: ignore[arg-type]


def _tag_caller(entry: Entry) -> None:
    """An entry computed elsewhere (in flight here, or by another process) answers this call:
    a cached computation running here and calling it depends on the tags that entry took
    from its result, as if the call had computed them itself."""
    if entry.seal.tags:
        _stamps.tag(*entry.seal.tags)


def _judge_seal(
    entry: Entry, deps: Deps, tokens: Sequence[bytes | None], tag_tokens: list[bytes | None] | None
) -> str | None:
    """What ``entry``'s seal says against the ``tokens`` of the stamps ``deps`` (and, for an
    entry tagged from its result, ``tag_tokens`` of those tags): None when it still holds,
    ``INVALID`` when a hard stamp changed or a stamp is missing, ``RECHECK`` when the result
    tags' tokens must be read first, ``SOFT`` when only soft stamps changed (every hard one
    checked first: a hard invalidation is never served stale). A match against a tuple of
    tokens is remembered on the entry (``checked``) so the same tuple is not checked again."""
    seal = entry.seal
    hard = len(deps.hard)
    read = tokens
    soft = False
    try:
        if len(tokens) > hard + len(deps.soft):  # the tag epoch, read last
            tokens = tokens[:-1]
        if seal.hard != b"".join(tokens[:hard]) or seal.deps != deps.digest:  # type: ignore[arg-type]
            return INVALID
        if hard != len(tokens):  # soft stamps (tags)
            soft = seal.soft != b"".join(tokens[hard:])  # type: ignore[arg-type]
        if seal.tags:  # tagged from its result: judged by those tags' stamps too
            if tag_tokens is None:
                return RECHECK
            n = len(seal.tags)
            if seal.tag_hard != b"".join(tag_tokens[:n]):  # type: ignore[arg-type]
                return INVALID
            soft = soft or seal.tag_soft != b"".join(tag_tokens[n:])  # type: ignore[arg-type]
    except TypeError:  # a stamp is missing: nothing sealed under it is valid
        return INVALID
    if soft:
        return SOFT if entry.age() < entry.ttl + entry.stale else INVALID
    if not seal.tags and type(read) is tuple:  # (result tags: their tokens are read apart)
        entry.checked, entry.checked_deps = read, deps
    return None


def _follows(entry: Entry, sealing: Sealing | None) -> bool:
    """Whether ``entry`` (a leader's) was computed under the stamps this follower read: each
    token it read is the one the leader sealed, or was absent (the leader created it after:
    :meth:`Engine._still_sealed` then checks it still holds the leader's token). A follower
    may then take it as its own."""
    if sealing is None:
        return True
    deps, tokens = sealing
    seal = entry.seal
    if seal.deps != deps.digest:
        return False
    sealed = seal.hard + seal.soft
    size = _stamps.TOKEN_BYTES
    for i, token in enumerate(tokens[: len(deps.hard) + len(deps.soft)]):
        if token is not None and sealed[i * size : (i + 1) * size] != token:
            return False
    return True


def _fresh(entry: Read) -> TypeGuard[Entry]:
    return (
        entry is not None
        and entry is not STORE_DOWN
        and entry is not CIRCUIT_OPEN
        and entry.age() < entry.ttl  # type: ignore[union-attr]
    )


@dataclass(frozen=True, slots=True)
class Binding:
    """A decorated function's view of one cache: its policy, key namespace, ttl and
    serialiser, computed once per cache, and the memos that save its hits work."""

    engine: Engine
    policy: Policy
    namespace: str
    qualname: str  # module.qualname of the function
    stats_name: str  # its namespace as counters name it: @cache(namespace=...), else the qualname
    ttl: float
    serializer: Serializer
    status_header: bytes
    status_name: bytes | None  # the cache's name in Cache-Status; None: no Cache-Status
    identity: str = ""  # keys.function_identity: part of every plain-function key ("" = qualname)
    local_only: bool = False  # the identity holds a per-process token: entries are not shared
    # The one-time warnings already logged for this function (a few short names).
    warned: set[str] = field(default_factory=set, compare=False, hash=False)
    # The names of the path parameters of the routes serving this view, as requests showed
    # them (a view's resource is its path parameters: ``view.invalidate`` checks against them).
    path_names: set[tuple[str, ...]] = field(default_factory=set, compare=False, hash=False)
    # The field FastAPI validates each path parameter with on those routes (by its name in the
    # path): ``view.invalidate(user_id="5")`` converts by it, as the request did.
    path_fields: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # What this function showed it does: RESULT_TAGS once it tagged a result.
    learned: set[str] = field(default_factory=set, compare=False, hash=False)

    @property
    def tags_results(self) -> bool:
        """Whether its results carry tags (its lookups then read the tag epoch)."""
        return self.policy.result_tags is not None or RESULT_TAGS in self.learned

    # The engine's memos, shared by its bindings (one byte budget per cache, however many
    # functions are decorated): store keys of URLs, and hits' reply headers.
    url_keys: BytesMemo[tuple[str, str, str, str, str, str, bytes], str] = field(
        compare=False, hash=False, kw_only=True
    )
    replies: BytesMemo[str, tuple[Entry, int, list[tuple[bytes, bytes]]]] = field(
        compare=False, hash=False, kw_only=True
    )


class Flights:
    """In-flight computations by key, with the invalidation epoch each began in; a future
    only counts within the loop that made it, and within its epoch."""

    def __init__(self) -> None:
        self._table: dict[str, tuple[asyncio.Future[Any], int]] = {}

    def pending(self, key: str, epoch: int) -> asyncio.Future[Any] | None:
        """The future of a computation already running for ``key`` in the running loop, begun
        in ``epoch``: one begun before an invalidation is not shared with a caller after it."""
        flight = self._table.get(key)
        if flight is None or flight[1] != epoch or flight[0].get_loop() is not asyncio.get_running_loop():
            return None
        return flight[0]

    def start(self, key: str, epoch: int) -> asyncio.Future[Any] | None:
        """Register as the computation for ``key`` begun in ``epoch``, taking over from one begun
        before an invalidation (its own followers still get its result); ``None`` when another
        loop's is running (a sync function's portal, say): do not share across loops."""
        loop = asyncio.get_running_loop()
        current = self._table.get(key)
        if current is not None:
            running, began = current
            if not running.done() and (began == epoch or running.get_loop() is not loop):
                return None
        future: asyncio.Future[Any] = loop.create_future()
        self._table[key] = (future, epoch)
        return future

    def finish(self, key: str, future: asyncio.Future[Any] | None, result: Any = None) -> None:
        """Publish ``result`` (if not already) and unregister."""
        if future is None:
            return
        if not future.done():
            future.set_result(result)
        current = self._table.get(key)
        if current is not None and current[0] is future:
            del self._table[key]


async def follow(future: asyncio.Future[Any], wait: float) -> Any:
    """The leader's result, or ``None`` after ``wait`` seconds (then compute yourself)."""
    try:
        return await asyncio.wait_for(asyncio.shield(future), wait)
    except TimeoutError:
        return None


class StoreLock:
    """The store lock of one miss, for backends with ``SupportsLock``.

    Taken together with a re-read of the entry and released together with its write
    when the backend offers ``SupportsLockRoundTrips`` (two round trips for a locked
    miss instead of four). Every step fails open: a lock that cannot be taken counts as
    held, so the caller computes rather than waits for nobody.
    """

    def __init__(self, gateway: StoreGateway, key: str) -> None:
        self.gateway = gateway
        self.key = key
        self.lock_key = key + LOCK_SUFFIX
        self.token = secrets.token_hex(16)
        self.held = False

    async def acquire(self, reread: bool) -> tuple[bool, Read]:
        """Take the lock; ``(held, entry)``, the entry re-read with it when ``reread``."""
        held, entry = await self.gateway.acquire_lock(self.lock_key, self.token, self.key if reread else None)
        self.held = held
        return held, entry

    async def write(self, entry: Entry) -> str | None:
        """Store ``entry``; release the lock in the same round trip when the backend can.
        None when stored, else why not (as ``StoreGateway.write``)."""
        gateway = self.gateway
        if self.held and gateway.lock_round_trips is not None:
            why = await gateway.write(self.key, entry, unlock=(self.lock_key, self.token))
            if why is None:
                self.held = False  # released with the write; otherwise release() tries again
            return why
        return await gateway.write(self.key, entry)

    async def release(self) -> None:
        """Release the lock if still held (always tried, never raises when failing open)."""
        if self.held:
            self.held = False
            await self.gateway.release_lock(self.lock_key, self.token)
