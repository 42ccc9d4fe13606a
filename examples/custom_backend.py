"""A custom backend: a few async methods, then use it directly or register it by URL scheme.

Run: ``uvicorn examples.custom_backend:app``.

A backend stores bytes under string keys (``cacheframe.types.Backend``, a Protocol:
no base class needed). Use it directly with ``Cache(backend=DictBackend())``, or ship
it in a package and register its scheme in that package's ``pyproject.toml``::

    [project.entry-points."cacheframe.backends"]
    dict = "my_package.backend:DictBackend"

after which ``CACHEFRAME_URL=dict://`` selects it. docs/writing-a-backend.md has the
full contract and the conformance suite to test it with.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI

from cacheframe import Cache


class DictBackend:
    """Entries in a dict with an expiry time each; one process only, like memory://."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[bytes, float | None]] = {}

    @classmethod
    def from_url(cls, url: str, settings: Any = None) -> DictBackend:
        """What the registry calls for ``dict://`` URLs."""
        return cls()

    async def get(self, key: str) -> bytes | None:
        """The bytes stored under ``key``, or None when absent or expired."""
        found = self.data.get(key)
        if found is None:
            return None
        value, expires = found
        if expires is not None and expires <= time.monotonic():
            del self.data[key]
            return None
        return value

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store ``value`` for ``ttl`` seconds (None: no expiry)."""
        self.data[key] = (value, None if ttl is None else time.monotonic() + ttl)

    async def delete(self, key: str) -> bool:
        """Remove ``key``; whether it was there."""
        return self.data.pop(key, None) is not None

    async def clear(self, namespace: str) -> None:
        """Remove every key starting with ``namespace`` (a plain prefix test, no patterns)."""
        for key in [k for k in self.data if k.startswith(namespace)]:
            del self.data[key]

    async def close(self) -> None:
        """Nothing to release."""


cache = Cache(backend=DictBackend())
app = FastAPI(lifespan=cache.lifespan)


@app.get("/square/{n}")
@cache.cache(ttl=60)
async def square(n: int) -> dict[str, int]:
    """n squared, cached in the dict backend."""
    return {"n": n, "square": n * n}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app)
