"""The store gateway alone: breaker and fail-open, shared reads, the decoded-entry memo, writes
and batched path clears, over the memory backend and fakes of a network store and a failing one."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from cacheframe import envelope, stats
from cacheframe._gateway import CIRCUIT_OPEN, DECODED_MAX_ITEM, NEEDS_IO, STORE_DOWN, StoreGateway, down
from cacheframe.backends.memory import MemoryBackend
from cacheframe.exceptions import BackendError
from engines import counts, new_gateway, response_entry, settle, value_entry

NS = "cf:ns:"
KEY = NS + "k"


class NetworkStore(MemoryBackend):
    """A memory store the gateway must treat as across the network (its own ``get``), whose
    calls are counted, may be held until an event is set, and fail while ``down``."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.hold_gets: asyncio.Event | None = None
        self.down = False
        self.clears: list[str] = []
        self.hold_clears: dict[str, asyncio.Event] = {}  # prefix -> released when set
        self.failing_clears: dict[str, Exception] = {}  # prefix -> raised

    async def get(self, key: str) -> bytes | None:
        self.gets += 1
        if self.hold_gets is not None:
            await self.hold_gets.wait()
        if self.down:
            raise BackendError("store down")
        return self.get_nowait(key)

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        if self.down:
            raise BackendError("store down")
        await super().set(key, value, ttl)

    async def clear(self, namespace: str) -> None:
        self.clears.append(namespace)
        hold = self.hold_clears.get(namespace)
        if hold is not None:
            await hold.wait()
        if namespace in self.failing_clears:
            raise self.failing_clears[namespace]
        await super().clear(namespace)


class BrokenMemory(MemoryBackend):
    """An in-process store whose reads fail while ``down`` (counted in ``reads``)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.down = True

    def get_nowait(self, key: str) -> bytes | None:
        self.reads += 1
        if self.down:
            raise BackendError("store down")
        return super().get_nowait(key)


async def _put(gateway: StoreGateway, key: str, entry: envelope.ValueEntry) -> None:
    assert await gateway.write(key, entry) is None


# -- the breaker and fail-open ---------------------------------------------------------------


async def test_breaker_opens_after_threshold_and_short_circuits() -> None:
    """After ``breaker_threshold`` failed reads the store is not called: reads answer CIRCUIT_OPEN
    at once and writes are skipped (breaker-open), each counted as short-circuited."""
    store = NetworkStore()
    store.down = True
    gateway = new_gateway(store, breaker_threshold=3)
    for _ in range(3):
        assert await gateway.read(KEY) is STORE_DOWN
    assert store.gets == 3 and counts(gateway).store_errors == {"get": 3} and gateway.breaker.state == "open"
    assert await gateway.read(KEY) is CIRCUIT_OPEN
    assert await gateway.write(KEY, value_entry()) == stats.BREAKER_OPEN
    assert store.gets == 3 and counts(gateway).short_circuited == 2 and counts(gateway).backend_errors == 3
    assert (counts(gateway).breaker_open, counts(gateway).breaker_trips) == (1, 1)


def test_down_names_the_bypass_reason() -> None:
    """A failed read bypasses as store-down, a short-circuited one as breaker-open; others as nothing."""
    assert down(STORE_DOWN) == stats.STORE_DOWN and down(CIRCUIT_OPEN) == stats.BREAKER_OPEN
    assert down(None) is None and down(value_entry()) is None


async def test_peek_counts_failures_and_short_circuits_an_in_process_store() -> None:
    """An in-process store failing its reads opens the circuit too; then ``peek`` skips it."""
    store = BrokenMemory()
    gateway = new_gateway(store, breaker_threshold=2)
    assert gateway.peek(KEY) is STORE_DOWN and gateway.peek(KEY) is STORE_DOWN
    assert gateway.peek(KEY) is CIRCUIT_OPEN
    assert store.reads == 2 and counts(gateway).short_circuited == 1


async def test_half_open_probe_closes_the_circuit() -> None:
    """Once the cool-down has passed one read probes the store; its success closes the circuit."""
    store = NetworkStore()
    store.down = True
    gateway = new_gateway(store, breaker_threshold=1)
    assert await gateway.read(KEY) is STORE_DOWN and gateway.breaker.state == "open"
    store.down = False
    await store.set(KEY, envelope.encode(value_entry(b"7")), 60)
    assert gateway.breaker.opened_at is not None
    gateway.breaker.opened_at -= gateway.settings.breaker_cooldown  # the cool-down has passed
    entry = await gateway.read(KEY)
    assert isinstance(entry, envelope.ValueEntry) and entry.payload == b"7"
    assert gateway.breaker.state == "closed" and store.gets == 2


async def test_failed_probe_opens_the_circuit_again() -> None:
    """A probe that fails re-opens the circuit at once, whatever the threshold."""
    store = NetworkStore()
    store.down = True
    gateway = new_gateway(store, breaker_threshold=2)
    await gateway.read(KEY)
    await gateway.read(KEY)
    assert gateway.breaker.opened_at is not None
    gateway.breaker.opened_at -= gateway.settings.breaker_cooldown
    assert await gateway.read(KEY) is STORE_DOWN and store.gets == 3
    assert await gateway.read(KEY) is CIRCUIT_OPEN and store.gets == 3  # open again: not called
    assert (counts(gateway).breaker_open, counts(gateway).breaker_trips) == (1, 1)  # never closed between


async def test_fail_open_false_raises_backend_error() -> None:
    """With ``fail_open=False`` a failing store call raises BackendError, and so does the open circuit."""
    store = NetworkStore()
    store.down = True
    gateway = new_gateway(store, breaker_threshold=1, fail_open=False)
    with pytest.raises(BackendError, match="store down"):
        await gateway.read(KEY)
    with pytest.raises(BackendError, match="circuit open"):
        await gateway.read(KEY)
    assert store.gets == 1 and counts(gateway).short_circuited == 1


async def test_fail_open_false_wraps_a_foreign_error() -> None:
    """A plugin's own OSError becomes a BackendError (chained) when not failing open."""

    async def refused() -> int:
        raise ConnectionRefusedError("refused")

    gateway = new_gateway(MemoryBackend(), fail_open=False)
    with pytest.raises(BackendError) as caught:
        await gateway.call("ping", refused(), 0)
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


