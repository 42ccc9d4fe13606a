"""The versioned binary envelope every stored entry travels in.

Layout (network byte order)::

    magic  b"\\xcfF"  version u8  kind u8 ("R" response | "V" value)
    created f64 (Unix time)  ttl f64  stale f64 (seconds kept past ttl)
    delta f64 (seconds the value took to compute, for early refresh)
    seal (version 2): deps u16-len, hard u16-len, soft u16-len, tag count u8,
       (u8-len utf-8 tag)*, tag_hard u16-len, tag_soft u16-len
    R: status u16, etag u8-len bytes, header count u16, (u16-len name, u16-len value)*,
       body u32-len bytes
    V: serializer u8-len ascii, payload u32-len bytes

Every length is checked and nothing may follow the last field, so a truncated,
padded or foreign value raises :class:`~cacheframe.exceptions.EntryError`
(which callers treat as a miss). An entry a field of which does not fit its
length (a header name or value over 65,535 bytes, say) cannot be encoded:
:func:`encode` raises ``EntryError`` and the response is served unstored.
"""

from __future__ import annotations

import math
import random
import struct
import time
from dataclasses import dataclass, field

from .exceptions import EntryError

__all__ = ["NO_SEAL", "ResponseEntry", "Seal", "ValueEntry", "decode", "encode", "freshness"]

MAGIC = b"\xcfF"
VERSION = 2  # 2: the seal block follows the head (1: none, read as NO_SEAL)
_HEAD = struct.Struct("!2sBcdddd")
_U8 = struct.Struct("!B")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U16_MAX = 0xFFFF
_NO_SEAL_BYTES = b"\x00\x00" * 3 + b"\x00" + b"\x00\x00" * 2


@dataclass(frozen=True, slots=True)
class Seal:
    """The stamps an entry was computed under (see :mod:`cacheframe._stamps`): it is valid only
    while each stamp still holds the token sealed here.

    ``deps`` names the request-derived dependencies (a digest of their stamp keys), ``hard``
    and ``soft`` are their tokens in order; ``tags`` are the tags taken from the result, with
    their tokens in ``tag_hard`` and ``tag_soft``. An entry with no dependencies has
    ``NO_SEAL``."""

    deps: bytes = b""
    hard: bytes = b""
    soft: bytes = b""
    tags: tuple[str, ...] = ()
    tag_hard: bytes = b""
    tag_soft: bytes = b""


NO_SEAL = Seal()


@dataclass(slots=True)
class ResponseEntry:
    """A rendered response: status, headers (raw, lower-case names), body, ETag."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    etag: bytes
    created: float
    ttl: float
    stale: float = 0.0
    delta: float = 0.0
    seal: Seal = NO_SEAL
    # The stamps' tokens (an immutable tuple) and dependency set the seal was last found to
    # match by the engine: a later read of the same tuple needs no new check. Never stored.
    checked: object = field(default=None, init=False, compare=False, repr=False)
    checked_deps: object = field(default=None, init=False, compare=False, repr=False)

    def age(self, now: float | None = None) -> float:
        """Seconds since the entry was stored (never negative)."""
        return max(0.0, (time.time() if now is None else now) - self.created)


@dataclass(slots=True)
class ValueEntry:
    """A plain function's serialised return value."""

    serializer: str
    payload: bytes
    created: float
    ttl: float
    stale: float = 0.0
    delta: float = 0.0
    seal: Seal = NO_SEAL
    # The stamps' tokens (an immutable tuple) and dependency set the seal was last found to
    # match by the engine: a later read of the same tuple needs no new check. Never stored.
    checked: object = field(default=None, init=False, compare=False, repr=False)
    checked_deps: object = field(default=None, init=False, compare=False, repr=False)

    def age(self, now: float | None = None) -> float:
        """Seconds since the entry was stored (never negative)."""
        return max(0.0, (time.time() if now is None else now) - self.created)


def encode(entry: ResponseEntry | ValueEntry) -> bytes:
    """Serialise an entry into its envelope; :class:`EntryError` if a field does not fit."""
    try:
        return _encode(entry)
    except (struct.error, UnicodeEncodeError) as exc:  # only raised for what does not fit
        raise EntryError(f"entry cannot be stored: {_misfit(entry)}") from exc


def _misfit(entry: ResponseEntry | ValueEntry) -> str:
    """Which field of ``entry`` is too large for the envelope (for the log)."""
    if isinstance(entry, ValueEntry):
        return f"serializer name {entry.serializer!r} or a payload of {len(entry.payload)} bytes"
    for name, value in entry.headers:
        if len(name) > _U16_MAX or len(value) > _U16_MAX:
            shown = name[:40].decode("latin-1")
            size = len(name) + len(value)
            return f"header {shown!r} is {size} bytes (at most {_U16_MAX} per name or value)"
    return (
        f"status {entry.status}, {len(entry.headers)} headers, "
        f"ETag of {len(entry.etag)} bytes or a body of {len(entry.body)} bytes"
    )


