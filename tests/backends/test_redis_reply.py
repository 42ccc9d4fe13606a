"""The one-pass reader of GET/MGET replies (``_redis_reply``): on a stream fed by hand, then on a server.

The stream cases feed a real ``asyncio.StreamReader`` the bytes a server could send, split
anywhere, and check what ``read_bulks`` returns or raises and whether it disconnects. The
server cases check the lane's GET and stamped reads end to end (RESP2 through this reader,
RESP3 through redis-py's parser): huge and binary values, missing keys, errors, deadlines.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis._parsers import _AsyncRESP2Parser

from cacheframe.backends._redis_client import rex
from cacheframe.backends._redis_exec import LaneExecutor
from cacheframe.backends._redis_reply import pack, read_bulks
from cacheframe.backends.redis import RedisBackend
from cacheframe.exceptions import BackendError, BackendTimeoutError
from servers.redis import RedisServer

from .redis_support import SUITE, assert_in_step_after_wrongtype, client_of, raw_client, unique_ns


class _Conn:
    """What ``read_bulks`` uses of a redis-py connection: its stream, parser, disconnect."""

    def __init__(self) -> None:
        self._reader = asyncio.StreamReader()
        self._parser = _AsyncRESP2Parser(65536)
        self.disconnected = False

    async def disconnect(self, nowait: bool = False) -> None:
        self.disconnected = True

    def _host_error(self) -> str:
        return "stream"


async def _read(*chunks: bytes, eof: bool = False) -> tuple[Any, _Conn]:
    """``read_bulks`` on a stream that receives ``chunks`` one loop turn apart (then EOF)."""
    conn = _Conn()
    reading = asyncio.ensure_future(read_bulks(conn))
    for chunk in chunks:
        await asyncio.sleep(0)
        conn._reader.feed_data(chunk)
    if eof:
        conn._reader.feed_eof()
    return await asyncio.wait_for(reading, 5), conn


MGET_REPLY = b"*5\r\n$3\r\nabc\r\n$-1\r\n$0\r\n\r\n$6\r\na\r\n$\r\n\r\n$1\r\n-\r\n"
MGET_VALUES = [b"abc", None, b"", b"a\r\n$\r\n", b"-"]


def test_pack_is_resp() -> None:
    """A command packed by hand is what redis-py packs (keys UTF-8)."""
    assert pack(b"MGET", ("a", "é:1")) == b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$4\r\n\xc3\xa9:1\r\n"
    assert pack(b"GET", ("k",)) == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"


async def test_whole_replies() -> None:
    """Arrays of bulk strings (null, empty, holding CRLF), one bulk string, null replies."""
    assert (await _read(MGET_REPLY))[0] == MGET_VALUES
    assert (await _read(b"$5\r\nhello\r\n"))[0] == b"hello"
    assert (await _read(b"$-1\r\n"))[0] is None
    assert (await _read(b"*0\r\n"))[0] == []
    assert (await _read(b"*-1\r\n"))[0] is None


@pytest.mark.parametrize("reply", [MGET_REPLY, b"$7\r\nab\r\ncde\r\n"], ids=["mget", "get"])
async def test_reply_split_anywhere(reply: bytes) -> None:
    """However the reply is cut across reads (at every byte, or byte by byte), the same values."""
    expected = (await _read(reply))[0]
    for cut in range(1, len(reply)):
        assert (await _read(reply[:cut], reply[cut:]))[0] == expected, cut
    assert (await _read(*(reply[i : i + 1] for i in range(len(reply)))))[0] == expected


async def test_huge_values() -> None:
    """Values of several MiB arriving in pieces come back whole and exact."""
    big, other = os.urandom(5 * 2**20 + 3), os.urandom(70_000)
    reply = b"*3\r\n$%d\r\n%s\r\n$-1\r\n$%d\r\n%s\r\n" % (len(big), big, len(other), other)
    chunks = [reply[i : i + 100_000] for i in range(0, len(reply), 100_000)]
    assert (await _read(*chunks))[0] == [big, None, other]


async def test_error_replies() -> None:
    """An error reply raises redis-py's exception for it: a ResponseError keeps the connection;
    one meaning the server cannot serve (LOADING) disconnects, as redis-py does."""
    with pytest.raises(rex.ResponseError, match="WRONGTYPE Operation") as caught:
        await _read(b"-WRONGTYPE Operation against a key\r\n")
    assert not isinstance(caught.value, rex.ConnectionError)
    conn = _Conn()
    conn._reader.feed_data(b"-NOSCRIPT No matching script\r\n")
    with pytest.raises(rex.NoScriptError):
        await read_bulks(conn)
    assert not conn.disconnected
    conn = _Conn()
    conn._reader.feed_data(b"-LOADING Redis is loading\r\n")
    with pytest.raises(rex.BusyLoadingError):
        await read_bulks(conn)
    assert conn.disconnected


@pytest.mark.parametrize(
    "data",
    [b"", b"*2\r\n$3\r\nabc\r\n", b"*2\r\n$3\r\nab", b"$10\r\nabc", b"$3"],
    ids=["nothing", "missing-element", "mid-element", "mid-value", "mid-length"],
)
async def test_closed_mid_reply_is_connection_error(data: bytes) -> None:
    """A stream that ends before the reply does is a ConnectionError, the connection dropped."""
    conn = _Conn()
    conn._reader.feed_data(data)
    conn._reader.feed_eof()
    with pytest.raises(rex.ConnectionError):
        await read_bulks(conn)
    assert conn.disconnected


async def test_reset_is_connection_error() -> None:
    """A reset connection (the stream's error) is a ConnectionError, the connection dropped."""
    conn = _Conn()
    conn._reader.feed_data(b"*2\r\n$1\r\na\r\n")
    reading = asyncio.ensure_future(read_bulks(conn))
    await asyncio.sleep(0)
    conn._reader.set_exception(ConnectionResetError("reset by peer"))
    with pytest.raises(rex.ConnectionError, match="reset by peer"):
        await reading
    assert conn.disconnected


@pytest.mark.parametrize(
    "data",
    [
        b"+OK\r\n",  # a reply of another type
        b"*1\r\n:1\r\n",  # an array holding no bulk string
        b"$3\r\nabcd\r\n",  # a value longer than its length
        b"$x\r\n",  # a length that is no number
        b"*1\r\n$1\r\na\r\n$1\r\nb\r\n",  # a second reply behind the first: out of step
        b"-ERR late\r\n+OK\r\n",  # an error reply, then more
    ],
)
async def test_malformed_reply_is_invalid_response(data: bytes) -> None:
    """Bytes that are no GET/MGET reply, or more than one reply, raise InvalidResponse (the lane
    drops the connection after it)."""
    with pytest.raises(rex.InvalidResponse):
        await _read(data)


# -- on a server, through the lane -----------------------------------------------------------


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
async def backend(request: pytest.FixtureRequest, redis_server: RedisServer) -> AsyncIterator[RedisBackend]:
    """A URL-built backend over the lane: RESP2 (this reader) or RESP3 (redis-py's parser)."""
    made = RedisBackend.from_url(f"{redis_server.url}?protocol={request.param}&{SUITE}")
    assert isinstance(made._exec, LaneExecutor)
    yield made
    await made.close()


async def test_stamped_reads_and_gets(backend: RedisBackend) -> None:
    """Entries (binary, empty, several MiB) and stamps, present or not, read back exactly."""
    ns = unique_ns()
    big = os.urandom(3 * 2**20) + b"\r\n$-1\r\n"
    await backend.set(ns + "big", big, 60)
    await backend.set(ns + "empty", b"", 60)
    await backend.write_stamps({ns + "s1": b"token-1\r\n", ns + "s2": b"\x00\xff"}, 60)
    assert await backend.read_stamped(ns + "big", [ns + "s1", ns + "gone", ns + "s2"]) == [
        big,
        b"token-1\r\n",
        None,
        b"\x00\xff",
    ]
    assert await backend.read_stamped(ns + "gone", [ns + "s1"]) == [None, b"token-1\r\n"]
    assert await backend.read_stamped(ns + "empty", []) == [b""]
    assert [await backend.get(ns + k) for k in ("big", "empty", "gone")] == [big, b"", None]
    protocol = client_of(backend).connection_pool.connection_kwargs["protocol"]
    lane = backend._exec.lanes.current()
    assert lane is not None and lane.resp2 is (protocol == 2)  # RESP3 keeps redis-py's parser


async def test_error_reply_keeps_the_lane_in_step(backend: RedisBackend, redis_server: RedisServer) -> None:
    """A WRONGTYPE reply to a GET is a BackendError; the connection then reads its own replies."""
    await assert_in_step_after_wrongtype(backend, redis_server, backend.get, "WRONGTYPE")


async def test_killed_connection_is_retried(backend: RedisBackend, redis_server: RedisServer) -> None:
    """A pooled connection the server closed: the stamped read retries on a fresh one."""
    ns = unique_ns()
    await backend.set(ns + "e", b"E", 60)
    raw = raw_client(redis_server)
    try:
        assert await raw.client_kill_filter(_type="normal", skipme=True) >= 1
        assert await backend.read_stamped(ns + "e", [ns + "s"]) == [b"E", None]
    finally:
        await raw.aclose()


async def test_paused_server_times_out_then_reads_in_step(fresh_redis_server: RedisServer) -> None:
    """A stamped read to a SIGSTOPped server is a BackendTimeoutError (the connection, out of
    step, dropped); a stamped read cancelled from outside is too; later reads get their own
    replies."""
    backend = RedisBackend.from_url(fresh_redis_server.url + "?timeout=0.3")
    await backend.set("a", b"A", 60)
    await backend.set("b", b"B", 60)
    fresh_redis_server.process.pause()
    try:
        with pytest.raises(BackendTimeoutError):
            await backend.read_stamped("a", ["s"])
        task = asyncio.ensure_future(backend.read_stamped("a", ["s"]))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        fresh_redis_server.process.resume()
    assert [await backend.read_stamped("b", ["s"]) for _ in range(3)] == [[b"B", None]] * 3
    with pytest.raises(BackendError):  # an unknown command through the same lane still fails alone
        await backend._exec.call("NOPE", "NOPE")
    assert await backend.get("a") == b"A"
    await backend.close()
