"""Opt-in timing of store calls and fills: nothing on any path until an exporter turns it on.

An exporter asked for timing (``prometheus.register(..., timing=True)``,
``otel.instrument(..., timing=True)``) hands the engine a :class:`Timing`. The
gateway then reaches its backend through a :class:`TimedBackend`, which times
each call the gateway makes; the engine times each computation of a miss. When
no exporter asked, the gateway holds the backend itself and the engine checks
one attribute per miss: hits pay nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any, Protocol

from .types import Backend, StampedBytes

__all__ = ["Timing", "TimedBackend", "Timings"]


class Timing(Protocol):
    """Protocol: what a timing exporter measures (each a context manager around the work)."""

    def store_call(self, action: str) -> AbstractContextManager[None]:
        """Around one store call (``get``, ``set``, ``delete``, ``clear``, ``lock``, ``unlock``)."""
        ...

    def fill(self, namespace: str) -> AbstractContextManager[None]:
        """Around one computation of a miss (the view or function, rendering included)."""
        ...


class Timings:
    """Several timings as one (two exporters timing the same cache)."""

    def __init__(self, parts: list[Timing]) -> None:
        self.parts = parts

    @contextmanager
    def store_call(self, action: str) -> Iterator[None]:
        with ExitStack() as stack:
            for part in self.parts:
                stack.enter_context(part.store_call(action))
            yield

    @contextmanager
    def fill(self, namespace: str) -> Iterator[None]:
        with ExitStack() as stack:
            for part in self.parts:
                stack.enter_context(part.fill(namespace))
            yield


class TimedBackend:
    """The backend calls the gateway makes, each timed. It forwards exactly those calls; the
    gateway decided from the real backend which capabilities it uses."""

    def __init__(self, backend: Backend, timing: Timing) -> None:
        self.backend = backend
        self.timing = timing

    def __repr__(self) -> str:
        return repr(self.backend)

    async def get(self, key: str) -> bytes | None:
        with self.timing.store_call("get"):
            return await self.backend.get(key)

    def get_nowait(self, key: str) -> bytes | None:
        with self.timing.store_call("get"):
            return self.backend.get_nowait(key)  # type: ignore[attr-defined,no-any-return]

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        with self.timing.store_call("set"):
            await self.backend.set(key, value, ttl)

    async def delete(self, key: str) -> bool:
        with self.timing.store_call("delete"):
            return await self.backend.delete(key)

    async def clear(self, namespace: str) -> None:
        with self.timing.store_call("clear"):
            await self.backend.clear(namespace)

    async def close(self) -> None:
        await self.backend.close()

    async def read_stamped(self, key: str, stamps: Sequence[str]) -> list[bytes | None]:
        with self.timing.store_call("get"):
            return await self._real.read_stamped(key, stamps)  # type: ignore[no-any-return]

    def read_stamped_nowait(self, key: str, stamps: Sequence[str]) -> StampedBytes:
        with self.timing.store_call("get"):
            return self._real.read_stamped_nowait(key, stamps)  # type: ignore[no-any-return]

    async def write_stamps(self, stamps: Mapping[str, bytes], ttl: float | None) -> None:
        with self.timing.store_call("set"):
            await self._real.write_stamps(stamps, ttl)

    async def acquire_lock(self, key: str, token: str, lease: float) -> bool:
        with self.timing.store_call("lock"):
            return await self._real.acquire_lock(key, token, lease)  # type: ignore[no-any-return]

    async def release_lock(self, key: str, token: str) -> bool:
        with self.timing.store_call("unlock"):
            return await self._real.release_lock(key, token)  # type: ignore[no-any-return]

    async def acquire_lock_and_get(
        self, lock_key: str, token: str, lease: float, key: str
    ) -> tuple[bool, bytes | None]:
        with self.timing.store_call("lock"):
            return await self._real.acquire_lock_and_get(lock_key, token, lease, key)  # type: ignore[no-any-return]

    async def set_and_release_lock(
        self, key: str, value: bytes, ttl: float | None, lock_key: str, token: str
    ) -> bool:
        with self.timing.store_call("set"):
            return await self._real.set_and_release_lock(key, value, ttl, lock_key, token)  # type: ignore[no-any-return]

    @property
    def _real(self) -> Any:
        return self.backend