def _encode(entry: ResponseEntry | ValueEntry) -> bytes:
    if isinstance(entry, ResponseEntry):
        parts = [
            _HEAD.pack(MAGIC, VERSION, b"R", entry.created, entry.ttl, entry.stale, entry.delta),
            _seal_bytes(entry.seal),
            _U16.pack(entry.status),
            _U8.pack(len(entry.etag)),
            entry.etag,
            _U16.pack(len(entry.headers)),
        ]
        for name, value in entry.headers:
            parts += [_U16.pack(len(name)), name, _U16.pack(len(value)), value]
        parts += [_U32.pack(len(entry.body)), entry.body]
        return b"".join(parts)
    name = entry.serializer.encode("ascii")
    return b"".join(
        (
            _HEAD.pack(MAGIC, VERSION, b"V", entry.created, entry.ttl, entry.stale, entry.delta),
            _seal_bytes(entry.seal),
            _U8.pack(len(name)),
            name,
            _U32.pack(len(entry.payload)),
            entry.payload,
        )
    )


def _seal_bytes(seal: Seal) -> bytes:
    if seal is NO_SEAL:
        return _NO_SEAL_BYTES
    parts = [_U16.pack(len(seal.deps)), seal.deps, _U16.pack(len(seal.hard)), seal.hard]
    parts += [_U16.pack(len(seal.soft)), seal.soft, _U8.pack(len(seal.tags))]
    for tag in seal.tags:
        name = tag.encode("utf-8", "surrogatepass")
        parts += [_U8.pack(len(name)), name]
    parts += [_U16.pack(len(seal.tag_hard)), seal.tag_hard, _U16.pack(len(seal.tag_soft)), seal.tag_soft]
    return b"".join(parts)


def _read_seal(reader: _Reader) -> Seal:
    deps = reader.take(reader.unpack(_U16))
    hard = reader.take(reader.unpack(_U16))
    soft = reader.take(reader.unpack(_U16))
    tags = tuple(
        reader.take(reader.unpack(_U8)).decode("utf-8", "surrogatepass") for _ in range(reader.unpack(_U8))
    )
    tag_hard = reader.take(reader.unpack(_U16))
    tag_soft = reader.take(reader.unpack(_U16))
    if not (deps or hard or soft or tags or tag_hard or tag_soft):
        return NO_SEAL
    return Seal(deps, hard, soft, tags, tag_hard, tag_soft)


def decode(data: bytes) -> ResponseEntry | ValueEntry:
    """Parse an envelope; anything malformed raises :class:`EntryError`."""
    try:
        magic, version, kind, created, ttl, stale, delta = _HEAD.unpack_from(data, 0)
    except struct.error as exc:
        raise EntryError(f"entry too short ({len(data)} bytes)") from exc
    if magic != MAGIC:
        raise EntryError("not a cacheframe entry (bad magic)")
    if version not in (1, VERSION):
        raise EntryError(f"unknown entry version {version}")
    reader = _Reader(data, _HEAD.size)
    try:
        seal = _read_seal(reader) if version == VERSION else NO_SEAL
        if kind == b"R":
            status = reader.unpack(_U16)
            etag = reader.take(reader.unpack(_U8))
            headers = []
            for _ in range(reader.unpack(_U16)):
                name = reader.take(reader.unpack(_U16))
                headers.append((name, reader.take(reader.unpack(_U16))))
            body = reader.take(reader.unpack(_U32))
            reader.finish()
            return ResponseEntry(status, headers, body, etag, created, ttl, stale, delta, seal)
        if kind == b"V":
            serializer = reader.take(reader.unpack(_U8)).decode("ascii")
            payload = reader.take(reader.unpack(_U32))
            reader.finish()
            return ValueEntry(serializer, payload, created, ttl, stale, delta, seal)
    except (struct.error, UnicodeDecodeError) as exc:
        raise EntryError(f"damaged entry: {exc}") from exc
    raise EntryError(f"unknown entry kind {kind!r}")


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def unpack(self, fmt: struct.Struct) -> int:
        (value,) = fmt.unpack_from(self.data, self.pos)
        self.pos += fmt.size
        return int(value)

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise EntryError("entry truncated")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise EntryError("trailing bytes after entry")


def freshness(
    entry: ResponseEntry | ValueEntry,
    *,
    max_age: int | None = None,
    stale_while_revalidate: float = 0.0,
    xfetch_beta: float = 0.0,
    now: float | None = None,
) -> str:
    """``"fresh"``, ``"stale"`` (servable while one refresh runs) or ``"expired"``.

    ``max_age`` (a request's ``Cache-Control: max-age``) caps the acceptable
    age and disables stale serving. With ``xfetch_beta`` > 0 a fresh entry is
    reported ``"expired"`` early with the XFetch probability (Vattani et al.,
    2015), so one caller recomputes a hot key before it expires for everyone.
    """
    now = time.time() if now is None else now
    age = entry.age(now)
    if max_age is not None:
        return "fresh" if age <= max_age and age < entry.ttl else "expired"
    if age < entry.ttl:
        if xfetch_beta > 0 and entry.delta > 0:
            # 1 - random() lies in (0, 1], so the logarithm is defined and <= 0.
            early = -entry.delta * xfetch_beta * math.log(1.0 - random.random())
            if now + early >= entry.created + entry.ttl:
                return "expired"
        return "fresh"
    if age < entry.ttl + min(stale_while_revalidate, entry.stale):
        return "stale"
    return "expired"
