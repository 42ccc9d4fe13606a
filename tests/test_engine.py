"""The read/fill engine alone, over a fake producer and the memory store: classify,
single-flight, the store lock, stale-if-error, the invalidation epoch and refresh claims.

No FastAPI and no HTTP: the engine decides when to compute, read and write; the fake says
how, and counts what it was asked (the way dogpile tests its ``Lock`` over callables).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from cacheframe import envelope, stats
from cacheframe._engine import (
    BYPASS,
    COLLAPSED,
    DOWN,
    EXPIRED,
    FRESH,
    HIT,
    LOCK_SUFFIX,
    MISS,
    MISSING,
    STALE,
    STALE_IF_ERROR,
    STALE_LABEL,
    X_CACHE,
    Engine,
)
from cacheframe._gateway import CIRCUIT_OPEN, STORE_DOWN, Entry
from cacheframe.backends.memory import MemoryBackend
from cacheframe.envelope import ValueEntry
from cacheframe.exceptions import BackendError, EntryError
from engines import FUNC, counts, new_binding, new_engine, response_entry, settle, value_entry

KEY = "cf:mod.f:k"
LOCK = KEY + LOCK_SUFFIX


@dataclass
class Answer:
    """What the fake producer answers: the label, the value, its entry, and why it was not stored."""

    label: bytes
    value: Any
    entry: Entry | None
    not_stored: str | None = None


class Fake:
    """A producer of numbers: ``compute`` counts its calls and returns ``value``, unless
    ``outcomes`` says otherwise for the first calls (a number, or an exception to raise);
    a number of 500 or more is a failed result (a 5xx), not stored for its ``status``."""

    def __init__(
        self,
        engine: Engine,
        value: int = 1,
        *,
        outcomes: Sequence[int | Exception] = (),
        hold: asyncio.Event | None = None,
        storable: bool = True,
        usable: bool = True,
        stale_on_error: bool = True,
    ) -> None:
        self.serializer = engine.serializer
        self.value = value
        self.outcomes = list(outcomes)
        self.hold = hold  # the first computation waits for it
        self.storable = storable  # to_entry gives an entry, else the reason "unserializable"
        self.usable = usable  # answer can use an entry read, shared or kept as stale
        self.stale_ok = stale_on_error
        self.calls = 0
        self.labels: list[bytes] = []
        self.running = asyncio.Event()  # set when the first computation starts

    async def compute(self, label: bytes) -> int:
        self.calls += 1
        call = self.calls
        self.labels.append(label)
        if call == 1:
            self.running.set()
            if self.hold is not None:
                await self.hold.wait()
        outcome = self.outcomes[call - 1] if call <= len(self.outcomes) else self.value
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def failed(self, result: int) -> bool:
        return result >= 500

    def to_entry(self, result: int, cost: float) -> Entry | str:
        if self.failed(result):
            return stats.NS_STATUS
        if not self.storable:
            return stats.NS_UNSERIALIZABLE
        return ValueEntry(self.serializer.name, self.serializer.dumps(result), time.time(), 60.0, 30.0, cost)

    def answer(self, entry: Entry, label: bytes) -> Answer:
        if not self.usable or type(entry) is not ValueEntry:
            raise EntryError("cannot use this entry")
        return Answer(label, self.serializer.loads(entry.payload), entry)

    def answer_result(self, result: int, entry: Entry | None, label: bytes, not_stored: str | None) -> Answer:
        return Answer(label, result, entry, not_stored)

    def stale_on_error(self, exc: Exception) -> bool:
        return self.stale_ok


class LockingMemory(MemoryBackend):
    """The memory store with the lease lock a shared store offers (``SupportsLock``), recording
    the lock keys it was asked to take and to release."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[str] = []
        self.releases: list[str] = []

    async def acquire_lock(self, key: str, token: str, lease: float) -> bool:
        self.attempts.append(key)
        return await self.add(key, token.encode(), lease)

    async def release_lock(self, key: str, token: str) -> bool:
        self.releases.append(key)
        if self.get_nowait(key) != token.encode():
            return False
        return await self.delete(key)


