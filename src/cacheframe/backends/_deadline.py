"""Store-call deadlines, all watched by one timer per event loop.

``asyncio.timeout`` builds a context-manager object and reschedules a handle per call,
and even a bare ``loop.call_at`` per call leaves a timer handle, its bound callback and
their references alive until the loop's next iteration, cancelled or not: under load
that is several objects per hit for the cyclic garbage collector to count and promote.
A :class:`Deadline` is one small object in its loop's :class:`_Watchdog` set. The
watchdog keeps a single timer armed for the earliest deadline; when it fires it cancels
the task of every call past its deadline and re-arms for the next one. The caller turns
that cancellation (and only that one: ``Task.uncancel`` tells it apart from a
cancellation from outside) into a timeout.

    deadline = Deadline(0.25)
    try:
        return await call()
    except asyncio.CancelledError:
        if deadline.expired():
            raise TimeoutError from None
        raise
    finally:
        deadline.cancel()
"""

from __future__ import annotations

import asyncio
import weakref

__all__ = ["Deadline"]


class _Watchdog:
    """One event loop's running deadlines and the one timer that enforces them."""

    __slots__ = ("_at", "_handle", "_loop", "live")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # a loop dropped without close() is not kept alive here
        self.live: set[Deadline] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._at = float("inf")  # when the armed timer fires

    def watch(self, deadline: Deadline, loop: asyncio.AbstractEventLoop) -> None:
        self.live.add(deadline)
        if deadline.when_at < self._at:
            self._arm(deadline.when_at, loop)

    def _arm(self, when: float, loop: asyncio.AbstractEventLoop) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._at = when
        self._handle = loop.call_at(when, self._check)

    def _check(self) -> None:
        loop = self._loop()
        if loop is None:  # pragma: no cover - a collected loop runs no timers
            return
        # The loop runs a timer once it judges it due, which with uvloop (millisecond clock,
        # time cached per iteration) can be a little before loop.time() reaches it: trust the
        # timer, or the deadline it was armed for would re-arm at once, spinning until then.
        now = max(loop.time(), self._at)
        self._handle, self._at = None, float("inf")
        earliest = float("inf")
        for deadline in list(self.live):
            if deadline.when_at <= now:
                self.live.discard(deadline)
                deadline.fire()
            elif deadline.when_at < earliest:
                earliest = deadline.when_at
        if earliest != float("inf"):
            self._arm(earliest, loop)


_watchdogs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watchdog] = weakref.WeakKeyDictionary()


def _watchdog(loop: asyncio.AbstractEventLoop) -> _Watchdog:
    dog = _watchdogs.get(loop)
    if dog is None:
        dog = _watchdogs[loop] = _Watchdog(loop)
    return dog


class Deadline:
    """Cancel the current task ``seconds`` from now unless :meth:`cancel` comes first."""

    __slots__ = ("_dog", "_fired", "_task", "when_at")

    def __init__(self, seconds: float) -> None:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - every store call runs in a task
            raise RuntimeError("a Deadline needs a running task")
        loop = task.get_loop()
        self._task = task
        self._fired = False
        self.when_at = loop.time() + seconds
        self._dog = _watchdog(loop)
        self._dog.watch(self, loop)

    def fire(self) -> None:
        """The watchdog's verdict: the call is out of time."""
        self._fired = True
        self._task.cancel()

    def extend_to(self, when: float) -> None:
        """Move the cut-off later (never earlier); no effect once it has fired."""
        if not self._fired and when > self.when_at:
            self.when_at = when  # the watchdog re-arms for it when its timer comes round

    def expired(self) -> bool:
        """In ``except CancelledError``: whether this deadline caused it (then it is absorbed:
        the caller raises a timeout instead); ``False`` for a cancellation from outside."""
        return self._fired and self._task.uncancel() == 0

    def cancel(self) -> None:
        """The call is over: the deadline must not fire."""
        self._dog.live.discard(self)
