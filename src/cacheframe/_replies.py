"""The reply to a request from a stored entry: one definition for the decorator and fast paths.

A reply is the entry's status, headers and body, plus this reply's
``Cache-Control``, ``ETag``, cache status (``X-Cache`` and RFC 9211
``Cache-Status``) and ``Age``; a matching
``If-None-Match`` makes it a 304 and HEAD drops the body. The decorator path
wraps the triple in a response object, the fast path sends it over ASGI: the
bytes are the same.
"""

from __future__ import annotations

from typing import Any

from . import http, stats
from ._engine import STALE_LABEL, Binding
from .envelope import ResponseEntry

__all__ = [
    "CHECKED",
    "KEPT_ON_304",
    "Reply",
    "bypass_status",
    "cache_status",
    "hit_headers",
    "remaining",
    "reply",
    "reply_headers",
]

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
    cache_status: bytes | None = None,
) -> Reply:
    """The reply to a request from ``entry``: ``status`` is the X-Cache value (``HIT``, ...),
    ``age`` None for a reply just computed; ``extra`` headers are added (per request);
    ``cache_status`` is the Cache-Status value when not a hit's (see :func:`reply_headers`)."""
    headers = reply_headers(binding, entry, status, age, cache_status)
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
    binding: Binding, entry: ResponseEntry, status: bytes, age: int | None, cache_status: bytes | None = None
) -> list[tuple[bytes, bytes]]:
    """Cache-Control (``max-age`` = the entry's lifetime), ETag, the cache status (X-Cache
    ``status``, and Cache-Status unless turned off) and, unless the reply was just computed
    (``age`` None), Age.

    Cache-Status is ``cache_status`` when given, else that of an entry served without
    computing: ``hit`` with its remaining freshness, negative when stale.

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
    if binding.status_name is not None:
        if cache_status is None:
            cache_status = b"%s; hit; ttl=%d" % (binding.status_name, remaining(entry, age or 0, status))
        headers.append((b"cache-status", cache_status))
    if age is not None:
        headers.append((b"age", b"%d" % age))
    return headers


def remaining(entry: ResponseEntry, age: int, status: bytes) -> int:
    """Cache-Status ``ttl``: the entry's freshness left at ``age`` (whole seconds, as
    ``max-age`` - ``Age`` counts it downstream); negative, at least -1, when served stale."""
    left = int(entry.ttl) - age
    return min(left, -1) if status is STALE_LABEL else left


def cache_status(
    binding: Binding,
    fwd: str,
    *,
    fwd_status: int | None = None,
    ttl: int | None = None,
    stored: bool = False,
    collapsed: bool = False,
    detail: str | None = None,
) -> bytes | None:
    """An RFC 9211 Cache-Status value for a request that went forward (to the view): ``fwd``
    says why (``uri-miss``, ``stale``, ``request``, ``method``, ``bypass``), ``detail`` is a
    reason code (a token); None when Cache-Status is off. A hit's value is
    :func:`reply_headers`'s."""
    if binding.status_name is None:
        return None
    value = b"%s; fwd=%s" % (binding.status_name, fwd.encode())
    if fwd_status is not None:
        value += b"; fwd-status=%d" % fwd_status
    if ttl is not None:
        value += b"; ttl=%d" % ttl
    if stored:
        value += b"; stored"
    if collapsed:
        value += b"; collapsed"
    if detail is not None:
        value += b"; detail=" + detail.encode()
    return value


def bypass_status(binding: Binding, reason: str) -> bytes | None:
    """The Cache-Status of a request answered uncached for a bypass ``reason``: ``fwd=method``
    for a method the cache does not serve, ``fwd=request; detail=no-store`` for the request's
    own ``no-store``, else ``fwd=bypass``; the reason as ``detail``."""
    if reason == stats.REQUEST_NO_STORE:
        return cache_status(binding, "request", detail="no-store")
    fwd = "method" if reason in (stats.METHOD, stats.UNSAFE_METHOD) else "bypass"
    return cache_status(binding, fwd, detail=reason)