class RoundTripLockingMemory(LockingMemory):
    """``LockingMemory`` whose lock travels with the entry's read and write
    (``SupportsLockRoundTrips``)."""

    async def acquire_lock_and_get(
        self, lock_key: str, token: str, lease: float, key: str
    ) -> tuple[bool, bytes | None]:
        return await self.acquire_lock(lock_key, token, lease), self.get_nowait(key)

    async def set_and_release_lock(
        self, key: str, value: bytes, ttl: float | None, lock_key: str, token: str
    ) -> bool:
        await self.set(key, value, ttl)
        return await self.release_lock(lock_key, token)


LOCKING = [LockingMemory, RoundTripLockingMemory]


async def _fill_together(engine: Engine, fake: Fake, count: int, *, use_store: bool = True) -> list[Any]:
    """``count`` concurrent fills of ``KEY``, all started before the first computation (held by
    ``fake.hold``) may finish; their answers, or what they raised."""
    binding = new_binding(engine)
    fills = [
        asyncio.create_task(engine.fill(binding, KEY, fake, None, use_store=use_store)) for _ in range(count)
    ]
    await fake.running.wait()
    await settle()
    assert fake.hold is not None
    fake.hold.set()
    return await asyncio.gather(*fills, return_exceptions=True)


def _stored(store: MemoryBackend, key: str = KEY) -> Any:
    """The value stored under ``key`` (a JSON number), or None."""
    raw = store.get_nowait(key)
    if raw is None:
        return None
    entry = envelope.decode(raw)
    assert isinstance(entry, ValueEntry)
    return int(entry.payload)


# -- classify ----------------------------------------------------------------------------------


def test_classify_fresh_counts_a_hit() -> None:
    """An entry younger than its ttl is fresh, and counted as a hit read from the store."""
    engine = new_engine(MemoryBackend())
    binding = new_binding(engine, stale_while_revalidate=30)
    assert engine.classify(binding, KEY, value_entry(age=1, stale=30), ValueEntry) == FRESH
    assert counts(engine).hits == 1 and counts(engine).fast_hits == 0
    assert counts(engine).requests == {(FUNC, stats.HIT, stats.TIER_STORE): 1}


def test_classify_counts_fast_hits_and_leaves_uncounted_ones_out() -> None:
    """A fresh entry classified with ``fast`` counts a fast hit too; with ``count=False`` nothing."""
    engine = new_engine(MemoryBackend())
    binding = new_binding(engine)
    assert engine.classify(binding, KEY, value_entry(), ValueEntry, fast=True) == FRESH
    assert engine.classify(binding, KEY, value_entry(), ValueEntry, count=False) == FRESH
    assert (counts(engine).hits, counts(engine).fast_hits) == (1, 1)
    assert counts(engine).requests == {(FUNC, stats.HIT, stats.TIER_STORE): 1}


def test_classify_stale_expired_missing_down_count_no_hit() -> None:
    """Past its ttl an entry is stale within the policy's window, then expired; None is missing,
    STORE_DOWN and CIRCUIT_OPEN down; none of these is a hit or a damaged entry."""
    engine = new_engine(MemoryBackend())
    binding = new_binding(engine, stale_while_revalidate=30)
    assert engine.classify(binding, KEY, value_entry(age=70, stale=30), ValueEntry) == STALE
    assert engine.classify(binding, KEY, value_entry(age=100, stale=30), ValueEntry) == EXPIRED
    assert engine.classify(binding, KEY, None, ValueEntry) == MISSING
    assert engine.classify(binding, KEY, STORE_DOWN, ValueEntry) == DOWN
    assert engine.classify(binding, KEY, CIRCUIT_OPEN, ValueEntry) == DOWN
    assert counts(engine).hits == 0 and counts(engine).bad_entries == 0 and counts(engine).requests == {}


def test_classify_stale_needs_both_windows() -> None:
    """An entry kept past its ttl is stale only within the shorter of the entry's and the
    policy's stale windows."""
    engine = new_engine(MemoryBackend())
    no_window = new_binding(engine)
    assert engine.classify(no_window, KEY, value_entry(age=70, stale=30), ValueEntry) == EXPIRED
    window = new_binding(engine, stale_while_revalidate=30)
    assert engine.classify(window, KEY, value_entry(age=70, stale=5), ValueEntry) == EXPIRED


