"""The entry envelope: round trips, and every kind of damage is an EntryError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cacheframe import envelope
from cacheframe.envelope import ResponseEntry, ValueEntry
from cacheframe.exceptions import EntryError

RESPONSE = ResponseEntry(
    200, [(b"content-type", b"application/json"), (b"x-a", b"1")], b'{"a":1}', b'"e"', 1700000000.5, 60.0
)
VALUE = ValueEntry("json", b"[1,2]", 1700000000.5, 30.0, 5.0)


@pytest.mark.parametrize("entry", [RESPONSE, VALUE])
def test_round_trip(entry: ResponseEntry | ValueEntry) -> None:
    """encode then decode gives the same entry."""
    assert envelope.decode(envelope.encode(entry)) == entry


@given(
    st.integers(100, 599),
    st.lists(st.tuples(st.binary(max_size=50), st.binary(max_size=200)), max_size=10),
    st.binary(max_size=5000),
)
def test_response_round_trip_property(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """Any status, headers and body survive."""
    entry = ResponseEntry(status, headers, body, b'"x"', 1.0, 2.0)
    assert envelope.decode(envelope.encode(entry)) == entry


@pytest.mark.parametrize("entry", [RESPONSE, VALUE])
def test_truncated_at_every_offset(entry: ResponseEntry | ValueEntry) -> None:
    """Every proper prefix of an entry is refused."""
    data = envelope.encode(entry)
    for cut in range(len(data)):
        with pytest.raises(EntryError):
            envelope.decode(data[:cut])


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", b"\xcfF\x02" + b"\x00" * 40, b"\xcfF\x01Z" + b"\x00" * 40, b"\x80\x04K\x01."],
)
def test_garbage_refused(data: bytes) -> None:
    """Empty, foreign, unknown-version and unknown-kind values are refused."""
    with pytest.raises(EntryError):
        envelope.decode(data)


def test_trailing_bytes_refused() -> None:
    """Bytes after the last field are refused."""
    with pytest.raises(EntryError):
        envelope.decode(envelope.encode(RESPONSE) + b"x")


@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data: bytes) -> None:
    """Random bytes either decode or raise EntryError, nothing else."""
    with contextlib.suppress(EntryError):
        envelope.decode(data)


def test_oversized_header_cannot_be_encoded_with_a_clear_error() -> None:
    """A header value over 65,535 bytes raises EntryError naming the header; 65,535 still fits."""
    fits = ResponseEntry(200, [(b"x-big", b"a" * 0xFFFF)], b"", b'"e"', 1.0, 60.0)
    assert envelope.decode(envelope.encode(fits)) == fits
    too_big = ResponseEntry(200, [(b"x-big", b"a" * 70_000)], b"", b'"e"', 1.0, 60.0)
    with pytest.raises(EntryError, match="header 'x-big' is 70005 bytes"):
        envelope.encode(too_big)
