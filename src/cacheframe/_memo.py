"""A memo bounded in bytes, for values that are cheap to keep and dear to rebuild.

Every memo of cacheframe (store keys of URLs, decoded entries, reply headers) is
one of these, owned by the object whose work it saves (a binding, the gateway),
never a module global. It holds at most ``max_bytes`` (as its owner measures
them) and drops its oldest values first; a value larger than ``max_item`` is not
kept at all. Several threads may use one (the app's loop and the sync functions'
portal share the gateway's): changes are made under a lock, reads need none. It
never decides whether a value is still right: its owner keys it by named fields
and checks what it gets back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["BytesMemo"]

K = TypeVar("K")
V = TypeVar("V")


class BytesMemo(Generic[K, V]):
    """Values by key, at most ``max_bytes`` in all, oldest dropped first."""

    __slots__ = ("_lock", "_sizes", "_values", "get", "max_bytes", "max_item", "nbytes")

    def __init__(self, max_bytes: int, max_item: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_item = max_bytes if max_item is None else min(max_item, max_bytes)
        self.nbytes = 0
        self._values: dict[K, V] = {}
        self._sizes: dict[K, int] = {}
        self._lock = threading.Lock()
        # The value kept for a key, or None: the dict's own lookup (every hit reads a memo or
        # two; a method around it would cost each of them a Python call).
        self.get: Callable[[K], V | None] = self._values.get

    def __len__(self) -> int:
        return len(self._values)

    def put(self, key: K, value: V, size: int) -> None:
        """Keep ``value`` (``size`` bytes) for ``key``, dropping the oldest values to make room."""
        values, sizes = self._values, self._sizes
        with self._lock:
            old = sizes.pop(key, None)
            if old is not None:
                del values[key]
                self.nbytes -= old
            if size > self.max_item:
                return
            while values and self.nbytes + size > self.max_bytes:
                oldest = next(iter(values))
                del values[oldest]
                self.nbytes -= sizes.pop(oldest)
            values[key] = value
            sizes[key] = size
            self.nbytes += size

    def clear(self) -> None:
        """Forget every value."""
        with self._lock:
            self._values.clear()
            self._sizes.clear()
            self.nbytes = 0