def test_classify_other_kind_counts_as_damaged() -> None:
    """An entry of another kind under the key is missing for this caller and counted as damaged."""
    engine = new_engine(MemoryBackend())
    binding = new_binding(engine)
    assert engine.classify(binding, KEY, response_entry(), ValueEntry) == MISSING
    assert counts(engine).bad_entries == 1 and counts(engine).hits == 0


def test_classify_max_age_caps_the_age_and_rules_out_stale() -> None:
    """A request's max-age makes an older entry expired, a younger one fresh (a hit), and a
    stale one expired."""
    engine = new_engine(MemoryBackend())
    binding = new_binding(engine, stale_while_revalidate=30)
    entry = value_entry(age=10, stale=30)
    assert engine.classify(binding, KEY, entry, ValueEntry, max_age=5) == EXPIRED
    assert counts(engine).hits == 0
    assert engine.classify(binding, KEY, entry, ValueEntry, max_age=20) == FRESH
    assert counts(engine).hits == 1
    stale = value_entry(age=70, stale=30)
    assert engine.classify(binding, KEY, stale, ValueEntry, max_age=1000) == EXPIRED


async def test_a_filled_entry_reads_back_fresh() -> None:
    """What a fill writes, read through the gateway, classifies as fresh."""
    store = MemoryBackend()
    engine = new_engine(store)
    binding = new_binding(engine)
    await engine.fill(binding, KEY, Fake(engine, 4), None)
    assert engine.classify(binding, KEY, engine.gateway.peek(KEY), ValueEntry) == FRESH


# -- single-flight -------------------------------------------------------------------------------


async def test_concurrent_fills_of_one_key_compute_once() -> None:
    """Ten concurrent misses of one key run one computation; the others answer its entry COLLAPSED."""
    engine = new_engine(MemoryBackend())
    fake = Fake(engine, 7, hold=asyncio.Event())
    answers = await _fill_together(engine, fake, 10)
    assert fake.calls == 1 and {a.value for a in answers} == {7}
    assert collections.Counter(a.label for a in answers) == {MISS: 1, COLLAPSED: 9}
    assert X_CACHE[COLLAPSED] == HIT
    counted = counts(engine)
    assert (counted.misses, counted.hits, counted.stores) == (1, 9, 1)
    assert counted.requests == {(FUNC, stats.MISS, ""): 1, (FUNC, stats.COLLAPSED, ""): 9}


async def test_followers_of_a_failed_leader_compute_themselves() -> None:
    """When the leading computation raises, it raises for its caller alone; each follower
    computes for itself."""
    engine = new_engine(MemoryBackend())
    fake = Fake(engine, 7, outcomes=[RuntimeError("boom")], hold=asyncio.Event())
    leader, *followers = await _fill_together(engine, fake, 4)
    assert isinstance(leader, RuntimeError)
    assert all(isinstance(a, Answer) and (a.label, a.value) == (MISS, 7) for a in followers)
    assert fake.calls == 4 and counts(engine).requests == {(FUNC, stats.MISS, ""): 4}


async def test_followers_of_an_unstorable_result_compute_themselves() -> None:
    """A leader whose result makes no entry has nothing to share: followers compute."""
    engine = new_engine(MemoryBackend())
    fake = Fake(engine, 7, hold=asyncio.Event(), storable=False)
    answers = await _fill_together(engine, fake, 3)
    assert fake.calls == 3 and [a.label for a in answers] == [MISS] * 3
    assert counts(engine).not_stored_by == {(FUNC, stats.NS_UNSERIALIZABLE): 3}


async def test_followers_that_cannot_use_the_shared_entry_compute_themselves() -> None:
    """A follower whose producer cannot use the leader's entry computes instead of failing."""
    engine = new_engine(MemoryBackend())
    fake = Fake(engine, 7, hold=asyncio.Event(), usable=False)
    answers = await _fill_together(engine, fake, 3)
    assert fake.calls == 3 and {a.value for a in answers} == {7} and counts(engine).hits == 0


