"""One store call's deadline as a single loop timer: cheaper than ``asyncio.timeout`` per call.

``asyncio.timeout`` builds a context-manager object, enters and leaves it through two
coroutine-protocol calls and reschedules its handle; a hit pays that every time. A
:class:`Deadline` is one ``loop.call_at`` handle: when it fires it cancels the calling
task, and the caller turns that cancellation (and only that one: ``Task.uncancel``
tells it apart from a cancellation from outside) into a timeout.

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

__all__ = ["Deadline"]


class Deadline:
    """Cancel the current task ``seconds`` from now unless :meth:`cancel` comes first."""

    __slots__ = ("_fired", "_handle", "_loop", "_task")

    def __init__(self, seconds: float) -> None:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - every store call runs in a task
            raise RuntimeError("a Deadline needs a running task")
        self._loop = asyncio.get_running_loop()
        self._task = task
        self._fired = False
        self._handle = self._loop.call_at(self._loop.time() + seconds, self._fire)

    def _fire(self) -> None:
        self._fired = True
        self._task.cancel()

    def when(self) -> float:
        """The loop time at which the call is cut off."""
        return self._handle.when()

    def extend_to(self, when: float) -> None:
        """Move the cut-off later (never earlier); no effect once it has fired."""
        if not self._fired and when > self._handle.when():
            self._handle.cancel()
            self._handle = self._loop.call_at(when, self._fire)

    def expired(self) -> bool:
        """In ``except CancelledError``: whether this deadline caused it (then it is absorbed:
        the caller raises a timeout instead); ``False`` for a cancellation from outside."""
        return self._fired and self._task.uncancel() == 0

    def cancel(self) -> None:
        """The call is over: the timer must not fire."""
        self._handle.cancel()
