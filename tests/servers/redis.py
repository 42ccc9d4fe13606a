"""Throwaway Redis servers for the tests: a single node, a 3-primary cluster, a sentinel setup.

Each session fixture starts its processes on free loopback ports (never 6379)
and kills them afterwards. The yielded objects carry the cacheframe ``url``
and the :class:`ServerProcess` handles, so a test can pause or kill a server.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from . import ServerProcess, free_port, require_binary

__all__ = [
    "RedisClusterServers",
    "RedisSentinelServers",
    "RedisServer",
    "fresh_redis_server",
    "redis_cluster",
    "redis_sentinel",
    "redis_server",
    "start_redis",
]

_READY_TIMEOUT = 20.0
_CLUSTER_ARGS = (
    *("--cluster-enabled", "yes"),
    *("--cluster-config-file", "nodes.conf"),
    *("--cluster-node-timeout", "2000"),
)


@dataclass
class RedisServer:
    """One redis-server: ``url`` is ``redis://127.0.0.1:P/0``."""

    process: ServerProcess

    @property
    def port(self) -> int:
        """The TCP port."""
        return self.process.port

    @property
    def url(self) -> str:
        """The cacheframe URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"


@dataclass
class RedisClusterServers:
    """Three cluster primaries; ``url`` lists them all."""

    nodes: list[ServerProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The cacheframe URL: ``redis+cluster://h:p,h:p,h:p``."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)


@dataclass
class RedisSentinelServers:
    """A master and one sentinel monitoring it as ``mymaster``."""

    master: ServerProcess
    sentinel: ServerProcess
    service: str = "mymaster"

    @property
    def url(self) -> str:
        """The cacheframe URL: ``redis+sentinel://127.0.0.1:S/mymaster``."""
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.service}"


def _cli(port: int, *args: str) -> str:
    """Run one redis-cli command against 127.0.0.1:port and return its output."""
    argv = [require_binary("redis-cli"), "-h", "127.0.0.1", "-p", str(port), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    return done.stdout + done.stderr


def _wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def start_redis(name: str = "redis", *extra: str, port: int | None = None) -> ServerProcess:
    """Start a non-persistent redis-server on a free loopback port (``extra``: more arguments)."""
    port = port or free_port()
    argv = [require_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1"]
    argv += ["--save", "", "--appendonly", "no", *extra]
    return ServerProcess(argv, port, name).start()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A single redis-server for the whole session."""
    server = RedisServer(start_redis())
    try:
        yield server
    finally:
        server.process.stop()


@pytest.fixture
def fresh_redis_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own, to pause or kill freely."""
    server = RedisServer(start_redis("redis-fresh"))
    try:
        yield server
    finally:
        server.process.stop()


def _cluster_ok(port: int) -> bool:
    info = _cli(port, "CLUSTER", "INFO")
    return "cluster_state:ok" in info and "cluster_known_nodes:3" in info


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """A Redis Cluster of three primaries (bus ports are port + 10000)."""
    cluster = RedisClusterServers()
    try:
        for _ in range(3):
            cluster.nodes.append(start_redis("redis-cluster", *_CLUSTER_ARGS, port=free_port(55535)))
        addresses = [f"127.0.0.1:{n.port}" for n in cluster.nodes]
        create = ["--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"]
        created = _cli(cluster.nodes[0].port, *create)
        if "[OK] All 16384 slots covered" not in created:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created}")
        for node in cluster.nodes:
            _wait_for(lambda port=node.port: _cluster_ok(port), f"cluster_state:ok on {node.port}")
        yield cluster
    finally:
        for node in cluster.nodes:
            node.stop()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinelServers]:
    """A master plus one sentinel (quorum 1) that monitors it as ``mymaster``."""
    master = start_redis("redis-master")
    port = free_port()
    sentinel = ServerProcess(
        [require_binary("redis-server"), "sentinel.conf", "--sentinel"], port, "redis-sentinel"
    )
    with open(os.path.join(sentinel.workdir, "sentinel.conf"), "w") as conf:
        conf.write(
            f"port {port}\nbind 127.0.0.1\ndir {sentinel.workdir}\n"
            f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
            "sentinel down-after-milliseconds mymaster 5000\n"
            "sentinel failover-timeout mymaster 60000\n"
        )
    servers = RedisSentinelServers(master, sentinel)
    try:
        sentinel.start()
        _wait_for(
            lambda: (
                str(master.port) in _cli(port, "SENTINEL", "get-master-addr-by-name", "mymaster")
                and "s_down" not in _cli(port, "SENTINEL", "master", "mymaster")
            ),
            "the sentinel to report mymaster",
        )
        yield servers
    finally:
        sentinel.stop()
        master.stop()
