"""The in-process tier's bookkeeping (``_local.LocalTier``): bounds, expiry, stamps, drops, the
fill guard and the lease, on a fake clock and a fake channel (the channel's real behaviour on
Redis is tested in tests/app/test_local_tier.py)."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Mapping

import pytest

from cacheframe import _local
from cacheframe._local import LEASE, TTL, VALIDATE, LocalTier, message_of
from cacheframe.exceptions import BackendError
from cacheframe.settings import CacheSettings
from cacheframe.stats import CacheStats


class Clock:
    """Stands for the ``time`` module inside ``_local``: both clocks move only when told."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSubscription:
    """A subscription whose pongs the test hands out (``answer``)."""

    def __init__(self, on_message: Callable[[bytes], None], on_lost: Callable[[], None]) -> None:
        self.on_message, self.on_lost = on_message, on_lost
        self.pending: list[asyncio.Future[None]] = []
        self.closed = False

    async def ping(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append(waiter)
        await waiter

    def answer(self) -> None:
        self.pending.pop(0).set_result(None)

    def fail(self) -> None:
        self.pending.pop(0).set_exception(BackendError("lost"))

    async def close(self) -> None:
        self.closed = True


class FakeChannel:
    """A ``SupportsBroadcast`` with nothing behind it (only ``subscribe`` is used by the tier)."""

    def __init__(self) -> None:
        self.subs: list[FakeSubscription] = []
        self.refuse = False

    async def publish(
        self,
        channel: str,
        message: bytes,
        stamps: Mapping[str, bytes] | None = None,
        ttl: float | None = None,
    ) -> None:
        raise AssertionError("the tier never publishes")

    async def subscribe(
        self, channel: str, on_message: Callable[[bytes], None], on_lost: Callable[[], None]
    ) -> FakeSubscription:
        if self.refuse:
            raise BackendError("refused")
        sub = FakeSubscription(on_message, on_lost)
        self.subs.append(sub)
        return sub


class NoChannel:
    """A store with no channel (as Memcached)."""


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(_local, "time", fake)
    return fake


def tier(backend: object, stats: CacheStats | None = None, **options: object) -> LocalTier:
    settings = CacheSettings(prefix="p", local_max_entries=options.pop("local_max_entries", 100), **options)
    return LocalTier(backend, settings, stats or CacheStats(), "test")  # type: ignore[arg-type]


def ttl_tier(clock: Clock, **options: object) -> LocalTier:
    """A tier whose copies answer without a channel (ttl mode: bookkeeping without a lease)."""
    made = tier(NoChannel(), local_ttl=options.pop("local_ttl", 1000.0), **options)
    assert made.mode == TTL
    return made


def fill(
    t: LocalTier,
    key: str,
    raw: bytes = b"v",
    *,
    fresh: float = 60.0,
    stamps: dict[str, bytes] | None = None,
    ticket: int | None = None,
) -> None:
    stamps = stamps or {}
    t.fill(
        t.applied if ticket is None else ticket,
        key,
        raw,
        _local.time.time() + fresh,
        list(stamps),
        list(stamps.values()),
    )


async def settle() -> None:
    """Let the tier's tasks run until they wait on something."""
    for _ in range(5):
        await asyncio.sleep(0)


# -- modes ---------------------------------------------------------------------------------


def test_modes_follow_what_the_store_offers() -> None:
    assert tier(FakeChannel()).mode == LEASE
    assert tier(FakeChannel(), local_ttl=5).mode == LEASE  # a channel wins; local_ttl then caps copies
    assert tier(NoChannel(), local_ttl=5).mode == TTL
    validate = tier(NoChannel())
    assert validate.mode == VALIDATE and not validate.serves


# -- bounds --------------------------------------------------------------------------------


def test_bounded_by_entries_least_recently_used_first(clock: Clock) -> None:
    t = ttl_tier(clock, local_max_entries=3)
    for key in "abc":
        fill(t, key)
    assert t.get("a", ()) is not None  # a is now the most recently used
    fill(t, "d")
    assert len(t) == 3
    assert t.get("b", ()) is None  # the least recently used went
    assert [t.get(k, ()) for k in "acd"] == [[b"v"]] * 3


def test_bounded_by_bytes(clock: Clock) -> None:
    t = ttl_tier(clock, local_max_entries=1000, local_max_bytes=2000)
    for i in range(50):
        fill(t, f"k{i}", b"x" * 100)
        assert t.nbytes <= 2000
    assert 0 < len(t) < 50
    assert t.get("k49", ()) is not None and t.get("k0", ()) is None
    assert t.nbytes == _counted(t)


def test_a_value_larger_than_the_byte_bound_is_not_kept(clock: Clock) -> None:
    t = ttl_tier(clock, local_max_bytes=1000)
    fill(t, "small")
    fill(t, "big", b"x" * 1000)
    assert t.get("big", ()) is None and t.get("small", ()) == [b"v"]


def test_replacing_a_key_counts_its_bytes_once(clock: Clock) -> None:
    t = ttl_tier(clock)
    fill(t, "k", b"x" * 10)
    fill(t, "k", b"y" * 20)
    assert len(t) == 1 and t.nbytes == len("k") + 20 + _local._OVERHEAD
    assert t.get("k", ()) == [b"y" * 20]


# -- expiry --------------------------------------------------------------------------------


def test_a_copy_expires_when_its_entry_stops_being_fresh(clock: Clock) -> None:
    t = ttl_tier(clock)
    fill(t, "k", fresh=10)
    clock.advance(9.9)
    assert t.get("k", ()) == [b"v"]
    clock.advance(0.1)
    assert t.get("k", ()) is None
    assert len(t) == 0 and t.nbytes == 0  # dropped on the way


def test_an_entry_no_longer_fresh_is_not_kept(clock: Clock) -> None:
    t = ttl_tier(clock)
    fill(t, "k", fresh=0)
    fill(t, "old", fresh=-5)
    assert len(t) == 0


def test_a_copy_lives_at_most_local_ttl_its_stamps_too(clock: Clock) -> None:
    t = ttl_tier(clock, local_ttl=2.0)
    fill(t, "k", fresh=60, stamps={"s": b"t"})
    clock.advance(1.9)
    assert t.get("k", ["s"]) == [b"v", b"t"]
    clock.advance(0.2)
    assert t.get("k", ["s"]) is None
    fill(t, "k2", fresh=60)  # the entry alone, refilled: its stamp copy is gone with local_ttl
    assert t.get("k2", ["s"]) is None


def test_validate_mode_keeps_entries_only_and_expires_them(clock: Clock) -> None:
    t = tier(NoChannel())
    fill(t, "k", fresh=5, stamps={"s": b"t"})
    assert t.entry("k") == b"v" and len(t) == 1  # no stamp kept: they are read from the store
    clock.advance(5)
    assert t.entry("k") is None and len(t) == 0


# -- stamps ----------------------------------------------------------------------------------


def test_stamps_kept_with_their_entry(clock: Clock) -> None:
    t = ttl_tier(clock)
    fill(t, "k", stamps={"s1": b"a", "s2": b"b"})
    assert t.get("k", ["s1", "s2"]) == [b"v", b"a", b"b"]
    assert t.get("k", ["s2"]) == [b"v", b"b"]
    assert t.get("k", ["s1", "other"]) is None  # a stamp not kept: read the store


def test_a_missing_stamp_is_not_kept(clock: Clock) -> None:
    t = ttl_tier(clock)
    t.fill(t.applied, "k", b"v", clock.time() + 60, ["s1", "s2"], [b"a", None])
    assert "s2" not in t._stamps
    assert t.get("k", ["s1", "s2"]) is None  # the store says whether it exists


def _counted(t: LocalTier) -> int:
    """The bytes the tier should count: its entries and stamps, each with its key."""
    entries = sum(len(k) + len(v[0]) + _local._OVERHEAD for k, v in t._values.items())
    return entries + sum(len(k) + len(v[0]) + _local._OVERHEAD for k, v in t._stamps.items())


def test_the_entry_bound_counts_entries_not_their_stamps(clock: Clock) -> None:
    t = ttl_tier(clock, local_max_entries=3)
    for key in "abcd":
        fill(t, key, stamps={"g": b"1", f"{key}-r": b"2", f"{key}-t": b"3"})
    assert len(t) == 3 and t.get("a", ["g", "a-r", "a-t"]) is None
    for key in "bcd":
        assert t.get(key, ["g", f"{key}-r", f"{key}-t"]) == [b"v", b"1", b"2", b"3"]
    assert sorted(t._stamps) == sorted(["g", *(f"{k}-{s}" for k in "bcd" for s in "rt")])  # a's went with it
    assert t.nbytes == _counted(t)


def test_a_hot_entry_keeps_its_stamps_while_cold_ones_churn(clock: Clock) -> None:
    t = ttl_tier(clock, local_max_entries=10)
    fill(t, "hot", stamps={"g": b"1", "hot-r": b"2"})
    for i in range(200):
        assert t.get("hot", ["g", "hot-r"]) == [b"v", b"1", b"2"], f"after {i} cold fills"
        fill(t, f"cold{i}", stamps={"g": b"1", f"cold{i}-r": b"3"})
    assert len(t) == 10 and len(t._stamps) == 11 and t.nbytes == _counted(t)


def test_a_stamp_kept_while_an_entry_refers_to_it(clock: Clock) -> None:
    t = ttl_tier(clock)
    fill(t, "a", stamps={"shared": b"1", "a-r": b"2"})
    fill(t, "b", stamps={"shared": b"1"})
    t.drop(["a"])
    assert sorted(t._stamps) == ["shared"] and t.get("b", ["shared"]) == [b"v", b"1"]
    fill(t, "b", stamps={"shared": b"9"})  # refilled: the newer token, still one reference
    t.drop(["b"])
    assert not t._stamps and not t._refs and t.nbytes == 0


def test_the_byte_bound_counts_stamps(clock: Clock) -> None:
    t = ttl_tier(clock, local_max_bytes=3000)
    for i in range(50):
        fill(t, f"k{i}", b"x" * 50, stamps={f"k{i}-r": b"t" * 200})
        assert t.nbytes <= 3000 and t.nbytes == _counted(t)
    assert 0 < len(t) < 10


def test_a_stamp_missing_in_the_store_drops_its_older_copy(clock: Clock) -> None:
    t = ttl_tier(clock)
    fill(t, "a", stamps={"s": b"old"})
    fill(t, "b", stamps={"s": None})  # type: ignore[dict-item]
    assert "s" not in t._stamps and t.get("a", ["s"]) is None and t.nbytes == _counted(t)


# -- drops -----------------------------------------------------------------------------------


def test_drop_of_a_key_and_of_a_prefix(clock: Clock) -> None:
    t = ttl_tier(clock)
    for key in ("ns:a", "ns:b", "other:a", "s"):
        fill(t, key)
    t.drop(["s"])
    assert t.get("s", ()) is None and len(t) == 3
    fill(t, "k", stamps={"ns:stamp": b"1"})
    t.drop(["ns:*"])
    assert t.get("ns:a", ()) is None and t.get("ns:b", ()) is None
    assert t.get("k", ["ns:stamp"]) is None and "ns:stamp" not in t._stamps
    t.drop(["k"])
    assert t.get("other:a", ()) == [b"v"] and len(t) == 1
    assert t.nbytes == len("other:a") + 1 + _local._OVERHEAD


def test_a_dropped_stamp_stops_its_entries(clock: Clock) -> None:
    t = ttl_tier(clock)
    fill(t, "k", stamps={"s": b"a"})
    t.drop(["s"])
    assert t.get("k", ["s"]) is None


def test_messages_drop_what_they_name_and_star_clears(clock: Clock) -> None:
    t = ttl_tier(clock)
    for key in ("a", "b", "c", "ns:x", "ns:y"):
        fill(t, key)
    t._on_message(message_of(["a", "b"]))
    assert sorted(t._values) == ["c", "ns:x", "ns:y"]
    t._on_message(message_of(["ns:*"]))
    assert sorted(t._values) == ["c"]
    t._on_message(b"*")
    assert len(t) == 0 and t.nbytes == 0


# -- the fill guard (no stale fill) ------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t._on_message(b"s"),  # another process invalidated (heard on the channel)
        lambda t: t.drop(["k"]),  # this process wrote or invalidated
        lambda t: t._on_message(b"*"),
        lambda t: t.clear(),
    ],
)
def test_a_read_overlapping_a_change_fills_nothing(clock: Clock, change: Callable[[LocalTier], None]) -> None:
    t = ttl_tier(clock)
    ticket = t.applied  # the read starts
    change(t)  # a change is heard while it is under way
    fill(t, "k", stamps={"s": b"old"}, ticket=ticket)  # it completes with what it read before
    assert len(t) == 0 and t.get("k", ["s"]) is None