async def test_short_circuited_call_closes_its_coroutine() -> None:
    """A call refused by the open circuit closes the coroutine it was given (never awaited)."""
    gateway = new_gateway(MemoryBackend(), breaker_threshold=1)
    gateway.breaker.failure()
    call = MemoryBackend().get(KEY)
    assert await gateway.call("get", call, "default") == "default"
    assert inspect.getcoroutinestate(call) == inspect.CORO_CLOSED


async def test_delete_and_clear_are_tried_while_open() -> None:
    """An invalidation reaches the store even while the circuit is open."""
    store = NetworkStore()
    gateway = new_gateway(store, breaker_threshold=1)
    await _put(gateway, KEY, value_entry())
    gateway.breaker.failure()
    assert gateway.breaker.state == "open"
    assert await gateway.delete(KEY)
    await gateway.clear(NS)
    assert store.clears == [NS]


# -- shared reads --------------------------------------------------------------------------


async def test_concurrent_reads_of_one_key_share_one_store_call() -> None:
    """Reads of one key while one is in flight wait for it: one store call, one decoded entry."""
    store = NetworkStore()
    gateway = new_gateway(store)
    await _put(gateway, KEY, value_entry(b"5"))
    store.hold_gets = asyncio.Event()
    reads = [asyncio.create_task(gateway.read(KEY)) for _ in range(5)]
    await settle()
    store.hold_gets.set()
    entries = await asyncio.gather(*reads)
    assert store.gets == 1
    assert isinstance(entries[0], envelope.ValueEntry) and entries[0].payload == b"5"
    assert all(e is entries[0] for e in entries)


async def test_reads_of_other_keys_are_not_shared() -> None:
    """Concurrent reads of two keys make two store calls, each answered with its own entry."""
    store = NetworkStore()
    gateway = new_gateway(store)
    await _put(gateway, NS + "a", value_entry(b"1"))
    await _put(gateway, NS + "b", value_entry(b"2"))
    a, b = await asyncio.gather(gateway.read(NS + "a"), gateway.read(NS + "b"))
    assert store.gets == 2
    assert isinstance(a, envelope.ValueEntry) and isinstance(b, envelope.ValueEntry)
    assert (a.payload, b.payload) == (b"1", b"2")


