"""Micro-benchmarks (pytest-benchmark) of the per-request work on a hit: key, envelope, headers.

Run through ``python benchmarks/run.py --phases micro`` or directly::

    python -m pytest -c benchmarks/micro/pytest.ini benchmarks/micro
"""

from __future__ import annotations

import inspect
import sys
import time
from pathlib import Path

import pytest
from starlette.datastructures import Headers

from cacheframe import envelope, http, keys

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from apps.common import PAYLOAD

ETAG = http.etag_for(PAYLOAD)
STORED_HEADERS = [(b"content-length", str(len(PAYLOAD)).encode()), (b"content-type", b"application/json")]
REQUEST_HEADERS = Headers(raw=[(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")])
RESPONSE = envelope.ResponseEntry(200, STORED_HEADERS, PAYLOAD, ETAG, time.time(), 60.0)
RESPONSE_RAW = envelope.encode(RESPONSE)
VALUE = envelope.ValueEntry("json", b'{"id": 7, "name": "item-7", "tags": ["a", "b"]}', time.time(), 60.0)
VALUE_RAW = envelope.encode(VALUE)


async def _view(n: int = 100, k: int = 0) -> None:
    return None


SIGNATURE = inspect.signature(_view)


@pytest.mark.benchmark(group="key")
def test_key_request_digest(benchmark):
    """The view key: method, path and normalised query, hashed (what every hit computes)."""
    key = benchmark(
        keys.request_digest,
        method="GET",
        root_path="",
        path="/items",
        query_string="n=100&k=7",
        headers=REQUEST_HEADERS,
        cookies={},
    )
    assert len(key) == 32


@pytest.mark.benchmark(group="key")
def test_key_function_digest(benchmark):
    """A plain function's key: arguments bound to the signature, canonically encoded, hashed."""
    key = benchmark(keys.function_digest, SIGNATURE, (100, 7), {})
    assert key == keys.function_digest(SIGNATURE, (), {"n": 100, "k": 7})


@pytest.mark.benchmark(group="envelope")
def test_envelope_decode_response(benchmark):
    """Decode a stored 10.6 kB response (what every hit does with the store's bytes)."""
    entry = benchmark(envelope.decode, RESPONSE_RAW)
    assert entry.body == PAYLOAD


@pytest.mark.benchmark(group="envelope")
def test_envelope_encode_response(benchmark):
    """Encode a rendered response for the store (once per miss)."""
    assert benchmark(envelope.encode, RESPONSE) == RESPONSE_RAW


@pytest.mark.benchmark(group="envelope")
def test_envelope_decode_value(benchmark):
    """Decode a small function value entry."""
    assert benchmark(envelope.decode, VALUE_RAW).payload == VALUE.payload


def _hit_headers(entry: envelope.ResponseEntry) -> list[tuple[bytes, bytes]]:
    age = int(entry.age())
    cache_control = http.cache_control(entry.ttl, age, private=False)
    return [
        *entry.headers,
        (b"cache-control", cache_control.encode()),
        (b"etag", entry.etag),
        (b"x-cache", b"HIT"),
        (b"age", str(age).encode()),
    ]


@pytest.mark.benchmark(group="headers")
def test_headers_hit(benchmark):
    """A hit's reply headers: stored ones plus Cache-Control (remaining max-age), ETag, X-Cache, Age."""
    headers = benchmark(_hit_headers, RESPONSE)
    assert (b"x-cache", b"HIT") in headers


@pytest.mark.benchmark(group="headers")
def test_headers_cache_control(benchmark):
    """``Cache-Control`` alone, with stale-while-revalidate and stale-if-error."""
    value = benchmark(
        http.cache_control, 60.0, 12, private=False, stale_while_revalidate=30, stale_if_error=300
    )
    assert value.startswith("public, max-age=48")


@pytest.mark.benchmark(group="headers")
def test_headers_if_none_match(benchmark):
    """``If-None-Match`` against the stored ETag (a revalidating client's hit)."""
    assert benchmark(http.none_match, f'W/"other", {ETAG.decode()}', ETAG)


@pytest.mark.benchmark(group="headers")
def test_headers_etag_for(benchmark):
    """The ETag of a 10.6 kB body (once per miss)."""
    assert benchmark(http.etag_for, PAYLOAD) == ETAG
