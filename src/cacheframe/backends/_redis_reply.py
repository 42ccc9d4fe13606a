"""A hit's command packed and its reply read in one pass, beside redis-py's parser.

redis-py's pure-Python RESP parser reads a reply element by element: each one is a
coroutine of its own, a ``readline`` and a ``readexactly`` on the stream, so an
``MGET`` of an entry and two stamps costs several times the parsing of a ``GET``.
:func:`read_bulks` reads what the connection's stream holds in one call and splits
it there: the reply of ``GET`` (one bulk string) or ``MGET`` (an array of them).

It reads RESP2 only (RESP3 may interleave push messages: those connections keep
redis-py's parser) and only replies to one command sent alone on the connection, so
nothing may follow the reply: bytes after it mean the connection is out of step, an
error that drops it. redis-py's parser holds nothing between replies (it reads lines
and lengths exactly; hiredis's reader is emptied by each reply), so reading the stream
beside it is safe.

Errors are redis-py's, as its ``read_response`` raises them: an error reply raises
its ``ResponseError`` (the connection stays in step) or, for ``LOADING`` and the like,
its ``ConnectionError`` after disconnecting; a closed or reset connection is
disconnected and raises ``ConnectionError``; a malformed reply raises
``InvalidResponse`` (the caller drops the connection, as after any other error).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._redis_client import rex

__all__ = ["pack", "read_bulks"]

_CHUNK = 65536  # at most this much per read from the stream; more is read as needed
_CLOSED = "Connection closed by server."


def pack(name: bytes, keys: Sequence[str]) -> bytes:
    """``name key...`` in RESP (``name`` encoded already, ``b"MGET"``); keys encoded as UTF-8."""
    parts = [b"*%d\r\n$%d\r\n%s\r\n" % (len(keys) + 1, len(name), name)]
    for key in keys:
        data = key.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


async def read_bulks(conn: Any) -> Any:
    """The reply to one command on ``conn`` (RESP2): bytes or ``None``, or a list of them."""
    reader = conn._reader
    try:
        buf: bytes = await reader.read(_CHUNK)
        end = buf.find(b"\r\n")
        while end < 0:
            buf = await _more(reader, buf)
            end = buf.find(b"\r\n")
        kind = buf[0]
        if kind == 42 or kind == 36:  # "*" an array of bulk strings (MGET), "$" one of them (GET)
            count, pos = (int(buf[1:end]), end + 2) if kind == 42 else (1, 0)
            values: list[bytes | None] = []
            for _ in range(count):
                end = buf.find(b"\r\n", pos)
                while end < 0:
                    buf, pos = await _more(reader, buf[pos:]), 0
                    end = buf.find(b"\r\n")
                if buf[pos] != 36:
                    raise _malformed(buf[pos:end])
                size = int(buf[pos + 1 : end])
                pos = end + 2
                if size < 0:  # $-1: a null bulk string (no such key)
                    values.append(None)
                    continue
                stop = pos + size
                if len(buf) < stop + 2:  # the rest of a long value: read exactly that
                    buf = buf[pos:] + await reader.readexactly(stop + 2 - len(buf))
                    stop, pos = size, 0
                if buf[stop : stop + 2] != b"\r\n":
                    raise _malformed(buf[stop : stop + 2])
                values.append(buf[pos:stop])
                pos = stop + 2
            reply: Any = values if kind == 42 else values[0]
            if count < 0:  # *-1: a null array
                reply = None
        elif kind == 45:  # "-": an error reply
            error = conn._parser.parse_error(buf[1:end].decode("utf-8", errors="replace"))
            pos = end + 2
            if pos != len(buf):
                raise _malformed(buf[pos:])
            if isinstance(error, rex.ConnectionError):  # LOADING, MASTERDOWN...: as redis-py does
                await conn.disconnect(nowait=True)
            raise error
        else:
            raise _malformed(buf[:end])
        if pos != len(buf):  # more than one reply: out of step
            raise _malformed(buf[pos:])
        return reply
    except (OSError, EOFError) as exc:  # reset, or closed mid-reply (IncompleteReadError)
        await conn.disconnect(nowait=True)
        raise rex.ConnectionError(f"Error while reading from {conn._host_error()}: {exc!r}") from exc
    except ValueError as exc:  # a length that is no number
        raise rex.InvalidResponse(f"Protocol error: {exc}") from exc


async def _more(reader: Any, buf: bytes) -> bytes:
    """``buf`` and the next bytes the stream has (waiting for some); EOF raises."""
    data: bytes = await reader.read(_CHUNK)
    if not data:
        raise EOFError(_CLOSED)
    return buf + data


def _malformed(data: bytes) -> rex.InvalidResponse:
    return rex.InvalidResponse(f"Protocol error, unexpected reply bytes: {data[:40]!r}")
