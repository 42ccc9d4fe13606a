"""Assertions shared by the app-level tests."""

from __future__ import annotations

from typing import Any


def assert_freshness(
    response: Any, ttl: int, *, age: int = 0, private: bool = False, extra: str = ""
) -> None:
    """Cache-Control says max-age = ttl and Age is at least ``age`` (real seconds may tick by on
    a loaded machine: no upper bound), so a downstream cache keeps it max-age - Age seconds:
    the lifetime left, age counted once.

    ``extra`` is what follows ``max-age`` (stale-while-revalidate, ...).
    """
    seen = int(response.headers.get("age", "0"))
    assert age <= seen, f"Age {seen}, expected at least {age}"
    scope = "private" if private else "public"
    assert response.headers["cache-control"] == f"{scope}, max-age={ttl}{extra}"


def generous_deadline(cache: Any) -> Any:
    """Reconfigure the default cache like ``cache`` but with a 2 s store deadline.

    For tests that fire hundreds of requests at once: the loop is then busy long
    enough for the default 0.25 s deadline to expire on a healthy store, which is
    fail-open behaviour, not what these tests are about.
    """
    import cacheframe

    return cacheframe.configure(url=cache.settings.url, prefix=cache.settings.prefix, timeout=5.0)


def assert_fork_child_reads_its_own(backend: Any, key: str) -> None:
    """Write ``key`` in this process, then ``os.fork``: the child, on the same loop object, must
    read the value over connections of its own; afterwards the parent's still work."""
    import asyncio
    import os

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(backend.set(key, b"parent", 60))
        pid = os.fork()
        if pid == 0:  # child: same loop object, the parent's sockets must not be touched
            code = 1
            try:
                code = 0 if loop.run_until_complete(backend.get(key)) == b"parent" else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert loop.run_until_complete(backend.get(key)) == b"parent"  # parent's connections intact
        loop.run_until_complete(backend.delete(key))
        loop.run_until_complete(backend.close())
    finally:
        loop.close()


class SlowClears:
    """Wraps a backend's ``clear``: each call sleeps 50 ms first, and the wrapper counts the calls
    (``total``) and the most running at once (``peak``)."""

    def __init__(self, clear: Any) -> None:
        self.clear, self.running, self.peak, self.total = clear, 0, 0, 0

    async def __call__(self, namespace: str) -> None:
        import asyncio

        self.running += 1
        self.total += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(0.05)
            await self.clear(namespace)
        finally:
            self.running -= 1