async def test_follower_waiting_past_stampede_wait_computes_itself() -> None:
    """A follower gives up on a leader slower than ``stampede_wait`` and computes; the leader
    goes on."""
    engine = new_engine(MemoryBackend(), stampede_wait=0.05)
    binding = new_binding(engine)
    hold = asyncio.Event()
    fake = Fake(engine, 7, hold=hold)
    leader = asyncio.create_task(engine.fill(binding, KEY, fake, None))
    await fake.running.wait()
    follower = await engine.fill(binding, KEY, fake, None)
    assert (follower.label, follower.value) == (MISS, 7) and fake.calls == 2 and not leader.done()
    hold.set()
    assert (await leader).label == MISS


async def test_fills_of_other_keys_do_not_share() -> None:
    """Concurrent misses of two keys run two computations."""
    engine = new_engine(MemoryBackend())
    binding = new_binding(engine)
    fake = Fake(engine, 7)
    await asyncio.gather(engine.fill(binding, KEY, fake, None), engine.fill(binding, KEY + "2", fake, None))
    assert fake.calls == 2


# -- the store lock ------------------------------------------------------------------------------


@pytest.mark.parametrize("store_class", LOCKING)
async def test_a_miss_takes_and_releases_the_store_lock(store_class: type[LockingMemory]) -> None:
    """A miss on a store with a lock takes ``<key>:lock``, writes its entry, and frees the lock."""
    store = store_class()
    engine = new_engine(store)
    answer = await engine.fill(new_binding(engine), KEY, Fake(engine, 7), None, reread=True)
    assert (answer.label, answer.value) == (MISS, 7)
    assert store.attempts == [LOCK] and store.releases == [LOCK]
    assert store.get_nowait(LOCK) is None and _stored(store) == 7


@pytest.mark.parametrize("store_class", LOCKING)
async def test_lock_held_elsewhere_waits_for_the_entry(store_class: type[LockingMemory]) -> None:
    """While another process holds the lock, a miss waits and answers the entry that process
    writes, as COLLAPSED, without computing and without touching that process's lock."""
    store = store_class()
    engine = new_engine(store)
    await store.acquire_lock(LOCK, "other", 60)
    fake = Fake(engine, 7)
    fill = asyncio.create_task(engine.fill(new_binding(engine), KEY, fake, None, reread=True))
    while len(store.attempts) < 2:
        await asyncio.sleep(0)
    await store.set(KEY, envelope.encode(value_entry(b"9")), 60)  # the other process's entry
    answer = await fill
    assert (answer.label, answer.value) == (COLLAPSED, 9) and fake.calls == 0
    assert counts(engine).hits == 1 and counts(engine).requests == {(FUNC, stats.COLLAPSED, ""): 1}
    assert store.releases == [] and store.get_nowait(LOCK) == b"other"


@pytest.mark.parametrize("store_class", LOCKING)
async def test_lock_held_elsewhere_computes_once_the_lease_passes(store_class: type[LockingMemory]) -> None:
    """If no entry appears within the lock lease (its holder died), the waiting miss computes."""
    store = store_class()
    engine = new_engine(store, lock_lease=0.1)
    await store.acquire_lock(LOCK, "other", 60)
    fake = Fake(engine, 7)
    answer = await engine.fill(new_binding(engine), KEY, fake, None, reread=True)
    assert (answer.label, answer.value) == (MISS, 7) and fake.calls == 1 and _stored(store) == 7


@pytest.mark.parametrize("store_class", LOCKING)
async def test_lock_then_reread_finds_the_entry_of_another_process(store_class: type[LockingMemory]) -> None:
    """A miss that gets the lock but finds the entry written meanwhile answers it and computes nothing."""
    store = store_class()
    engine = new_engine(store)
    await store.set(KEY, envelope.encode(value_entry(b"9")), 60)
    fake = Fake(engine, 7)
    answer = await engine.fill(new_binding(engine), KEY, fake, None, reread=True)
    assert (answer.label, answer.value) == (HIT, 9) and fake.calls == 0
    assert counts(engine).requests == {(FUNC, stats.HIT, stats.TIER_STORE): 1}
    assert store.releases == [LOCK] and store.get_nowait(LOCK) is None


