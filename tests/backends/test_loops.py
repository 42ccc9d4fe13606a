"""PerLoop, the per-event-loop, fork-aware holder of the backends' driver clients."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable

import pytest

from cacheframe.backends._loops import PerLoop


class Things:
    """A factory of numbered things that records which were closed."""

    def __init__(self) -> None:
        self.made = 0
        self.closed: list[int] = []

    def __call__(self) -> tuple[int, Callable[[], Awaitable[None]]]:
        self.made += 1
        number = self.made

        async def close() -> None:
            self.closed.append(number)

        return number, close


async def test_one_value_per_loop_made_once() -> None:
    """In one loop, every get() and current() answer the value made on first use."""
    things = Things()
    holder = PerLoop(things)
    assert holder.current() is None
    assert await holder.get() == await holder.get() == holder.current() == 1
    assert things.made == 1 and len(holder) == 1
    await holder.close()
    assert things.closed == [1] and len(holder) == 0


def test_each_loop_gets_its_own_and_its_shutdown_closes_it() -> None:
    """asyncio.run twice: two values, each closed when its loop shuts down."""
    things = Things()
    holder = PerLoop(things)
    assert asyncio.run(holder.get()) == 1
    assert things.closed == [1]  # asyncio.run finalised the loop's closing generator
    assert asyncio.run(holder.get()) == 2
    assert things.closed == [1, 2]


def test_values_of_closed_loops_are_dropped() -> None:
    """A loop closed without shutting its generators down leaves a value that the next new
    loop's first use drops."""
    things = Things()
    holder = PerLoop(things)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(holder.get())
    loop.close()  # no shutdown_asyncgens: the value stays held
    assert len(holder) == 1
    assert asyncio.run(holder.get()) == 2
    assert len(holder) == 1  # the closed loop's entry went; the new loop's is held until collected


async def test_fork_drops_inherited_values_without_closing_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a new process the parent's value is never handed out nor closed; the child makes its own,
    and close() there closes only the child's."""
    things = Things()
    holder = PerLoop(things)
    assert await holder.get() == 1
    real_pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: real_pid + 1)
    assert holder.current() is None and len(holder) == 0
    assert await holder.get() == 2
    await holder.close()
    assert things.closed == [2]


async def test_close_drops_other_loops_values_which_their_loops_close() -> None:
    """close() closes the running loop's value at once; another loop's value is closed by that
    loop (the generator's finaliser runs there), never from this thread."""
    things = Things()
    holder = PerLoop(things)
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever)
    thread.start()
    try:
        assert asyncio.run_coroutine_threadsafe(holder.get(), other).result(10) == 1
        assert await holder.get() == 2
        await holder.close()
        assert 2 in things.closed and len(holder) == 0
        for _ in range(100):  # the other loop closes its own, in its own iterations
            if 1 in things.closed:
                break
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(asyncio.sleep(0.01), other))
        assert sorted(things.closed) == [1, 2]
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join(10)
        other.close()


async def test_prepare_runs_once_before_anyone_uses_the_value() -> None:
    """Concurrent first uses share one value, handed out only after ``prepare`` finished."""
    things = Things()
    prepared: list[int] = []
    release = asyncio.Event()

    async def prepare(value: int) -> None:
        await release.wait()
        prepared.append(value)

    holder = PerLoop(things, prepare=prepare)
    first = asyncio.ensure_future(holder.get())
    second = asyncio.ensure_future(holder.get())
    await asyncio.sleep(0)
    assert holder.current() is None  # made, but not ready
    release.set()
    assert await first == await second == 1
    assert prepared == [1] and things.made == 1 and holder.current() == 1
    await holder.close()


async def test_failed_prepare_leaves_no_value() -> None:
    """A value whose preparation failed is not kept: the next use makes a new one."""
    things = Things()
    failures = [RuntimeError("topology unknown")]

    async def prepare(value: int) -> None:
        if failures:
            raise failures.pop()

    holder = PerLoop(things, prepare=prepare)
    with pytest.raises(RuntimeError, match="topology"):
        await holder.get()
    assert len(holder) == 0
    assert await holder.get() == 2
    await holder.close()
