"""What the conformance suite needs besides its tests: the async runner, bounded calls, URLs."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

T = TypeVar("T")

try:  # pytest-asyncio when installed; otherwise anyio's plugin (anyio comes with FastAPI)
    import pytest_asyncio

    RUNNER = "asyncio"
    # pytest-asyncio's strict mode runs only fixtures made by its own decorator.
    async_fixture: Callable[..., Any] = pytest_asyncio.fixture
    async_test = pytest.mark.asyncio
except ImportError:
    RUNNER = "anyio"
    async_fixture = pytest.fixture
    async_test = pytest.mark.anyio

_INSTALL = (
    "the cacheframe conformance suite runs its async tests with pytest-asyncio "
    "(pip install pytest-asyncio) or, without it, with anyio's pytest plugin "
    "(pip install anyio; do not disable it with -p no:anyio)"
)


def require_runner(config: pytest.Config) -> None:
    """Fail, saying what to install, when the async plugin the suite chose is not active."""
    if not config.pluginmanager.has_plugin(RUNNER):
        pytest.fail(f"pytest plugin {RUNNER!r} is not active: {_INSTALL}", pytrace=False)


async def bounded(call: Awaitable[T], seconds: float, what: str) -> T:
    """Await ``call``, failing the test (not hanging it) when it takes longer than ``seconds``."""
    limit = asyncio.timeout(seconds)
    try:
        async with limit:
            return await call
    except TimeoutError:
        if not limit.expired():  # the backend's own BackendTimeoutError: it is the test's to judge
            raise
    pytest.fail(
        f"{what} did not return within {seconds:g} s: every backend call must be bounded "
        "by a deadline (raise cacheframe.BackendTimeoutError when it passes)",
        pytrace=False,
    )


_CALLS = (
    *("get", "set", "delete", "clear", "close", "ttl", "add", "acquire_lock", "release_lock"),
    *("acquire_lock_and_get", "set_and_release_lock", "stats", "read_stamped", "write_stamps"),
)


def bounded_view(backend: Any, seconds: float) -> Any:
    """``backend`` with every async method bounded by ``seconds`` (the capabilities it has, no more).

    A backend whose call never returns then fails its test instead of hanging the suite.
    """
    namespace: dict[str, Any] = {"__slots__": ("_inner",), "__repr__": lambda self: repr(self._inner)}
    for name in _CALLS:
        if callable(getattr(backend, name, None)):
            namespace[name] = _bounded_method(name, seconds)
    view = type(f"Bounded{type(backend).__name__}", (), namespace)()
    view._inner = backend
    return view


def _bounded_method(name: str, seconds: float) -> Callable[..., Awaitable[Any]]:
    async def method(self: Any, *args: Any) -> Any:
        return await bounded(getattr(self._inner, name)(*args), seconds, f"{self._inner!r}.{name}()")

    method.__name__ = name
    return method


def with_option(url: str, name: str, value: str) -> str:
    """``url`` with ``?name=value`` added to its query."""
    parts = urlsplit(url)
    query = f"{parts.query}&{name}={value}" if parts.query else f"{name}={value}"
    return urlunsplit(parts._replace(query=query))


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unreachable(url: str) -> str | None:
    """``url`` pointed at a loopback port that refuses connections; None when it names no host."""
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    userinfo = parts.netloc.rpartition("@")[0]
    host = f"127.0.0.1:{closed_port()}"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}" if userinfo else host))


__all__ = [
    "RUNNER",
    "async_fixture",
    "async_test",
    "bounded",
    "bounded_view",
    "closed_port",
    "require_runner",
    "unreachable",
    "with_option",
]