async def test_cheap_computations_skip_the_lock() -> None:
    """Once a function is known to compute faster than ``stampede_lock_min_cost`` its misses skip
    the lock; one not measured yet, or a stale entry that took long, takes it."""
    store = LockingMemory()
    engine = new_engine(store, stampede_lock_min_cost=60.0)
    binding = new_binding(engine)
    await engine.fill(binding, KEY, Fake(engine), None)  # cost unknown: locked
    assert store.attempts == [LOCK]
    await engine.fill(binding, "cf:mod.f:b", Fake(engine), None)  # known cheap: not locked
    assert store.attempts == [LOCK]
    slow = value_entry(age=100, stale=30, delta=90.0)
    await engine.fill(binding, "cf:mod.f:c", Fake(engine), slow)  # took 90 s elsewhere: locked
    assert store.attempts == [LOCK, "cf:mod.f:c" + LOCK_SUFFIX]
    other = engine.bind(binding.policy, "mod.g", "", True)
    await engine.fill(other, "cf:mod.g:k", Fake(engine), None)  # another function: unknown
    assert len(store.attempts) == 3


async def test_stampede_lock_off_takes_no_lock() -> None:
    """With ``stampede_lock=False`` a store with a lock is never asked for it."""
    store = LockingMemory()
    engine = new_engine(store, stampede_lock=False)
    await engine.fill(new_binding(engine), KEY, Fake(engine), None)
    assert store.attempts == [] and _stored(store) == 1


# -- stale-if-error ------------------------------------------------------------------------------


def _stale() -> ValueEntry:
    """An entry 10 s past its 60 s ttl, kept 30 s more."""
    return value_entry(b"3", age=70, stale=30)


async def test_exception_serves_the_stale_entry() -> None:
    """A computation that raises is answered with the stale entry, counted as stale, nothing stored."""
    store = MemoryBackend()
    engine = new_engine(store)
    fake = Fake(engine, outcomes=[RuntimeError("boom")])
    answer = await engine.fill(new_binding(engine, stale_if_error=30), KEY, fake, _stale())
    assert (answer.label, answer.value) == (STALE_IF_ERROR, 3) and X_CACHE[STALE_IF_ERROR] == STALE_LABEL
    assert counts(engine).stale == 1 and counts(engine).stores == 0 and _stored(store) is None
    assert counts(engine).requests == {(FUNC, stats.MISS, ""): 1, (FUNC, stats.STALE, stats.IF_ERROR): 1}


@pytest.mark.parametrize(
    ("stale_on_error", "usable"), [(False, True), (True, False)], ids=["refused", "unusable"]
)
async def test_exception_raises_when_stale_cannot_stand_in(stale_on_error: bool, usable: bool) -> None:
    """A producer refusing stale for this exception (``stale_on_error`` False), or unable to use
    the stale entry (its answer raises EntryError), gets the computation's exception."""
    engine = new_engine(MemoryBackend())
    fake = Fake(engine, outcomes=[RuntimeError("boom")], stale_on_error=stale_on_error, usable=usable)
    with pytest.raises(RuntimeError, match="boom"):
        await engine.fill(new_binding(engine, stale_if_error=30), KEY, fake, _stale())
    assert counts(engine).stale == 0


async def test_exception_without_a_stale_entry_raises() -> None:
    """With no stale entry to stand in, the computation's exception is raised."""
    engine = new_engine(MemoryBackend())
    with pytest.raises(RuntimeError, match="boom"):
        await engine.fill(new_binding(engine), KEY, Fake(engine, outcomes=[RuntimeError("boom")]), None)


async def test_failed_result_serves_the_stale_entry() -> None:
    """A result the producer calls failed (a 5xx) is replaced by the stale entry."""
    engine = new_engine(MemoryBackend())
    fake = Fake(engine, outcomes=[503])
    answer = await engine.fill(new_binding(engine, stale_if_error=30), KEY, fake, _stale())
    assert (answer.label, answer.value) == (STALE_IF_ERROR, 3) and counts(engine).stale == 1