async def test_read_once_does_not_share() -> None:
    """``read_once`` always asks the store itself, even with a read of the key in flight."""
    store = NetworkStore()
    gateway = new_gateway(store)
    store.hold_gets = asyncio.Event()
    reads = [asyncio.create_task(gateway.read_once(KEY)) for _ in range(3)]
    await settle()
    store.hold_gets.set()
    assert await asyncio.gather(*reads) == [None, None, None] and store.gets == 3


async def test_cancelled_leader_read_hands_followers_none() -> None:
    """When the read in flight is cancelled its followers get None (a miss), not an error, and
    the next read asks the store again."""
    store = NetworkStore()
    gateway = new_gateway(store)
    await _put(gateway, KEY, value_entry())
    store.hold_gets = asyncio.Event()
    leader = asyncio.create_task(gateway.read(KEY))
    await settle()
    followers = [asyncio.create_task(gateway.read(KEY)) for _ in range(3)]
    await settle()
    leader.cancel()
    assert await asyncio.gather(*followers) == [None, None, None]
    assert leader.cancelled() and store.gets == 1
    store.hold_gets.set()
    assert isinstance(await gateway.read(KEY), envelope.ValueEntry) and store.gets == 2


async def test_raising_leader_read_hands_followers_none() -> None:
    """A read in flight that raises (``fail_open=False``) raises for its caller alone; its
    followers get None."""
    store = NetworkStore()
    store.down = True
    gateway = new_gateway(store, fail_open=False)
    store.hold_gets = asyncio.Event()
    leader = asyncio.create_task(gateway.read(KEY))
    await settle()
    followers = [asyncio.create_task(gateway.read(KEY)) for _ in range(3)]
    await settle()
    store.hold_gets.set()
    with pytest.raises(BackendError):
        await leader
    assert await asyncio.gather(*followers) == [None, None, None] and store.gets == 1


async def test_failed_leader_read_hands_followers_store_down() -> None:
    """Failing open, the one failed store call is every follower's answer: the store is down for
    all of them, counted once."""
    store = NetworkStore()
    store.down = True
    gateway = new_gateway(store)
    store.hold_gets = asyncio.Event()
    reads = [asyncio.create_task(gateway.read(KEY)) for _ in range(4)]
    await settle()
    store.hold_gets.set()
    assert await asyncio.gather(*reads) == [STORE_DOWN] * 4
    assert store.gets == 1 and counts(gateway).backend_errors == 1


# -- peek and read -----------------------------------------------------------------------------


async def test_peek_reads_an_in_process_store_without_a_coroutine() -> None:
    """On the memory store ``peek`` answers the entry (or None) directly; ``read`` agrees."""
    gateway = new_gateway(MemoryBackend())
    assert gateway.in_process and gateway.peek(KEY) is None
    await _put(gateway, KEY, value_entry(b"3"))
    entry = gateway.peek(KEY)
    assert isinstance(entry, envelope.ValueEntry) and entry.payload == b"3"
    assert await gateway.read(KEY) is entry and await gateway.read_once(KEY) is entry


async def test_peek_on_a_network_store_needs_io() -> None:
    """On a store across the network ``peek`` answers NEEDS_IO without calling it; ``read`` reads."""
    store = NetworkStore()
    gateway = new_gateway(store)
    await _put(gateway, KEY, value_entry(b"3"))
    assert not gateway.in_process and gateway.peek(KEY) is NEEDS_IO and store.gets == 0
    entry = await gateway.read(KEY)
    assert isinstance(entry, envelope.ValueEntry) and entry.payload == b"3" and store.gets == 1


def test_overriding_get_or_get_nowait_decides_in_process() -> None:
    """A subclass overriding ``get`` (to instrument or fail reads) is read through it; one
    overriding ``get_nowait`` only is still read in-process, through its override."""
    assert new_gateway(MemoryBackend()).in_process
    assert not new_gateway(NetworkStore()).in_process
    assert new_gateway(BrokenMemory()).in_process


# -- the decoded-entry memo ----------------------------------------------------------------------


async def test_decoded_memo_is_bounded_in_bytes() -> None:
    """With 1 MiB entries the memo never holds more than its ``max_bytes``, and keeps the latest."""
    gateway = new_gateway(MemoryBackend())
    memo = gateway.decoded
    for i in range(40):
        await _put(gateway, f"{NS}{i}", value_entry(b"%d" % i + b" " * (1 << 20)))
        assert gateway.peek(f"{NS}{i}") is not None
        assert memo.nbytes <= memo.max_bytes
    assert 0 < len(memo) < 40 and memo.get(f"{NS}39") is not None and memo.get(f"{NS}0") is None