def test_a_change_to_other_keys_leaves_a_read_under_way_alone(clock: Clock) -> None:
    """The guard is per key: a busy process's own writes (every miss stores one) and other
    keys' invalidations do not void every read in flight, or the tier would rarely fill."""
    t = ttl_tier(clock)
    ticket = t.applied
    t._on_message(b"unrelated")
    t.drop(["other"])
    fill(t, "k", stamps={"s": b"old"}, ticket=ticket)
    assert t.get("k", ["s"]) is not None


def test_a_change_heard_on_another_thread_never_lands_inside_a_fill(clock: Clock) -> None:
    """A sync function's read fills on the portal loop's thread while the channel is read on the
    app's loop: a message applied while a fill is half done (its ticket checked, nothing kept
    yet) waits for it, then drops what it kept."""
    t = ttl_tier(clock)
    ticket = t.applied
    applier = threading.Thread(target=t._on_message, args=(b"s",))
    real_time = clock.time

    def switch_threads() -> float:  # the fill asks the time after checking its ticket
        clock.time = real_time  # type: ignore[method-assign]
        applier.start()
        applier.join(0.5)  # the message is applied now, unless it waits for the fill
        return real_time()

    clock.time = switch_threads  # type: ignore[method-assign]
    t.fill(ticket, "k", b"old", real_time() + 60, ["s"], [b"old-token"])
    applier.join()
    assert t.get("k", ["s"]) is None


