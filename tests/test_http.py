"""HTTP caching rules as pure functions."""

from __future__ import annotations

import pytest

from cacheframe import http


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("no-cache", {"no-cache": None}),
        (" Max-Age = 5 ,NO-STORE", {"max-age": "5", "no-store": None}),
        ('private="set-cookie, x", max-age=3', {"private": "set-cookie, x", "max-age": "3"}),
        ("", {}),
        (",,", {}),
    ],
)
def test_parse_cache_control(value: str, expected: dict[str, str | None]) -> None:
    """Directives are lower-cased, trimmed and unquoted; quoted commas do not split."""
    assert http.parse_cache_control(value) == expected


@pytest.mark.parametrize(
    ("cc", "pragma", "expected"),
    [
        (None, None, http.RequestDirectives()),
        ("no-store", None, http.RequestDirectives(no_store=True)),
        ("No-Cache", None, http.RequestDirectives(no_cache=True)),
        ("max-age=0", None, http.RequestDirectives(no_cache=True, max_age=0)),
        ("max-age=30", None, http.RequestDirectives(max_age=30)),
        ("max-age=abc", None, http.RequestDirectives(no_cache=True, max_age=0)),
        (None, "no-cache", http.RequestDirectives(no_cache=True)),
        ("max-age=30", "no-cache", http.RequestDirectives(max_age=30)),  # Cache-Control wins
    ],
)
def test_request_directives(cc: str | None, pragma: str | None, expected: http.RequestDirectives) -> None:
    """Request Cache-Control and Pragma parse into what the cache must do."""
    assert http.request_directives(cc, pragma) == expected


def test_etag_strong_quoted_deterministic() -> None:
    """The ETag is a strong quoted digest, equal for equal bodies."""
    tag = http.etag_for(b"body")
    assert tag.startswith(b'"') and tag.endswith(b'"') and not tag.startswith(b"W/")
    assert tag == http.etag_for(b"body") != http.etag_for(b"other")


@pytest.mark.parametrize(
    ("header", "match"),
    [
        ('"a"', True),
        ('W/"a"', True),
        ('"b", "a"', True),
        ("*", True),
        ('"b"', False),
        ("", False),
        (None, False),
    ],
)
def test_if_none_match_weak_comparison(header: str | None, match: bool) -> None:
    """If-None-Match compares weakly, accepts lists and *."""
    assert http.none_match(header, b'"a"') is match


@pytest.mark.parametrize(
    ("status", "headers", "reason"),
    [
        (200, [], None),
        (204, [], None),
        (201, [(b"cache-control", b"public, max-age=5")], None),
        (404, [], "status 404"),
        (500, [], "status 500"),
        (206, [], "status 206"),
        (301, [], "status 301"),
        (200, [(b"set-cookie", b"a=b")], "Set-Cookie"),
        (200, [(b"Cache-Control", b"No-Store")], "Cache-Control: no-store"),
        (200, [(b"cache-control", b"public, PRIVATE")], "Cache-Control: private"),
        (200, [(b"cache-control", b"no-cache")], "Cache-Control: no-cache"),
        (200, [(b"vary", b"Accept, *")], "Vary: *"),
    ],
)
def test_unstorable_reason(status: int, headers: list[tuple[bytes, bytes]], reason: str | None) -> None:
    """Only 2xx (not 206) responses without cookies, no-store/private/no-cache or Vary: * store."""
    assert http.unstorable_reason(status, headers) == reason


def test_replayable_headers_drop_hop_by_hop() -> None:
    """Hop-by-hop and per-reply headers are not stored; names are lower-cased."""
    kept = http.replayable_headers(
        [
            (b"Content-Type", b"a"),
            (b"Connection", b"close"),
            (b"ETag", b'"x"'),
            (b"X-Cache", b"HIT"),
            (b"Age", b"3"),
        ]
    )
    assert kept == [(b"content-type", b"a")]


def test_cache_control_value() -> None:
    """max-age is the whole lifetime (Age says how much is gone), rounded up; stale extensions appended."""
    assert http.cache_control(60, private=False) == "public, max-age=60"
    assert http.cache_control(60, private=True) == "private, max-age=60"
    assert http.cache_control(0.4, private=False) == "public, max-age=1"
    assert http.cache_control(60, private=False, stale_while_revalidate=30, stale_if_error=600) == (
        "public, max-age=60, stale-while-revalidate=30, stale-if-error=600"
    )


def test_merge_vary() -> None:
    """Vary lists merge case-insensitively, keeping first spelling and order."""
    assert http.merge_vary(["Accept"], ["accept", "X-Region"]) == "Accept, X-Region"


@pytest.mark.parametrize(
    ("headers", "lifetime", "max_age", "revalidate"),
    [
        ([], None, None, False),
        ([(b"Cache-Control", b"max-age=30")], 30, 30, False),
        ([(b"Cache-Control", b"max-age=30, s-maxage=5")], 5, 30, False),  # s-maxage wins
        ([(b"Cache-Control", b"max-age=30"), (b"cache-control", b"max-age=10")], 10, 10, False),
        ([(b"Cache-Control", b"max-age=x, must-revalidate")], 0, 0, True),  # unparsable: stale
        ([(b"Cache-Control", b"proxy-revalidate")], None, None, True),
        (
            [(b"Expires", b"Thu, 01 Jan 1970 00:01:40 GMT"), (b"Date", b"Thu, 01 Jan 1970 00:00:00 GMT")],
            100,
            None,
            False,
        ),
        ([(b"Expires", b"0")], 0, None, False),  # an invalid Expires is in the past
        ([(b"Expires", b"0"), (b"Cache-Control", b"max-age=7")], 7, 7, False),  # max-age wins
    ],
)
def test_response_freshness(
    headers: list[tuple[bytes, bytes]], lifetime: float | None, max_age: int | None, revalidate: bool
) -> None:
    """A response's own lifetime: s-maxage, else max-age, else Expires - Date; lowest on repeats."""
    own = http.response_freshness(headers)
    assert (own.lifetime, own.max_age, own.revalidate) == (lifetime, max_age, revalidate)


@pytest.mark.parametrize(
    "value", ["max-age=0", "s-maxage=0, max-age=9", "must-revalidate, max-age=0", "max-age=-1"]
)
def test_zero_lifetime_is_unstorable(value: str) -> None:
    """A response granting no freshness is not stored."""
    reason = http.unstorable_reason(200, [(b"cache-control", value.encode())])
    assert reason is not None and "no freshness" in reason


def test_advertised_cache_control_never_exceeds_the_view() -> None:
    """max-age is the lower of the view's and the entry's; s-maxage is the entry's; others kept."""
    ours = "public, max-age=60, stale-if-error=9"
    own = http.response_freshness([(b"cache-control", b'max-age=5, s-maxage=30, no-transform, x="a,b"')])
    assert http.advertised_cache_control(ours, own, 30) == (
        'public, max-age=5, stale-if-error=9, s-maxage=30, no-transform, x="a,b"'
    )
