"""The conformance suite against the in-memory backend, plus its bounds."""

from __future__ import annotations

import asyncio

import pytest

from cacheframe.backends.memory import MemoryBackend
from cacheframe.exceptions import ConfigurationError
from cacheframe.settings import CacheSettings
from cacheframe.testing import BackendConformance


class TestMemoryConformance(BackendConformance):
    """The whole backend contract on ``memory://``."""

    @pytest.fixture
    def backend_url(self) -> str:
        return "memory://?max_entries=5000"

    @pytest.fixture
    def unreachable_url(self) -> None:
        return None  # in-process: no store to lose


async def test_bounded_by_entries_lru() -> None:
    """Past max_entries the least recently used entry goes."""
    b = MemoryBackend(max_entries=3)
    for k in "abc":
        await b.set(k, b"v", 60)
    await b.get("a")  # a is now most recently used
    await b.set("d", b"v", 60)
    assert await b.get("b") is None
    assert [await b.get(k) for k in "acd"] == [b"v", b"v", b"v"]
    assert len(b) == 3


async def test_bounded_by_bytes() -> None:
    """With max_bytes, total size stays under the bound and oversized values are dropped."""
    b = MemoryBackend(max_entries=1000, max_bytes=10_000)
    for i in range(100):
        await b.set(f"k{i}", b"x" * 500, 60)
    stats = await b.stats()
    assert stats["bytes"] <= 10_000
    await b.set("k99", b"y" * 20_000, 60)  # larger than the bound on its own
    assert await b.get("k99") is None  # and the older value is not left behind


def test_instances_do_not_share_state() -> None:
    """Two backends are two stores (no class-level state)."""
    a, b = MemoryBackend(), MemoryBackend()
    assert a._data is not b._data


def test_url_options_validated() -> None:
    """A bad URL option names itself and the known ones."""
    with pytest.raises(ConfigurationError, match="max_entries.*known options"):
        MemoryBackend.from_url("memory://?max_entries=lots")
    with pytest.raises(ConfigurationError, match="nope"):
        MemoryBackend.from_url("memory://?nope=1")


def test_settings_bounds_apply() -> None:
    """max_entries/max_bytes settings reach the backend; the URL overrides them."""
    settings = CacheSettings(max_entries=7, max_bytes=1000)
    assert MemoryBackend.from_url("memory://", settings).max_entries == 7
    assert MemoryBackend.from_url("memory://?max_entries=9", settings).max_entries == 9


async def test_expired_entries_make_room_before_live_ones_under_a_byte_bound() -> None:
    """Once the byte bound is reached, a write sweeps out expired entries first: a live entry
    is not evicted while dead ones still take the room."""
    import asyncio

    b = MemoryBackend(max_entries=1000, max_bytes=1000)
    await b.set("live", b"L" * 100, 60)
    for i in range(3):
        await b.set(f"short{i}", b"S" * 150, 0.05)
    await asyncio.sleep(0.1)
    await b.set("new0", b"N" * 200, 60)
    await b.set("new1", b"N" * 200, 60)
    assert await b.get("live") == b"L" * 100
    assert len(b) == 3


async def test_stamps_are_bounded_and_keep_the_ones_read() -> None:
    """Past max_entries stamps, a write evicts an unread stamp; one read since (the prefix's,
    read on every hit) gets a second chance and stays."""
    b = MemoryBackend(max_entries=3)
    await b.write_stamps({"g": b"G", "r1": b"1", "r2": b"2"}, None)
    assert b.read_stamped_nowait("entry", ["g"]) == (None, (b"G",))
    await b.write_stamps({"r3": b"3"}, None)
    assert await b.read_stamped("entry", ["g", "r1", "r2", "r3"]) == [None, b"G", None, b"2", b"3"]
    assert len(b._stamps) == 3