async def test_decoded_memo_skips_entries_over_max_item() -> None:
    """An entry too large to keep is decoded on every read and never held."""
    gateway = new_gateway(MemoryBackend())
    await _put(gateway, KEY, value_entry(b"x" * (DECODED_MAX_ITEM // 2 + 1)))
    first, second = gateway.peek(KEY), gateway.peek(KEY)
    assert first == second and first is not second
    assert gateway.decoded.get(KEY) is None and gateway.decoded.nbytes == 0


async def test_decoded_memo_never_mixes_keys() -> None:
    """Two keys holding different entries are each answered with their own, in any order."""
    gateway = new_gateway(MemoryBackend())
    await _put(gateway, NS + "a", value_entry(b"1"))
    await _put(gateway, NS + "b", value_entry(b"2"))
    for key, payload in [("a", b"1"), ("b", b"2"), ("a", b"1"), ("b", b"2")]:
        entry = gateway.peek(NS + key)
        assert isinstance(entry, envelope.ValueEntry) and entry.payload == payload


async def test_decoded_memo_keeps_one_entry_per_key_for_the_same_bytes() -> None:
    """The same bytes under two keys are decoded once per key: no key is answered from the other's slot."""
    gateway = new_gateway(MemoryBackend())
    raw = envelope.encode(value_entry(b"1"))
    a, b = gateway.decode(NS + "a", raw), gateway.decode(NS + "b", raw)
    assert a == b and a is not b
    assert gateway.decode(NS + "a", raw) is a and gateway.decode(NS + "b", raw) is b


async def test_decoded_memo_decodes_new_bytes_of_a_key() -> None:
    """A key rewritten with other bytes is decoded anew, never answered with its former entry."""
    gateway = new_gateway(MemoryBackend())
    await _put(gateway, KEY, value_entry(b"1"))
    first = gateway.peek(KEY)
    await _put(gateway, KEY, value_entry(b"2"))
    second = gateway.peek(KEY)
    assert isinstance(first, envelope.ValueEntry) and isinstance(second, envelope.ValueEntry)
    assert (first.payload, second.payload) == (b"1", b"2")


async def test_decoded_memo_reuses_equal_bytes() -> None:
    """Bytes equal to those decoded last for the key (a network read's new copy) reuse the entry."""
    gateway = new_gateway(MemoryBackend())
    raw = envelope.encode(value_entry(b"1"))
    entry = gateway.decode(KEY, raw)
    copy = bytes(bytearray(raw))
    assert copy is not raw and gateway.decode(KEY, copy) is entry


async def test_damaged_bytes_are_counted_and_not_kept() -> None:
    """Bytes that are no entry read as None, counted as bad, and leave no memo slot."""
    gateway = new_gateway(MemoryBackend())
    assert gateway.decode(KEY, b"not an entry") is None
    assert counts(gateway).bad_entries == 1 and gateway.decoded.get(KEY) is None


# -- writes ------------------------------------------------------------------------------------


async def test_write_counts_stores() -> None:
    """A written entry is counted as stored and read back equal."""
    gateway = new_gateway(MemoryBackend())
    entry = response_entry()
    assert await gateway.write(KEY, entry) is None
    assert counts(gateway).stores == 1 and gateway.peek(KEY) == entry


async def test_write_of_an_oversized_header_is_not_stored() -> None:
    """An entry with a header over the envelope's 64 KiB field is not written, answered too-large
    (its caller counts it), and costs the store nothing (not even a breaker probe)."""
    store = NetworkStore()
    gateway = new_gateway(store)
    entry = response_entry()
    entry.headers.append((b"x-big", b"v" * 70_000))
    assert await gateway.write(KEY, entry) == stats.NS_TOO_LARGE
    assert counts(gateway).not_stored == 0 and counts(gateway).stores == 0
    assert store.get_nowait(KEY) is None and gateway.breaker.failures == 0


async def test_failed_write_fails_open() -> None:
    """A write the store refuses is logged and counted, not raised: it answers store-down."""
    store = NetworkStore()
    store.down = True
    gateway = new_gateway(store)
    assert await gateway.write(KEY, value_entry()) == stats.STORE_DOWN
    assert counts(gateway).store_errors == {"set": 1} and counts(gateway).stores == 0
