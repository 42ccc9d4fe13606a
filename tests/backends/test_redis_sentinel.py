"""A master found through Sentinel: RedisSentinelBackend, a configuration of RedisBackend."""

from __future__ import annotations

import pytest

from cacheframe.backends._redis_exec import ClientExecutor
from cacheframe.backends.redis import RedisBackend, RedisSentinelBackend
from cacheframe.testing import BackendConformance
from servers.redis import RedisSentinelServers


class TestRedisSentinelConformance(BackendConformance):
    """The whole backend contract on a master found through Sentinel."""

    # A whole call, connecting included, is bounded by timeout: through Sentinel each new
    # connection first asks the sentinel, and the 300-call cold burst opens 300 of them
    # (seconds on a busy two-core machine). The suite checks behaviour, not latency.
    call_timeout = 30.0

    @pytest.fixture
    def backend_url(self, redis_sentinel: RedisSentinelServers) -> str:
        return redis_sentinel.url + "?timeout=20"


async def test_sentinel_is_a_configuration_of_the_single_node_backend(
    redis_sentinel: RedisSentinelServers,
) -> None:
    """The Sentinel backend is RedisBackend configured to find the master through the sentinels
    and to send every command through the client; it reports itself as redis+sentinel."""
    backend = RedisSentinelBackend.from_url(redis_sentinel.url + "?timeout=5")
    try:
        assert isinstance(backend, RedisBackend) and isinstance(backend._exec, ClientExecutor)
        await backend.set("sentinel:k", b"v", 60)
        assert await backend.get("sentinel:k") == b"v"
        stats = await backend.stats()
        assert stats["backend"] == "redis+sentinel" and stats["nodes"] == 1
        assert await backend.delete("sentinel:k") is True
    finally:
        await backend.close()
