"""A state machine interleaving two processes' lookups, computations and writes with
invalidations (by request tag, result tag, resource and namespace) and evictions; its
oracle: no read that starts after an invalidation returned yields a value computed from
data older than that invalidation (issue #13, guarantee 2). Record "a" is tagged from its
result, "b" is not (so its hits take the memory store's kept tokens and the engine's
remembered seal check); soft invalidations change the data without raising the floor."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Mapping
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cacheframe import Cache, tag
from cacheframe.backends.memory import MemoryBackend

KEYS = ("a", "b")
# Which process is calling: the function itself must be the same in both (same code, same
# closure), as in two real processes, so it learns its caller from here.
PROCESS: contextvars.ContextVar[int] = contextvars.ContextVar("process", default=0)


class BucketedMemory(MemoryBackend):
    """The memory store with stamp buckets, as Redis Cluster has them (``SupportsStampBuckets``):
    entries spread over three buckets, each with its own copies of the stamps."""

    stamp_buckets = ("{a}", "{b}", "{c}")

    async def replace_stamps(self, stamps: Mapping[str, bytes], ttl: float | None) -> None:
        await self.write_stamps({name: token for name, token in stamps.items() if name in self._stamps}, ttl)


class TwoProcesses(RuleBasedStateMachine):
    """Two ``Cache`` objects (two processes: nothing shared but the store) over one store."""

    store_class: type[MemoryBackend] = MemoryBackend

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        store = self.store_class()
        self.caches = [Cache(backend=store, prefix="m"), Cache(backend=store, prefix="m")]
        self.store = store
        self.data = dict.fromkeys(KEYS, 0)  # the version of each record
        self.floor = dict.fromkeys(KEYS, 0)  # the version every read must reach (last invalidation)
        self.gates: dict[int, asyncio.Event] = {}
        self.pending: dict[tuple[int, str], asyncio.Task[int]] = {}
        self.blocking: set[int] = set()
        self.functions = [self._function(cache) for cache in self.caches]

    def _function(self, cache: Cache) -> Any:
        state = self

        @cache.cache(ttl=600, namespace="records", tags=["record:{key}"])
        async def record(key: str) -> int:
            version = state.data[key]  # the data it reads, before it may be held up
            if key == "a":
                tag(f"row:{key}")  # a tag taken from what it read (as a list view tags its rows)
            process = PROCESS.get()
            if process in state.blocking:
                gate = state.gates[process] = asyncio.Event()
                await gate.wait()
            return version

        return record

    def _call(self, process: int, key: str) -> Any:
        PROCESS.set(process)
        return self.functions[process](key)

    def _run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def _settle(self) -> None:
        self._run(asyncio.sleep(0))

    @precondition(lambda self: len(self.pending) < 2)
    @rule(process=st.integers(0, 1), key=st.sampled_from(KEYS))
    def start_slow_call(self, process: int, key: str) -> None:
        """A call that misses reads the data, then is held inside the function."""
        if (process, key) in self.pending or any(p == process for p, _ in self.pending):
            return
        self.blocking.add(process)
        task = self.loop.create_task(self._call(process, key))
        self.pending[(process, key)] = task
        for _ in range(20):  # let it reach the gate, or answer (a hit)
            self._settle()
            if task.done() or process in self.gates:
                break
        self.blocking.discard(process)
        if task.done():
            del self.pending[(process, key)]
            assert task.result() >= self.floor[key]

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data())
    def finish_slow_call(self, data: st.DataObject) -> None:
        """The held call computes its value (from what it read) and writes it."""
        process, key = data.draw(st.sampled_from(sorted(self.pending)))
        task = self.pending.pop((process, key))
        gate = self.gates.pop(process, None)
        if gate is not None:
            gate.set()
        self._run(task)  # its own caller may get an old value: it started before

    @rule(process=st.integers(0, 1), key=st.sampled_from(KEYS))
    def read(self, process: int, key: str) -> None:
        """A read that starts now sees at least the data of the last invalidation."""
        if any(p == process for p, _ in self.pending):
            return  # this process is busy with a held call of its own
        assert self._run(self._call(process, key)) >= self.floor[key]

    @rule(
        key=st.sampled_from(KEYS),
        how=st.sampled_from(["tag", "result-tag", "resource", "namespace", "soft"]),
        by=st.integers(0, 1),
    )
    def change_and_invalidate(self, key: str, how: str, by: int) -> None:
        """The record changes, then one process invalidates it (and the call returns)."""
        self.data[key] += 1
        if how == "soft":  # served stale once: the floor stays
            self._run(self.caches[by].invalidate_tags(f"record:{key}", soft=True))
            return
        if how == "tag" or (how == "result-tag" and key == "b"):  # (b takes no tag from its result)
            self._run(self.caches[by].invalidate_tags(f"record:{key}"))
        elif how == "result-tag":
            self._run(self.caches[by].invalidate_tags(f"row:{key}"))
        elif how == "resource":
            self._run(self.functions[by].invalidate(key))
        else:
            self._run(self.caches[by].clear("records"))
        self.floor[key] = self.data[key]

    @rule(data=st.data())
    def evict(self, data: st.DataObject) -> None:
        """The store loses a stamp or an entry (LRU, a restart)."""
        names = list(self.store._stamps) + list(self.store._data)
        if names:
            self._run(self.store.delete(data.draw(st.sampled_from(sorted(names)))))

    @invariant()
    def nothing_else_runs(self) -> None:
        assert all(not task.done() for task in self.pending.values())

    def teardown(self) -> None:
        for gate in list(self.gates.values()):
            gate.set()
        for task in self.pending.values():
            self._run(task)
        self.loop.close()


class TwoProcessesOverBuckets(TwoProcesses):
    """The same over a store with stamp buckets (invalidations replace only the copies that exist)."""

    store_class = BucketedMemory


class SmallBucketedMemory(BucketedMemory):
    """Room for 30 stamps: invalidations evict stamps (second chance) all the time."""

    def __init__(self) -> None:
        super().__init__(max_entries=30)


class TwoProcessesOverASmallStore(TwoProcesses):
    """The same over a store whose stamp table is always full."""

    store_class = SmallBucketedMemory


for machine in (TwoProcesses, TwoProcessesOverBuckets, TwoProcessesOverASmallStore):
    machine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
test_two_processes = TwoProcesses.TestCase
test_two_processes_over_buckets = TwoProcessesOverBuckets.TestCase
test_two_processes_over_a_small_store = TwoProcessesOverASmallStore.TestCase
