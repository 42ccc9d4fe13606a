"""The memcached backend: the conformance suite on one and two servers, plus its own edges."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import aiomcache
import pytest
import pytest_asyncio

from cacheframe.backends import memcached as mc
from cacheframe.backends.memcached import MemcachedBackend
from cacheframe.exceptions import BackendError, BackendTimeoutError, ConfigurationError
from cacheframe.registry import load_backend_factory
from cacheframe.settings import CacheSettings
from cacheframe.testing import BackendConformance
from helpers import assert_fork_child_reads_its_own
from servers import assert_one_call_within_timeout, free_port, silent_server
from servers.memcached import MemcachedServer, MemcachedServers

MiB = 1024 * 1024
DAY = 24 * 3600


class TestMemcachedConformance(BackendConformance):
    """The whole backend contract on one memcached."""

    @pytest.fixture
    def backend_url(self, memcached_server: MemcachedServer) -> str:
        return memcached_server.url + "?timeout=5"  # generous: the servers may be loaded


class TestMemcachedPairConformance(BackendConformance):
    """The whole backend contract on two memcached servers."""

    @pytest.fixture
    def backend_url(self, memcached_pair: MemcachedServers) -> str:
        return memcached_pair.url + "?timeout=5"  # generous: the servers may be loaded


@pytest_asyncio.fixture
async def store(memcached_server: MemcachedServer) -> AsyncIterator[MemcachedBackend]:
    """A backend on the session server."""
    backend = MemcachedBackend.from_url(memcached_server.url + "?timeout=2")
    yield backend
    await backend.close()


@pytest.fixture
def ns() -> str:
    """A namespace of this test's own."""
    return f"cf-mc-{os.urandom(6).hex()}:"


async def raw_stats(port: int) -> dict[str, int]:
    """memcached's own ``stats`` figures (numeric ones) of 127.0.0.1:port."""
    client = aiomcache.Client("127.0.0.1", port)
    try:
        stats = await client.stats()
    finally:
        await client.close()
    return {k.decode(): int(v) for k, v in stats.items() if v is not None and v.isdigit()}


# -- keys --------------------------------------------------------------------------------


async def test_multibyte_and_long_keys_are_safe_and_distinct(store: MemcachedBackend, ns: str) -> None:
    """300-byte multi-byte keys and keys with spaces/newlines round-trip, each to its own value."""
    keys = [
        ns + "é" * 150,
        ns + "é" * 149 + "è",
        ns + "€" * 100,
        ns + "a b",
        ns + "a\nb",
        ns + "a\r\nb",
        ns + "a\tb",
        ns + "a b ",
        ns + "\x00",
        ns + "#h" + "0" * 64,
    ]
    for key in keys:
        sent = mc.entry_key(key)
        assert len(sent.encode()) <= 250 and re.fullmatch(r"[!-~]+", sent), key
    assert len({mc.entry_key(k) for k in keys}) == len(keys)
    for i, key in enumerate(keys):
        await store.set(key, f"v{i}".encode(), 60)
    for i, key in enumerate(keys):
        assert await store.get(key) == f"v{i}".encode(), repr(key)


def test_hashed_form_cannot_collide_with_a_plain_key() -> None:
    """A plain key spelling another key's hashed form is itself hashed, so the two differ."""
    long_key = "x" * 300
    lookalike = mc.entry_key(long_key)
    assert lookalike.startswith("#h")
    assert mc.entry_key(lookalike) != lookalike
    assert mc.generation_key("a:") != mc.entry_key("#ga:")


# -- ttl ---------------------------------------------------------------------------------


def test_exptime_conversion() -> None:
    """None is 0, fractions round up, up to 30 days is relative, longer is absolute."""
    assert mc.exptime(None) == 0
    assert mc.exptime(0.4) == 1
    assert mc.exptime(1.01) == 2
    assert mc.exptime(30 * DAY) == 30 * DAY
    absolute = mc.exptime(31 * DAY)
    assert abs(absolute - (time.time() + 31 * DAY)) < 5
    assert mc.exptime(200 * 365 * DAY) == 0  # past 2038 memcached cannot express it: never


async def test_ttl_over_30_days_is_stored(store: MemcachedBackend, ns: str) -> None:
    """A ttl above 30 days (an absolute time for memcached) keeps the entry."""
    await store.set(ns + "month", b"v", 31 * DAY)
    await store.set(ns + "year", b"v", 365 * DAY + 0.5)
    await asyncio.sleep(1.1)
    assert await store.get(ns + "month") == b"v"
    assert await store.get(ns + "year") == b"v"


