"""The Host part of a view key is exactly the authority Starlette builds request.url from."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import URL

from cacheframe._authority import request_authority
from cacheframe.http import scan_request_headers as scan_headers

hosts = st.one_of(
    st.sampled_from(
        ["a.example", "A.Example:8080", "x:99999", "x:abc", "[::1]:80", "[zz]", "", "a b", "h:0080"]
    ),
    st.text(alphabet="abAB.:[]-_0123456789%@/ ", max_size=12),
)
servers = st.one_of(
    st.none(),
    st.tuples(st.sampled_from(["10.0.0.1", "::1", "srv"]), st.sampled_from([80, 443, 8000])),
)


@given(host=st.one_of(st.none(), hosts), server=servers, scheme=st.sampled_from(["http", "https"]))
def test_authority_is_request_url_netloc(host: str | None, server: Any, scheme: str) -> None:
    """For any Host header (or none) and server address, the keyed authority is request.url's netloc."""
    headers = [] if host is None else [(b"host", host.encode("latin-1"))]
    scope = {"type": "http", "scheme": scheme, "path": "/p", "query_string": b"", "headers": headers}
    scope["server"] = server
    assert request_authority(host or "", scope) == URL(scope=scope).netloc


def test_scan_headers_takes_the_first_host_and_flags_duplicates() -> None:
    """Host is the first header's value ("" without one); two Host headers give None (never cached)."""
    assert scan_headers([(b"host", b"a"), (b"x", b"y")])[0] == "a"
    assert scan_headers([])[0] == ""
    assert scan_headers([(b"host", b"a"), (b"host", b"b")])[0] is None
    assert scan_headers([(b"host", b"a"), (b"host", b"a")])[0] is None