async def test_failed_result_without_a_stale_entry_is_answered() -> None:
    """With no stale entry a failed result is the answer, not stored for its status."""
    engine = new_engine(MemoryBackend())
    answer = await engine.fill(new_binding(engine), KEY, Fake(engine, outcomes=[503]), None)
    assert (answer.label, answer.value, answer.entry, answer.not_stored) == (MISS, 503, None, stats.NS_STATUS)
    assert counts(engine).not_stored == 1 and counts(engine).not_stored_by == {(FUNC, stats.NS_STATUS): 1}


async def test_unusable_stale_entry_leaves_a_failed_result_answered() -> None:
    """A stale entry the producer cannot use leaves the failed result as the answer."""
    engine = new_engine(MemoryBackend())
    fake = Fake(engine, outcomes=[503], usable=False)
    answer = await engine.fill(new_binding(engine, stale_if_error=30), KEY, fake, _stale())
    assert (answer.label, answer.value) == (MISS, 503) and counts(engine).stale == 0


def test_usable_on_error_is_bounded_by_stale_if_error() -> None:
    """An entry stands in for a failure only within ttl plus the shorter of its stale window and
    the policy's ``stale_if_error``."""
    engine = new_engine(MemoryBackend())
    binding = new_binding(engine, stale_if_error=20)
    within = value_entry(age=70, stale=30)
    assert engine.usable_on_error(binding, within) is within
    assert engine.usable_on_error(binding, value_entry(age=85, stale=30)) is None
    assert engine.usable_on_error(new_binding(engine), within) is None


# -- the invalidation epoch ----------------------------------------------------------------------


async def test_invalidation_during_a_computation_is_not_overwritten() -> None:
    """A value computed across an invalidation is answered but not written (counted not_stored)."""
    store = MemoryBackend()
    engine = new_engine(store)
    hold = asyncio.Event()
    fake = Fake(engine, 7, hold=hold)
    fill = asyncio.create_task(engine.fill(new_binding(engine), KEY, fake, None))
    await fake.running.wait()
    engine.invalidated()
    hold.set()
    answer = await fill
    assert (answer.label, answer.value) == (MISS, 7) and answer.entry is not None
    assert answer.not_stored == stats.NS_INVALIDATED
    assert counts(engine).not_stored_by == {(FUNC, stats.NS_INVALIDATED): 1}
    assert counts(engine).stores == 0 and _stored(store) is None


async def test_fill_started_after_an_invalidation_is_stored() -> None:
    """Only fills running across an invalidation are held back; the next one writes."""
    store = MemoryBackend()
    engine = new_engine(store)
    engine.invalidated()
    answer = await engine.fill(new_binding(engine), KEY, Fake(engine, 7), None)
    assert _stored(store) == 7 and answer.not_stored is None and counts(engine).not_stored == 0


# -- writes that do not land ----------------------------------------------------------------------


class RefusingMemory(MemoryBackend):
    """The memory store refusing every write, as a store that is down would."""

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        raise BackendError("store down")


async def test_an_entry_not_written_is_answered_with_why() -> None:
    """A write the store refuses answers store-down (a store error); one too large, too-large (not stored)."""
    engine = new_engine(RefusingMemory())
    binding = new_binding(engine)
    answer = await engine.fill(binding, KEY, Fake(engine, 7), None)
    assert (answer.label, answer.value, answer.not_stored) == (MISS, 7, stats.STORE_DOWN)
    assert counts(engine).store_errors == {"set": 1} and counts(engine).not_stored == 0
    large = response_entry()
    large.headers.append((b"x-big", b"v" * 70_000))  # over the envelope's 64 KiB field
    assert await engine.store(binding, KEY, large, engine.epoch) == stats.NS_TOO_LARGE
    assert counts(engine).not_stored_by == {(FUNC, stats.NS_TOO_LARGE): 1}


# -- stale serving and refresh claims ------------------------------------------------------------


def test_one_refresh_claim_per_key() -> None:
    """The first claim of a key wins, later ones lose while it runs; other keys are apart."""
    engine = new_engine(MemoryBackend())
    assert engine.claim_refresh(KEY) and not engine.claim_refresh(KEY)
    assert engine.claim_refresh(KEY + "2")