async def test_fractional_ttl_expires(store: MemcachedBackend, ns: str) -> None:
    """A 0.4 s ttl is stored (not 0 = forever) and gone after about two seconds."""
    await store.set(ns + "frac", b"v", 0.4)
    assert await store.get(ns + "frac") == b"v"
    await asyncio.sleep(2.2)
    assert await store.get(ns + "frac") is None


async def test_non_positive_ttl_deletes(store: MemcachedBackend, ns: str) -> None:
    """A ttl of zero or less stores nothing and removes the older value."""
    await store.set(ns + "k", b"old", 60)
    await store.set(ns + "k", b"new", 0)
    assert await store.get(ns + "k") is None


# -- oversized values --------------------------------------------------------------------


async def test_oversized_value_is_dropped_not_raised(
    store: MemcachedBackend, ns: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A value over 1 MiB is not an error, is logged and counted, and removes the older value."""
    await store.set(ns + "big", b"old", 60)
    with caplog.at_level(logging.WARNING, logger="cacheframe"):
        await store.set(ns + "big", os.urandom(MiB + 1), 60)
    assert await store.get(ns + "big") is None
    assert (await store.stats())["oversized"] == 1
    assert any("cannot hold" in r.getMessage() for r in caplog.records)


async def test_server_side_too_large_is_dropped(memcached_server: MemcachedServer, ns: str) -> None:
    """When only the server knows the limit (SERVER_ERROR too large), the set still just drops."""
    backend = MemcachedBackend.from_url(memcached_server.url + f"?max_item_size={4 * MiB}")
    try:
        await backend.set(ns + "big", b"old", 60)
        await backend.set(ns + "big", os.urandom(MiB - 16), 60)
        assert await backend.get(ns + "big") is None
        assert (await backend.stats())["oversized"] == 1
        await backend.set(ns + "big", b"small", 60)  # the connection is still usable
        assert await backend.get(ns + "big") == b"small"
    finally:
        await backend.close()


# -- clear by generations ----------------------------------------------------------------


async def test_cleared_entries_never_come_back(store: MemcachedBackend, ns: str) -> None:
    """After clear, entries stay misses even when the generation key is evicted later."""
    await store.set(ns + "a:1", b"v", 60)
    await store.set(ns + "a:b:2", b"v", 60)
    await store.set(ns + "b:1", b"v", 60)
    await store.clear(ns + "a:")
    assert await store.get(ns + "a:1") is None
    assert await store.get(ns + "a:b:2") is None
    assert await store.get(ns + "b:1") == b"v"
    port = store.servers[0][1]
    raw = aiomcache.Client("127.0.0.1", port)
    try:  # simulate eviction of the generation keys: the old entries must not resurrect
        assert await raw.get(mc.entry_key(ns + "a:1").encode()) is not None  # still in memory
        await raw.delete(mc.generation_key(ns + "a:").encode())
        await raw.delete(mc.generation_key(ns).encode())
    finally:
        await raw.close()
    assert await store.get(ns + "a:1") is None
    assert await store.get(ns + "a:b:2") is None
    assert await store.get(ns + "b:1") is None  # its namespace ns: lost its token too
    await store.set(ns + "a:1", b"again", 60)
    assert await store.get(ns + "a:1") == b"again"


async def test_clear_rejects_a_partial_segment(store: MemcachedBackend) -> None:
    """A namespace must end in ':' (generations exist only for whole segments)."""
    with pytest.raises(ValueError, match="ends with"):
        await store.clear("abc")


async def test_add_replaces_an_entry_of_a_cleared_namespace(store: MemcachedBackend, ns: str) -> None:
    """add succeeds over a cleared (logically absent) entry still in memcached."""
    await store.set(ns + "k", b"old", 60)
    assert await store.add(ns + "k", b"x", 60) is False
    await store.clear(ns)
    assert await store.add(ns + "k", b"new", 60) is True
    assert await store.get(ns + "k") == b"new"


async def test_lock_release_is_compare_and_delete(store: MemcachedBackend, ns: str) -> None:
    """Releasing removes the lock only for its owner, and a released lock is free again."""
    assert await store.acquire_lock(ns + "l", "me", 30)
    assert await store.release_lock(ns + "l", "you") is False
    assert await store.release_lock(ns + "l", "me") is True
    assert await store.release_lock(ns + "l", "me") is False
    assert await store.get(ns + "l") is None
    assert await store.acquire_lock(ns + "l", "you", 30)


# -- several servers ---------------------------------------------------------------------


async def test_two_servers_both_receive_keys(memcached_pair: MemcachedServers, ns: str) -> None:
    """Rendezvous hashing spreads keys: both servers hold some, each key lives on one."""
    backend = MemcachedBackend.from_url(memcached_pair.url)
    ports = [p.port for p in memcached_pair.processes]
    try:
        before = [(await raw_stats(port))["total_items"] for port in ports]
        for i in range(40):
            await backend.set(f"{ns}k{i}", b"v", 60)
        after = [(await raw_stats(port))["total_items"] for port in ports]
        assert all(a - b >= 5 for a, b in zip(after, before, strict=True)), (before, after)
        stats = await backend.stats()
        assert stats["servers"] == 2
        assert all(stats[f"127.0.0.1:{port}/curr_items"] > 0 for port in ports)
    finally:
        await backend.close()


def test_routing_is_stable_and_order_independent() -> None:
    """The same key goes to the same server whatever the order of the URL's servers."""
    a = MemcachedBackend.from_url("memcached://10.0.0.1:1,10.0.0.2:2,10.0.0.3:3")
    b = MemcachedBackend.from_url("memcached://10.0.0.3:3,10.0.0.1:1,10.0.0.2:2")
    keys = [f"k{i}" for i in range(300)]
    assert [a.names[a._server(k)] for k in keys] == [b.names[b._server(k)] for k in keys]
    assert len({a._server(k) for k in keys}) == 3


# -- round trips -------------------------------------------------------------------------


class CountingProxy:
    """A TCP proxy in front of memcached that counts the command lines clients send."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.lines: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()

        task = asyncio.create_task(downstream())
        try:
            while line := await reader.readline():
                self.lines.append(line)
                up_writer.write(line)
                await up_writer.drain()
        finally:
            task.cancel()
            up_writer.close()
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


async def test_hit_is_one_command(memcached_server: MemcachedServer, ns: str) -> None:
    """A hit sends exactly one `gets` (entry plus generation tokens); cmd_get counts its keys."""
    proxy = CountingProxy(memcached_server.port)
    port = await proxy.start()
    backend = MemcachedBackend.from_url(f"memcached://127.0.0.1:{port}")
    hits = 20
    try:
        for key, keys_per_get in ((ns + "sub:k", 3), ("plain-" + ns[:-1], 1)):
            await backend.set(key, b"value", 60)
            sent, before = len(proxy.lines), await raw_stats(memcached_server.port)
            for _ in range(hits):
                assert await backend.get(key) == b"value"
            commands = proxy.lines[sent:]
            after = await raw_stats(memcached_server.port)
            assert len(commands) == hits, commands
            assert all(c.startswith(b"gets ") and len(c.split()) == 1 + keys_per_get for c in commands)
            # memcached's cmd_get counts keys, not commands: 1 per hit only for a key without namespace
            assert after["cmd_get"] - before["cmd_get"] == hits * keys_per_get
    finally:
        await backend.close()
        await proxy.stop()


@pytest.mark.parametrize("servers", ["memcached_server", "memcached_pair"])
async def test_stamped_read_is_one_command_to_one_server(
    request: pytest.FixtureRequest, servers: str, ns: str
) -> None:
    """write_stamps sets each stamp on every server; a stamped read is then one `gets` to the
    entry's server only (entry, generation tokens and stamps), with one server or two."""
    fixture = request.getfixturevalue(servers)
    ports = [fixture.port] if servers == "memcached_server" else [p.port for p in fixture.processes]
    proxies = [CountingProxy(port) for port in ports]
    fronts = [await proxy.start() for proxy in proxies]
    backend = MemcachedBackend.from_url("memcached://" + ",".join(f"127.0.0.1:{p}" for p in fronts))
    stamps = [f"{ns}!s:{kind}:{i:064x}" for i, kind in enumerate("gnr")]
    keys = [f"{ns}v:k{i}" for i in range(8)]  # spread over both servers of the pair
    try:
        for key in keys:
            await backend.set(key, b"value", 60)
        sent = [len(proxy.lines) for proxy in proxies]
        await backend.write_stamps(dict.fromkeys(stamps, b"token-01"), 60)
        for proxy, start in zip(proxies, sent, strict=True):  # every server, every stamp
            assert sorted(c.split()[1] for c in proxy.lines[start:] if c.startswith(b"set ")) == sorted(
                mc.stamp_key(s).encode() for s in stamps
            )
        assert len({backend._server(mc.entry_key(key)) for key in keys}) == len(ports)
        for key in keys:
            sent = [len(proxy.lines) for proxy in proxies]
            assert await backend.read_stamped(key, stamps) == [b"value"] + [b"token-01"] * 3
            new = [proxy.lines[start:] for proxy, start in zip(proxies, sent, strict=True)]
            assert [len(lines) for lines in new].count(1) == 1 and sum(map(len, new)) == 1, new
            (command,) = new[backend._server(mc.entry_key(key))]  # on the entry's own server
            assert command.startswith(b"gets ")
            assert len(command.split()) == 1 + 1 + len(mc.namespaces(key)) + len(stamps)
    finally:
        await backend.close()
        for proxy in proxies:
            await proxy.stop()


async def test_a_stamp_lost_on_one_server_reads_as_absent_there(
    memcached_pair: MemcachedServers, ns: str
) -> None:
    """A stamp evicted from one server (here deleted) is absent for the entries that server holds,
    while the other server's entries still see it: a loss can only turn entries into misses."""
    backend = MemcachedBackend.from_url(memcached_pair.url)
    stamp = ns + "!s:g:1"
    keys = [f"{ns}k{i}" for i in range(8)]
    try:
        await backend.write_stamps({stamp: b"token-01"}, None)
        lost_on = backend._server(mc.entry_key(keys[0]))
        port = memcached_pair.processes[lost_on].port
        raw = aiomcache.Client("127.0.0.1", port)
        try:
            assert await raw.delete(mc.stamp_key(stamp).encode())
        finally:
            await raw.close()
        for key in keys:
            expected = None if backend._server(mc.entry_key(key)) == lost_on else b"token-01"
            assert await backend.read_stamped(key, [stamp]) == [None, expected]
    finally:
        await backend.close()


def test_declares_stamps() -> None:
    """Memcached offers stamps (its conformance checks must run, not be skipped)."""
    from cacheframe.types import SupportsStamps, SupportsStampsNowait

    backend = MemcachedBackend.from_url("memcached://127.0.0.1:1")
    assert isinstance(backend, SupportsStamps) and not isinstance(backend, SupportsStampsNowait)


# -- interrupted calls (aio-libs/aiomcache#489) -------------------------------------------


async def test_random_cancellations_never_mix_up_replies(memcached_server: MemcachedServer, ns: str) -> None:
    """1,000 reads cancelled at random points; every completed read and every later one is right."""
    backend = MemcachedBackend.from_url(memcached_server.url + "?timeout=5&pool_size=3")
    rng = random.Random(489)
    values = {f"{ns}k{i}": f"value-{i}-".encode() * (i + 1) for i in range(40)}
    keys = list(values)
    outcomes = {"ok": 0, "cancelled": 0}
    wrong: list[str] = []

    async def read(key: str) -> None:
        mode = rng.random()
        try:
            if mode < 0.4:
                got = await asyncio.wait_for(backend.get(key), rng.uniform(0, 0.002))
            elif mode < 0.8:
                task = asyncio.create_task(backend.get(key))
                for _ in range(rng.randrange(4)):
                    await asyncio.sleep(0)
                await asyncio.sleep(rng.uniform(0, 0.001))
                task.cancel()
                got = await task
            else:
                got = await backend.get(key)
        except (asyncio.CancelledError, TimeoutError):
            outcomes["cancelled"] += 1
            return
        outcomes["ok"] += 1
        if got != values[key]:
            wrong.append(key)

    try:
        for key, value in values.items():
            await backend.set(key, value, 120)
        for _ in range(50):
            await asyncio.gather(*(read(rng.choice(keys)) for _ in range(20)))
        assert not wrong, wrong
        assert outcomes["cancelled"] >= 100 and outcomes["ok"] >= 100, outcomes
        for _ in range(3):
            assert [await backend.get(k) for k in keys] == list(values.values())
    finally:
        await backend.close()


async def test_paused_server_times_out(fresh_memcached_server: MemcachedServer, ns: str) -> None:
    """A SIGSTOPped server fails calls with BackendTimeoutError fast; after SIGCONT all is right."""
    process = fresh_memcached_server.process
    warm = MemcachedBackend.from_url(fresh_memcached_server.url)
    cold = MemcachedBackend.from_url(fresh_memcached_server.url)
    try:
        await warm.set(ns + "k", b"v", 60)
        process.pause()
        for backend in (warm, cold):
            started = time.monotonic()
            with pytest.raises(BackendTimeoutError) as caught:
                await backend.get(ns + "k")
            assert time.monotonic() - started < 2
            assert isinstance(caught.value.__cause__, TimeoutError)
        process.resume()
        await warm.set(ns + "k2", b"v2", 60)
        assert [await warm.get(ns + "k"), await warm.get(ns + "k2")] == [b"v", b"v2"]
    finally:
        process.resume()
        await warm.close()
        await cold.close()


async def test_refused_connection_is_backend_error() -> None:
    """Nothing listening: BackendError (not a timeout) chained to the OSError."""
    backend = MemcachedBackend.from_url(f"memcached://127.0.0.1:{free_port()}")
    with pytest.raises(BackendError) as caught:
        await backend.get("k")
    assert not isinstance(caught.value, BackendTimeoutError)
    assert isinstance(caught.value.__cause__, OSError)


async def test_server_closing_mid_reply_is_an_error_not_a_hang() -> None:
    """A server that closes the socket instead of answering gives BackendError, not a spinning loop."""

    async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.close()

    server = await asyncio.start_server(rude, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = MemcachedBackend.from_url(f"memcached://127.0.0.1:{port}?timeout=1")
    try:
        for call in (backend.delete("k"), backend.clear("ns:"), backend.get("k")):
            with pytest.raises(BackendError):
                await call
    finally:
        server.close()
        await backend.close()


# -- event loops and processes -----------------------------------------------------------


# The first two loops end without close(): their sockets are reclaimed by the GC, with a warning.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_two_event_loops_in_sequence(memcached_server: MemcachedServer) -> None:
    """asyncio.run twice on one backend: the second loop gets its own connections."""
    backend = MemcachedBackend.from_url(memcached_server.url)
    key = f"cf-mc-loops-{os.urandom(4).hex()}:k"
    asyncio.run(backend.set(key, b"one", 60))
    assert asyncio.run(backend.get(key)) == b"one"

    async def last() -> bytes | None:
        try:
            return await backend.get(key)
        finally:
            await backend.close()

    assert asyncio.run(last()) == b"one"
    assert len(backend._loops) == 0


async def test_new_connections_after_fork(
    store: MemcachedBackend, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a forked child (a new pid) the parent's connections are never reused."""
    await store.set(ns + "k", b"v", 60)
    parent_state = store._loops.current()
    assert parent_state is not None
    real_pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: real_pid + 1)
    assert await store.get(ns + "k") == b"v"
    assert store._loops.current() not in (None, parent_state)
    for pool in parent_state.pools:  # a real child would leave them to the parent
        pool.retire()


# -- configuration -----------------------------------------------------------------------


def test_url_and_options() -> None:
    """Servers, IPv6, default port, options and settings defaults all parse; mistakes are named."""
    backend = MemcachedBackend.from_url("memcached://a:1,[::1]:2,b?timeout=0.5&pool_size=3")
    assert backend.servers == [("a", 1), ("::1", 2), ("b", 11211)]
    assert (backend.timeout, backend.connect_timeout, backend.pool_size) == (0.5, 0.25, 3)
    from_settings = MemcachedBackend.from_url("memcached://a:1", CacheSettings(timeout=0.7))
    assert (from_settings.timeout, from_settings.connect_timeout) == (0.7, 0.7)
    with pytest.raises(ConfigurationError, match="pool_size.*known options"):
        MemcachedBackend.from_url("memcached://a:1?pool_size=0")
    with pytest.raises(ConfigurationError, match="nope"):
        MemcachedBackend.from_url("memcached://a:1?nope=1")
    for bad in ("memcached://", "memcached://a:99999", "memcached://a:1/db", "memcached://u:p@a:1"):
        with pytest.raises(ConfigurationError):
            MemcachedBackend.from_url(bad)


def test_entry_point() -> None:
    """memcached:// resolves to MemcachedBackend through the registry."""
    assert load_backend_factory("memcached://127.0.0.1:1") is MemcachedBackend


def test_missing_driver_names_the_extra() -> None:
    """Without aiomcache, importing the backend raises MissingDriverError with the pip hint."""
    code = (
        "import sys; sys.modules['aiomcache'] = None\n"
        "from cacheframe.exceptions import MissingDriverError\n"
        "try:\n    import cacheframe.backends.memcached\n"
        "except MissingDriverError as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'cacheframe[memcached]'" in done.stdout


def test_real_fork_child_uses_its_own_connections(memcached_server: MemcachedServer) -> None:
    """After a real os.fork the child opens its own connections and reads correctly; the parent too."""
    backend = MemcachedBackend.from_url(memcached_server.url)
    assert_fork_child_reads_its_own(backend, f"fork-{os.getpid()}:k")


async def test_silent_server_call_within_timeout() -> None:
    """Against a server that accepts and never answers, one call (connecting included) ends
    within timeout + SILENT_MARGIN, never timeout + connect_timeout."""
    with silent_server() as port:
        backend = MemcachedBackend.from_url(f"memcached://127.0.0.1:{port}?timeout=0.5&connect_timeout=0.5")
        await assert_one_call_within_timeout(backend, 0.5)
        await backend.close()
