"""Real uses of the plugin API, checked by mypy (see tests/test_registry.py): plugins are BackendFactory."""

from __future__ import annotations

from pydantic import BaseModel, Field

from cacheframe.backends.memcached import MemcachedBackend
from cacheframe.backends.memory import MemoryBackend
from cacheframe.backends.options import parse_options
from cacheframe.backends.redis import RedisBackend, RedisClusterBackend, RedisSentinelBackend
from cacheframe.registry import load_backend_factory
from cacheframe.settings import CacheSettings
from cacheframe.types import Backend, BackendFactory


class MyOptions(BaseModel):
    """A plugin's options model."""

    timeout: float = Field(0.25, gt=0)


class MyBackend:
    """The shape docs/writing-a-backend.md shows."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    @classmethod
    def from_url(cls, url: str, settings: CacheSettings | None = None) -> MyBackend:
        defaults = None if settings is None else {"timeout": settings.timeout}
        return cls(parse_options(url, MyOptions, defaults).timeout)

    async def get(self, key: str) -> bytes | None:
        return None

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        return None

    async def delete(self, key: str) -> bool:
        return False

    async def clear(self, namespace: str) -> None:
        return None

    async def close(self) -> None:
        return None


factories: list[BackendFactory] = [
    MyBackend,
    MemoryBackend,
    RedisBackend,
    RedisClusterBackend,
    RedisSentinelBackend,
    MemcachedBackend,
]


def build(url: str, settings: CacheSettings) -> Backend:
    """What Cache does with the registry's answer."""
    return load_backend_factory(url).from_url(url, settings)