def test_a_read_after_the_change_fills(clock: Clock) -> None:
    t = ttl_tier(clock)
    t._on_message(b"s")
    fill(t, "k", stamps={"s": b"new"})
    assert t.get("k", ["s"]) == [b"v", b"new"]


# -- the lease ---------------------------------------------------------------------------------


async def subscribed(t: LocalTier, channel: FakeChannel) -> FakeSubscription:
    """Ask the tier for a copy (it subscribes and pings), return its subscription."""
    assert t.get("k", ()) is None
    await settle()
    sub = channel.subs[-1]
    assert t._sub is sub and len(sub.pending) == 1
    return sub


async def test_no_copy_answers_before_the_first_pong(clock: Clock) -> None:
    channel = FakeChannel()
    t = tier(channel)
    fill(t, "k")  # nothing listens yet: not kept
    assert len(t) == 0
    sub = await subscribed(t, channel)
    fill(t, "k")  # a read that began once subscribed: kept, but not answering yet
    assert len(t) == 1
    assert t.get("k", ()) is None and t.bypassed >= 1
    sub.answer()
    await settle()
    assert t.get("k", ()) == [b"v"] and t.hits == 1


async def test_a_read_begun_before_subscribing_fills_nothing(clock: Clock) -> None:
    channel = FakeChannel()
    t = tier(channel)
    ticket = t.applied
    sub = await subscribed(t, channel)
    sub.answer()
    await settle()
    fill(t, "k", ticket=ticket)  # changes made while nothing listened may have been missed
    assert len(t) == 0


