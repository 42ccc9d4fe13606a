"""HTTP caching rules (RFC 9111 for a shared cache, RFC 9110 conditionals). Pure: no I/O."""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "RequestDirectives",
    "cache_control",
    "etag_for",
    "merge_vary",
    "none_match",
    "parse_cache_control",
    "replayable_headers",
    "request_directives",
    "unstorable_reason",
]

# Headers never stored with an entry: hop-by-hop ones, and those cacheframe writes per reply.
_NOT_STORED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"age",
        b"cache-control",
        b"etag",
        b"date",
        b"expires",
        b"vary",
        b"x-cache",
    }
)


def parse_cache_control(value: str | None) -> dict[str, str | None]:
    """Directives of a ``Cache-Control`` value: lower-case names, unquoted values."""
    directives: dict[str, str | None] = {}
    if not value:
        return directives
    for part in _split_commas(value):
        name, sep, arg = part.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        arg = arg.strip()
        if sep and len(arg) >= 2 and arg[0] == arg[-1] == '"':
            arg = arg[1:-1]
        directives.setdefault(name, arg if sep else None)
    return directives


def _split_commas(value: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _seconds(arg: str | None) -> int | None:
    if arg is None or not arg.isdigit():
        return None
    return int(arg)


@dataclass(frozen=True, slots=True)
class RequestDirectives:
    """What a request's ``Cache-Control``/``Pragma`` ask of the cache."""

    no_store: bool = False
    no_cache: bool = False
    max_age: int | None = None


NO_DIRECTIVES = RequestDirectives()


def request_directives(cache_control_value: str | None, pragma: str | None) -> RequestDirectives:
    """Parse request directives; ``Pragma: no-cache`` counts only without ``Cache-Control``."""
    if not cache_control_value and not pragma:
        return NO_DIRECTIVES
    cc = parse_cache_control(cache_control_value)
    no_cache = "no-cache" in cc
    if not cache_control_value and pragma:
        no_cache = "no-cache" in {p.strip().lower() for p in pragma.split(",")}
    max_age = _seconds(cc.get("max-age")) if "max-age" in cc else None
    if "max-age" in cc and max_age is None:
        max_age = 0  # an unparsable max-age is treated as stale (RFC 9111 §4.2.1)
    if max_age == 0:
        no_cache = True
    return RequestDirectives(no_store="no-store" in cc, no_cache=no_cache, max_age=max_age)


def etag_for(body: bytes) -> bytes:
    """A strong, quoted ETag from a digest of the body: the same in every process."""
    return b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'  # sha256: hardware-assisted


def none_match(if_none_match: str | None, etag: bytes) -> bool:
    """Whether ``If-None-Match`` matches ``etag`` by weak comparison (``*`` matches)."""
    if not if_none_match:
        return False
    ours = _opaque(etag.decode("latin-1"))
    for candidate in _split_commas(if_none_match):
        candidate = candidate.strip()
        if candidate == "*" or (candidate and _opaque(candidate) == ours):
            return True
    return False


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith(("W/", "w/")) else tag


def unstorable_reason(status: int, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Why a rendered response must not be stored, or ``None`` when it may be."""
    if not 200 <= status < 300 or status == 206:
        return f"status {status}"
    for name, value in headers:
        name = name.lower()
        if name == b"set-cookie":
            return "Set-Cookie"
        if name == b"cache-control":
            cc = parse_cache_control(value.decode("latin-1"))
            for directive in ("no-store", "private", "no-cache"):
                if directive in cc:
                    return f"Cache-Control: {directive}"
        elif name == b"vary" and any(v.strip() == "*" for v in value.decode("latin-1").split(",")):
            return "Vary: *"
    return None


def replayable_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers stored with an entry: lower-case names, minus hop-by-hop and per-reply ones."""
    return [(n.lower(), v) for n, v in headers if n.lower() not in _NOT_STORED]


def header_values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """All comma-separated values of one header (by lower-case name)."""
    out: list[str] = []
    for n, v in headers:
        if n.lower() == name:
            out += [part.strip() for part in v.decode("latin-1").split(",") if part.strip()]
    return out


def merge_vary(*groups: Iterable[str]) -> str:
    """One ``Vary`` value from several lists, case-insensitively de-duplicated, order kept."""
    seen: dict[str, str] = {}
    for group in groups:
        for name in group:
            seen.setdefault(name.lower(), name)
    return ", ".join(seen.values())


@functools.lru_cache(maxsize=4096)
def cache_control(
    ttl: float,
    age: float,
    *,
    private: bool,
    stale_while_revalidate: float = 0,
    stale_if_error: float = 0,
) -> str:
    """``Cache-Control`` for a cached reply: ``max-age`` is what is left of ``ttl``."""
    max_age = max(0, math.ceil(ttl) - int(age))
    parts = ["private" if private else "public", f"max-age={max_age}"]
    if stale_while_revalidate:
        parts.append(f"stale-while-revalidate={math.ceil(stale_while_revalidate)}")
    if stale_if_error:
        parts.append(f"stale-if-error={math.ceil(stale_if_error)}")
    return ", ".join(parts)
