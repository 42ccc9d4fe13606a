"""The per-call deadline timer shared by the Redis lane and the memcached backend."""

from __future__ import annotations

import asyncio
import time

import pytest

from cacheframe.backends._deadline import Deadline


async def _guarded(seconds: float, work: float, extend: float | None = None) -> str:
    deadline = Deadline(seconds)
    try:
        if extend is not None:
            deadline.extend_to(asyncio.get_running_loop().time() + extend)
        await asyncio.sleep(work)
        return "done"
    except asyncio.CancelledError:
        if deadline.expired():
            return "timed out"
        raise
    finally:
        deadline.cancel()


async def test_fires_and_is_absorbed() -> None:
    """Past the deadline the call is cancelled and the caller sees its own timeout."""
    started = time.monotonic()
    assert await _guarded(0.05, 5) == "timed out"
    assert time.monotonic() - started < 1
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_finished_call_is_untouched() -> None:
    """A call done in time is never cancelled later (the timer is cancelled with it)."""
    assert await _guarded(0.05, 0) == "done"
    await asyncio.sleep(0.1)  # would raise CancelledError here had the timer survived


async def test_cancellation_from_outside_is_not_a_timeout() -> None:
    """A task cancelled by someone else stays cancelled."""
    task = asyncio.ensure_future(_guarded(5, 5))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_extend_moves_the_cut_off_later_only() -> None:
    """extend_to gives connecting its own budget; it never shortens the deadline."""
    assert await _guarded(0.05, 0.15, extend=0.5) == "done"
    assert await _guarded(0.05, 0.15, extend=0.01) == "timed out"


async def test_outside_cancellation_at_the_deadline_stays_a_cancellation() -> None:
    """When the deadline and a cancellation from outside land in the same loop iteration, the
    caller is still cancelled (the deadline only absorbs its own cancel)."""
    made: list[Deadline] = []

    async def call() -> str:
        deadline = Deadline(0.05)
        made.append(deadline)
        try:
            await asyncio.sleep(5)
            return "done"
        except asyncio.CancelledError:
            if deadline.expired():
                return "timed out"
            raise
        finally:
            deadline.cancel()

    task = asyncio.ensure_future(call())
    await asyncio.sleep(0)
    asyncio.get_running_loop().call_at(made[0].when(), task.cancel)  # same instant: same iteration
    with pytest.raises(asyncio.CancelledError):
        await task