async def test_copies_stop_answering_once_the_last_pong_is_older_than_the_bound(clock: Clock) -> None:
    channel = FakeChannel()
    t = tier(channel, local_max_staleness=0.1)
    sub = await subscribed(t, channel)
    sub.answer()
    await settle()
    fill(t, "k")
    clock.advance(0.04)
    assert t.get("k", ()) == [b"v"]
    assert not sub.pending  # under half the bound: no new ping
    clock.advance(0.02)  # past half the bound: a refresh is asked for, copies still answer
    assert t.get("k", ()) == [b"v"]
    await settle()
    assert len(sub.pending) == 1
    clock.advance(0.05)  # the last answered ping is now 0.11 s old; the refresh is unanswered
    hits = t.hits
    assert t.get("k", ()) is None and t.hits == hits and t.bypassed == 1
    await settle()
    assert len(sub.pending) == 1  # one ping at a time
    sub.answer()  # the refresh (sent 0.05 s ago) answers: trusted again
    await settle()
    assert t.get("k", ()) == [b"v"]


async def test_a_late_pong_proves_only_the_time_its_ping_was_sent(clock: Clock) -> None:
    channel = FakeChannel()
    t = tier(channel, local_max_staleness=0.1)
    sub = await subscribed(t, channel)
    clock.advance(0.5)  # the first pong comes late (the server was paused)
    sub.answer()
    await settle()
    fill(t, "k")
    assert t.get("k", ()) is None  # proven only up to 0.5 s ago
    await settle()
    sub.answer()  # the ping that get asked for
    await settle()
    assert t.get("k", ()) == [b"v"]


