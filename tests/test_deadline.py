"""The per-call deadline timer shared by the Redis lane and the memcached backend."""

from __future__ import annotations

import asyncio
import time

import pytest

from cacheframe.backends import _deadline
from cacheframe.backends._deadline import Deadline


async def _guarded(
    seconds: float, work: float, extend: float | None = None, made: list[Deadline] | None = None
) -> str:
    """Sleep ``work`` seconds under a deadline of ``seconds``, as a store call would (``made``
    receives the deadline)."""
    deadline = Deadline(seconds)
    if made is not None:
        made.append(deadline)
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
    task = asyncio.ensure_future(_guarded(5, 5, made=made))
    await asyncio.sleep(0)
    made[0].fire()  # the watchdog's verdict...
    task.cancel()  # ...and a cancellation from outside, before the task runs again
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_one_timer_serves_deadlines_in_any_order() -> None:
    """Deadlines registered out of order each fire at their own time, not at the earliest's."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    finished: dict[str, float] = {}

    async def timed(name: str, seconds: float) -> None:
        assert await _guarded(seconds, 5) == "timed out"
        finished[name] = loop.time() - started

    await asyncio.gather(timed("late", 0.3), timed("early", 0.05), timed("middle", 0.15))
    assert finished["early"] < finished["middle"] < finished["late"]
    assert finished["early"] < 0.15 and finished["late"] >= 0.3


async def test_early_deadline_cancelled_leaves_later_ones_watched() -> None:
    """When the call whose deadline the timer was armed for ends in time, later calls still time out."""
    short = asyncio.ensure_future(_guarded(0.05, 0.01))
    long = asyncio.ensure_future(_guarded(0.2, 5))
    assert await short == "done"
    assert await long == "timed out"


async def test_finished_calls_leave_nothing_watched() -> None:
    """A call that ends removes its deadline at once: nothing is kept until the timer fires."""
    from cacheframe.backends._deadline import _watchdog

    for _ in range(100):
        assert await _guarded(5, 0) == "done"
    assert not _watchdog(asyncio.get_running_loop()).live


def test_one_check_per_expiry_under_uvloop() -> None:
    """uvloop runs a timer when its millisecond clock says so, which can be a little before
    ``loop.time()`` reaches the deadline: the watchdog must fire it then, not re-arm in a spin."""
    uvloop = pytest.importorskip("uvloop")
    checks = 0
    check = _deadline._Watchdog._check

    def counting(self: _deadline._Watchdog) -> None:
        nonlocal checks
        checks += 1
        check(self)

    async def main() -> None:
        for i in range(10):
            await asyncio.sleep(0.0003 * (i % 7))  # deadlines at varied sub-millisecond offsets
            assert await _guarded(0.0123, 5) == "timed out"

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_deadline._Watchdog, "_check", counting)
        uvloop.run(main())
    assert checks <= 20, f"{checks} watchdog checks for 10 expiries"
