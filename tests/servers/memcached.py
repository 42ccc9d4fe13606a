"""Throwaway memcached servers for the tests: one, a pair, or one of a test's own.

Each fixture starts ``memcached -l 127.0.0.1 -p PORT -U 0 -m 64`` on free loopback
ports (never 11211) and kills it afterwards. The yielded objects carry the
cacheframe ``url`` and the :class:`ServerProcess` handles, so a test can pause or
kill a server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from . import ServerProcess, free_port, require_binary

__all__ = [
    "MemcachedServer",
    "MemcachedServers",
    "fresh_memcached_server",
    "memcached_pair",
    "memcached_server",
    "start_memcached",
]


@dataclass
class MemcachedServer:
    """One memcached: ``url`` is ``memcached://127.0.0.1:P``."""

    process: ServerProcess

    @property
    def port(self) -> int:
        """The TCP port."""
        return self.process.port

    @property
    def url(self) -> str:
        """The cacheframe URL of the server."""
        return f"memcached://127.0.0.1:{self.port}"


@dataclass
class MemcachedServers:
    """Several memcached servers; ``url`` lists them all."""

    processes: list[ServerProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The cacheframe URL: ``memcached://127.0.0.1:P1,127.0.0.1:P2``."""
        return "memcached://" + ",".join(f"127.0.0.1:{p.port}" for p in self.processes)


def start_memcached(name: str = "memcached", *extra: str) -> ServerProcess:
    """Start a 64 MiB memcached (TCP only) on a free loopback port."""
    port = free_port()
    argv = [require_binary("memcached"), "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64"]
    if os.geteuid() == 0:  # memcached refuses to run as root without -u
        argv += ["-u", "nobody"]
    return ServerProcess([*argv, *extra], port, name).start()


@pytest.fixture(scope="session")
def memcached_server() -> Iterator[MemcachedServer]:
    """A single memcached for the whole session."""
    server = MemcachedServer(start_memcached())
    try:
        yield server
    finally:
        server.process.stop()


@pytest.fixture(scope="session")
def memcached_pair() -> Iterator[MemcachedServers]:
    """Two memcached servers for the whole session (keys spread over both)."""
    servers = MemcachedServers()
    try:
        for _ in range(2):
            servers.processes.append(start_memcached("memcached-pair"))
        yield servers
    finally:
        for process in servers.processes:
            process.stop()


@pytest.fixture
def fresh_memcached_server() -> Iterator[MemcachedServer]:
    """A memcached of this test's own, to pause or kill freely."""
    server = MemcachedServer(start_memcached("memcached-fresh"))
    try:
        yield server
    finally:
        server.process.stop()