async def test_replacing_a_stamp_never_evicts_it() -> None:
    """Replacing stamps in a full table evicts nothing; a new stamp is never its own victim."""
    b = MemoryBackend(max_entries=2)
    await b.write_stamps({"a": b"1", "b": b"1"}, None)
    b.read_stamped_nowait("e", ["a", "b"])  # both flagged as read
    await b.write_stamps({"a": b"2"}, None)
    assert {k: v[0] for k, v in b._stamps.items()} == {"b": b"1", "a": b"2"}  # nothing evicted
    await b.write_stamps({"c": b"1"}, None)  # b was read; a, replaced since, was not: a goes
    assert b.read_stamped_nowait("e", ["a", "b", "c"]) == (None, (None, b"1", b"1"))
    assert len(b._stamps) == 2


async def test_a_tuple_of_stamps_reads_the_same_tokens_until_a_stamp_changes() -> None:
    """The tokens of a tuple of stamps are one kept tuple from read to read (the engine then
    skips re-checking a seal against them); any change to the stamps, or the first of them
    expiring, makes the next read look again."""
    b = MemoryBackend()
    stamps = ("g", "r", "absent")
    await b.write_stamps({"g": b"G"}, None)
    await b.write_stamps({"r": b"R"}, 0.2)
    first = b.read_stamped_nowait("e", stamps)[1]
    assert first == (b"G", b"R", None) and b.read_stamped_nowait("e", stamps)[1] is first
    assert b.read_stamped_nowait("e", list(stamps))[1] == first  # a list is read afresh, not kept
    await b.write_stamps({"g": b"H"}, None)
    second = b.read_stamped_nowait("e", stamps)[1]
    assert second == (b"H", b"R", None) and b.read_stamped_nowait("e", stamps)[1] is second
    await b.create_stamps({"absent": b"A"}, None)
    assert b.read_stamped_nowait("e", stamps)[1] == (b"H", b"R", b"A")
    await b.delete("g")
    assert b.read_stamped_nowait("e", stamps)[1] == (None, b"R", b"A")
    await asyncio.sleep(0.3)  # "r" expires: nothing else changed
    assert b.read_stamped_nowait("e", stamps)[1] == (None, None, b"A")
    await b.clear("a")
    assert b.read_stamped_nowait("e", stamps)[1] == (None, None, None)


async def test_the_kept_tokens_are_bounded_by_max_entries() -> None:
    """At most ``max_entries`` sets of stamps have their tokens kept; the oldest set goes."""
    b = MemoryBackend(max_entries=2)
    await b.write_stamps({"g": b"G"}, None)
    for name in ("a", "b", "c"):
        assert b.read_stamped_nowait("e", ("g", name))[1] == (b"G", None)
    assert list(b._tokens) == [("g", "b"), ("g", "c")]


async def test_stamps_read_through_the_kept_tokens_keep_their_second_chance() -> None:
    """A stamp read on every hit stays however full the table gets, though its hits read the
    kept tokens: a pass-over drops them, so the next hit flags the stamp as read again."""
    b = MemoryBackend(max_entries=3)
    await b.write_stamps({"g": b"G"}, None)
    for i in range(20):
        for _ in range(3):
            assert b.read_stamped_nowait("e", ("g",))[1] == (b"G",)
        await b.write_stamps({f"r{i}": b"1"}, None)
    assert "g" in b._stamps and len(b._stamps) == 3


async def test_stamps_leave_with_clear_and_delete() -> None:
    """Stamps are ordinary keys: clear(ns) and delete(key) remove them as they remove entries."""
    b = MemoryBackend()
    await b.write_stamps({"p:!s:g:1": b"1", "q:!s:g:1": b"1"}, 60)
    await b.clear("p:")
    assert b.read_stamped_nowait("p:k", ["p:!s:g:1", "q:!s:g:1"]) == (None, (None, b"1"))
    assert await b.delete("q:!s:g:1") is True
    assert b.read_stamped_nowait("p:k", ["q:!s:g:1"]) == (None, (None,))
    assert (await b.stats())["stamps"] == 0


def test_declares_stamps() -> None:
    """The memory backend offers stamps, read without a coroutine (the conformance checks
    of a capability are skipped, not failed, for a backend that does not declare it)."""
    from cacheframe.types import SupportsStamps, SupportsStampsNowait

    assert isinstance(MemoryBackend(), SupportsStamps)
    assert isinstance(MemoryBackend(), SupportsStampsNowait)