def test_lost_refresh_claim_is_taken_over_after_the_lease() -> None:
    """A claim older than ``lock_lease`` (its task never ran) may be taken over."""
    engine = new_engine(MemoryBackend())
    assert engine.claim_refresh(KEY)
    engine.refreshing[KEY] -= engine.settings.lock_lease
    assert engine.claim_refresh(KEY) and not engine.claim_refresh(KEY)


def test_serve_stale_answers_and_claims_once() -> None:
    """Serving stale answers the entry labelled STALE, counts it (while-revalidate), and asks the
    first caller alone to refresh."""
    engine = new_engine(MemoryBackend())
    binding = new_binding(engine)
    fake = Fake(engine)
    answer, refresh = engine.serve_stale(binding, KEY, _stale(), fake)
    assert (answer.label, answer.value, refresh) == (STALE_LABEL, 3, True)
    assert engine.serve_stale(binding, KEY, _stale(), fake)[1] is False
    assert counts(engine).stale == 2 and fake.calls == 0
    assert counts(engine).requests == {(FUNC, stats.STALE, stats.WHILE_REVALIDATE): 2}


async def test_refresh_stores_and_releases_its_claim() -> None:
    """A background refresh computes, writes the new entry, and frees the key's claim."""
    store = MemoryBackend()
    engine = new_engine(store)
    assert engine.claim_refresh(KEY)
    await engine.refresh(new_binding(engine), KEY, Fake(engine, 8))
    assert _stored(store) == 8 and KEY not in engine.refreshing


async def test_failed_refresh_releases_its_claim(caplog: pytest.LogCaptureFixture) -> None:
    """A refresh whose computation raises logs it, keeps the stale entry, and frees the claim."""
    store = MemoryBackend()
    engine = new_engine(store)
    await store.set(KEY, envelope.encode(_stale()), 60)
    assert engine.claim_refresh(KEY)
    with caplog.at_level(logging.WARNING, logger="cacheframe"):
        await engine.refresh(new_binding(engine), KEY, Fake(engine, outcomes=[RuntimeError("boom")]))
    assert KEY not in engine.refreshing and engine.claim_refresh(KEY)
    assert "background refresh" in caplog.text and _stored(store) == 3


# -- without the store -------------------------------------------------------------------------


async def test_use_store_false_writes_nothing_and_answers_bypass() -> None:
    """A fill told the store failed computes and answers BYPASS, takes no lock, writes nothing,
    and counts no request (the adapter counts the bypass)."""
    store = LockingMemory()
    engine = new_engine(store)
    fake = Fake(engine, 7)
    answer = await engine.fill(new_binding(engine), KEY, fake, None, use_store=False)
    assert (answer.label, answer.value) == (BYPASS, 7) and fake.labels == [BYPASS]
    assert store.attempts == [] and _stored(store) is None
    assert counts(engine).stores == 0 and counts(engine).misses == 0 and counts(engine).requests == {}


async def test_use_store_false_still_shares_the_computation() -> None:
    """Without the store concurrent misses still compute once; followers answer BYPASS, no hit."""
    engine = new_engine(MemoryBackend())
    fake = Fake(engine, 7, hold=asyncio.Event())
    answers = await _fill_together(engine, fake, 3, use_store=False)
    assert fake.calls == 1 and [a.label for a in answers] == [BYPASS] * 3
    assert counts(engine).hits == 0 and counts(engine).requests == {}


async def test_unstorable_result_is_answered_and_counted() -> None:
    """A result that makes no entry is answered with entry None, counted not_stored, not written."""
    store = MemoryBackend()
    engine = new_engine(store)
    answer = await engine.fill(new_binding(engine), KEY, Fake(engine, 7, storable=False), None)
    assert (answer.label, answer.value, answer.entry) == (MISS, 7, None)
    assert answer.not_stored == stats.NS_UNSERIALIZABLE
    assert counts(engine).not_stored_by == {(FUNC, stats.NS_UNSERIALIZABLE): 1}
    assert counts(engine).stores == 0 and _stored(store) is None