async def test_a_lost_channel_resets_the_tier_until_a_new_subscription_answers(clock: Clock) -> None:
    channel, stats = FakeChannel(), CacheStats()
    t = tier(channel, stats)
    sub = await subscribed(t, channel)
    sub.answer()
    await settle()
    fill(t, "k", stamps={"s": b"a"})
    assert t.get("k", ["s"]) is not None and stats.local_tier_down == 0
    ticket = t.applied
    sub.on_lost()  # the connection failed: messages may have been lost
    assert len(t) == 0 and t.nbytes == 0 and t.resets == 2 and stats.local_tier_down == 1
    fill(t, "k", ticket=ticket)
    fill(t, "k")  # nothing listens: not kept either
    assert len(t) == 0
    assert t.get("k", ()) is None  # asks for a new subscription
    await settle()
    new = channel.subs[-1]
    assert new is not sub and t._sub is new
    fill(t, "k")
    assert t.get("k", ()) is None  # not before its first pong
    new.answer()
    await settle()
    assert t.get("k", ()) == [b"v"] and stats.local_tier_down == 0
    sub.on_lost()  # the old one's late news changes nothing
    assert t.get("k", ()) == [b"v"]


async def test_an_unanswered_ping_resets_the_tier(clock: Clock) -> None:
    channel = FakeChannel()
    t = tier(channel)
    sub = await subscribed(t, channel)
    sub.answer()
    await settle()
    fill(t, "k")
    clock.advance(0.06)
    assert t.get("k", ()) == [b"v"]  # asks for a refresh
    await settle()
    sub.fail()  # the refresh failed (as on a timeout)
    await settle()
    assert len(t) == 0 and t._sub is None and sub.closed
    assert t.get("k", ()) is None
    await settle()
    assert channel.subs[-1] is not sub  # subscribing again


async def test_a_refused_subscription_is_retried_with_backoff(clock: Clock) -> None:
    channel = FakeChannel()
    channel.refuse = True
    t = tier(channel)
    assert t.get("k", ()) is None
    await settle()
    assert t._sub is None and not channel.subs
    channel.refuse = False
    assert t.get("k", ()) is None
    await settle()
    assert not channel.subs  # within the backoff: not asked again yet
    clock.advance(0.06)
    assert t.get("k", ()) is None
    await settle()
    assert len(channel.subs) == 1


async def test_close_forgets_everything(clock: Clock) -> None:
    channel = FakeChannel()
    t = tier(channel)
    sub = await subscribed(t, channel)
    sub.answer()
    await settle()
    fill(t, "k")
    await t.close()
    assert len(t) == 0 and sub.closed and t._proven == -math.inf


def test_local_ttl_counts_from_when_the_read_began(clock: Clock) -> None:
    """ttl mode's bound is local_ttl after the store was read, not after the (slow) read ended."""
    t = ttl_tier(clock, local_ttl=5.0)
    read_at = clock.time()
    clock.advance(3.0)  # a slow read
    t.fill(t.applied, "k", b"v", clock.time() + 60, ["s"], [b"tok"], read_at)
    assert t.get("k", ["s"]) is not None
    clock.advance(2.5)  # 5.5 s after the read began
    assert t.get("k", ["s"]) is None
