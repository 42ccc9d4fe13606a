"""Run cache coroutines from synchronous code: one private event-loop thread.

A sync function decorated with ``@cache`` stays sync for its caller, even when
the backend is async. Its store calls run on this loop, in its own thread, so
calling it from a thread that is itself running an event loop never
deadlocks. Backends keep connections per loop, so this loop gets its own.

:func:`serve_from_worker` is the other direction: a view called in one of
anyio's worker threads has its request served on the app's loop while the
view itself runs in the calling thread.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, cast

import anyio.from_thread
from starlette.concurrency import run_in_threadpool

__all__ = ["run_sync", "serve_from_worker"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_pid = 0


def _portal() -> asyncio.AbstractEventLoop:
    global _loop, _pid
    with _lock:
        if _loop is None or _pid != os.getpid() or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="cacheframe-sync-portal", daemon=True)
            thread.start()
            _loop, _pid = loop, os.getpid()
        return _loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the portal loop and wait for its result."""
    loop = _portal()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:  # called from inside the portal itself: cannot block on it
        coro.close()
        raise RuntimeError("cacheframe: a sync cached function was called from its own portal")
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


def serve_from_worker(
    serve: Callable[[Callable[[], Awaitable[Any]]], Awaitable[T]], compute: Callable[[], Any]
) -> T:
    """Run ``serve(call_view)`` on the event loop of this anyio worker thread, and wait.

    ``call_view`` asks this thread to run ``compute`` (the view) while it waits,
    so the request needs no second worker thread: with every slot held by such
    waits, each view still runs. A call made after this returns (a background
    refresh) takes a worker thread of its own.
    """
    jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
    finished = False

    async def call_view() -> Any:
        if finished:
            return await run_in_threadpool(compute)
        result: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        jobs.put(result)
        return await result

    def done(task: asyncio.Future[T]) -> None:
        nonlocal finished
        finished = True  # on the loop, as call_view reads it
        jobs.put(task)

    def start() -> asyncio.Future[T]:
        task = asyncio.ensure_future(serve(call_view))
        task.add_done_callback(done)
        return task

    try:
        # Held here: the loop keeps only a weak reference to a task.
        task: asyncio.Future[T] = anyio.from_thread.run_sync(start)
    except RuntimeError:  # not an anyio worker thread: no loop to serve on, so run the view uncached
        return cast(T, compute())
    while (job := jobs.get()) is not task:
        loop = job.get_loop()
        try:
            value = compute()
        except BaseException as exc:  # the view's own error goes back to serve unchanged
            loop.call_soon_threadsafe(_settle, job, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, job, value, None)
    return cast(T, task.result())


def _settle(future: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if future.done():  # the request was cancelled meanwhile
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)
