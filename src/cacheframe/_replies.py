"""The reply to a request from a stored entry: one definition for the decorator and fast paths.

A reply is the entry's status, headers and body, plus this reply's
``Cache-Control``, ``ETag``, cache status and ``Age``; a matching
``If-None-Match`` makes it a 304 and HEAD drops the body. The decorator path
wraps the triple in a response object, the fast path sends it over ASGI: the
bytes are the same.
"""

from __future__ import annotations

from typing import Any

from . import http
from ._engine import Binding
from .envelope import ResponseEntry

__all__ = ["CHECKED", "KEPT_ON_304", "Reply", "hit_headers", "reply", "reply_headers"]

# The scope key where the fast path leaves what it read for the full path:
# (store key, what the gateway returned), so the store is not asked twice.
CHECKED = "cacheframe.checked"
# Stored headers a 304 repeats (RFC 9110 §15.4.5): the view's own Cache-Control, and Vary.
KEPT_ON_304 = (b"cache-control", b"vary")
_HEADER_OVERHEAD = 64  # bytes of a header pair beyond its name and value, for the memo's bound

Reply = tuple[int, list[tuple[bytes, bytes]], bytes]


def reply(
    binding: Binding,
    entry: ResponseEntry,
    status: bytes,
    age: int | None,
    if_none_match: str | None,
    head: bool,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> Reply:
    """The reply to a request from ``entry``: ``status`` is the cache status (``HIT``, ...),
    ``age`` None for a reply just computed; ``extra`` headers are added (per request)."""
    headers = reply_headers(binding, entry, status, age)
    if extra:
        headers += extra
    if if_none_match is not None and http.none_match(if_none_match, entry.etag):
        return 304, [h for h in entry.headers if h[0] in KEPT_ON_304] + headers, b""
    return entry.status, entry.headers + headers, b"" if head else entry.body


def hit_headers(binding: Binding, key: str, entry: ResponseEntry, age: int) -> list[tuple[bytes, bytes]]:
    """A plain hit's whole header list, as :func:`reply` makes it: built once per entry and
    second of age (kept by the binding), copied per reply (a middleware may edit it)."""
    memo = binding.replies
    known: Any = memo.get(key)
    if known is None or known[0] is not entry or known[1] != age:
        headers = entry.headers + reply_headers(binding, entry, b"HIT", age)
        size = sum(len(n) + len(v) + _HEADER_OVERHEAD for n, v in headers) + len(key)
        known = (entry, age, headers)
        memo.put(key, known, size)
    return list(known[2])


def reply_headers(
    binding: Binding, entry: ResponseEntry, status: bytes, age: int | None
) -> list[tuple[bytes, bytes]]:
    """Cache-Control (``max-age`` = the entry's lifetime), ETag, the cache status and, unless
    the reply was just computed (``age`` None), Age.

    Age is counted once: a downstream cache keeps the reply ``max-age`` - ``Age`` seconds,
    exactly what is left here. An entry whose view set its own Cache-Control carries the
    value to send as its first header; none is added then."""
    stored = entry.headers
    if stored and stored[0][0] == b"cache-control":
        headers = [(b"etag", entry.etag), (binding.status_header, status)]
    else:
        policy = binding.policy
        cache_control = http.cache_control(  # memoised there
            entry.ttl,
            private=policy.keys_auth,  # private=True or vary=["Authorization"]: per user
            stale_while_revalidate=policy.stale_while_revalidate,
            stale_if_error=policy.stale_if_error,
        ).encode()
        headers = [(b"cache-control", cache_control), (b"etag", entry.etag), (binding.status_header, status)]
    if age is not None:
        headers.append((b"age", b"%d" % age))
    return headers
