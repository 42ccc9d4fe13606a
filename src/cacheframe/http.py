"""HTTP caching rules (RFC 9111 for a shared cache, RFC 9110 conditionals). Pure: no I/O."""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

__all__ = [
    "RequestDirectives",
    "ResponseFreshness",
    "cache_control",
    "etag_for",
    "merge_vary",
    "none_match",
    "parse_cache_control",
    "replayable_headers",
    "request_directives",
    "response_freshness",
    "scan_request_headers",
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
    own = response_freshness(headers)
    if own.lifetime is not None and own.lifetime <= 0:  # max-age=0, s-maxage=0, Expires past
        return f"no freshness lifetime ({own.cache_control or 'Expires in the past'})"
    return None


@dataclass(frozen=True, slots=True)
class ResponseFreshness:
    """What a response's own headers grant a shared cache (RFC 9111 §4.2.1, §5.2.2).

    ``lifetime``: seconds from ``s-maxage``, else ``max-age``, else ``Expires`` - ``Date``
    (``None`` when the response sets none, so the decorator's ttl applies alone);
    ``max_age``: the ``max-age`` it grants private caches (browsers), if any;
    ``revalidate``: ``must-revalidate``/``proxy-revalidate``: never served stale;
    ``cache_control``: its own ``Cache-Control`` value, if any.
    """

    lifetime: float | None = None
    max_age: int | None = None
    revalidate: bool = False
    cache_control: str | None = None


NO_FRESHNESS = ResponseFreshness()


def response_freshness(headers: Iterable[tuple[bytes, bytes]], now: float | None = None) -> ResponseFreshness:
    """The freshness a response's headers grant; a repeated or unparsable directive counts at its
    lowest (an unparsable one as 0: stale), so a response never gains freshness by ambiguity."""
    values: list[str] = []
    expires: list[str] = []
    date: str | None = None
    for name, value in headers:
        name = name.lower()
        if name == b"cache-control":
            values.append(value.decode("latin-1"))
        elif name == b"expires":
            expires.append(value.decode("latin-1"))
        elif name == b"date" and date is None:
            date = value.decode("latin-1")
    if not values and not expires:
        return NO_FRESHNESS
    max_age = s_maxage = None
    revalidate = False
    for text in values:
        for part in _split_commas(text):
            directive, sep, arg = part.partition("=")
            directive = directive.strip().lower()
            if directive in ("max-age", "s-maxage"):
                parsed = _seconds(arg.strip().strip('"')) if sep else None
                seconds = 0 if parsed is None else parsed  # unparsable: stale (§4.2.1)
                if directive == "max-age":
                    max_age = seconds if max_age is None else min(max_age, seconds)
                else:
                    s_maxage = seconds if s_maxage is None else min(s_maxage, seconds)
            elif directive in ("must-revalidate", "proxy-revalidate"):
                revalidate = True
    lifetime: float | None = s_maxage if s_maxage is not None else max_age  # s-maxage wins (§5.2.2.10)
    if lifetime is None and expires:  # max-age wins over Expires (§5.3)
        lifetime = _expires_lifetime(expires, date, now)
    cache_control = ", ".join(values) if values else None
    return ResponseFreshness(lifetime, max_age, revalidate, cache_control)


def _expires_lifetime(expires: list[str], date: str | None, now: float | None) -> float:
    """``Expires`` - ``Date`` (or now) in whole seconds; an invalid or repeated Expires is past."""
    if len(expires) != 1:
        return 0
    try:
        at = parsedate_to_datetime(expires[0]).timestamp()
        origin = parsedate_to_datetime(date).timestamp() if date else None
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0
    if origin is None:
        origin = time.time() if now is None else now
    return max(0, math.floor(at - origin))


def advertised_cache_control(ours: str, own: ResponseFreshness, lifetime: float) -> str:
    """The ``Cache-Control`` sent for an entry whose view set its own: ours (``ours``, made for
    ``lifetime``) with ``max-age`` lowered to the view's and the view's other directives kept,
    so a reply never grants more freshness than the view did."""
    seconds = math.ceil(lifetime)
    max_age = seconds if own.max_age is None else min(seconds, own.max_age)
    parts = []
    for part in _split_commas(ours):
        name = part.strip().partition("=")[0].lower()
        parts.append(f"max-age={max_age}" if name == "max-age" else part.strip())
    ours_names = {p.partition("=")[0].lower() for p in parts}
    skip = ours_names | {"public", "private", "no-cache", "no-store", "max-age"}
    for name, arg in parse_cache_control(own.cache_control).items():
        if name == "s-maxage":
            parts.append(f"s-maxage={seconds}")  # the entry's lifetime, never above the view's
        elif name not in skip:
            parts.append(name if arg is None else f'{name}="{arg}"' if "," in arg else f"{name}={arg}")
    return ", ".join(parts)


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
    *,
    private: bool,
    stale_while_revalidate: float = 0,
    stale_if_error: float = 0,
) -> str:
    """``Cache-Control`` for a cached reply: ``max-age`` is the entry's whole lifetime, and a
    hit's ``Age`` says how much of it is gone (so a downstream cache counts age once)."""
    parts = ["private" if private else "public", f"max-age={math.ceil(ttl)}"]
    if stale_while_revalidate:
        parts.append(f"stale-while-revalidate={math.ceil(stale_while_revalidate)}")
    if stale_if_error:
        parts.append(f"stale-if-error={math.ceil(stale_if_error)}")
    return ", ".join(parts)


def scan_request_headers(
    raw: list[tuple[bytes, bytes]],
) -> tuple[str | None, bool, str | None, str | None, str | None]:
    """One pass over the raw request headers: Host, Authorization?, Cache-Control, Pragma, If-None-Match.

    Host is the first one, as Starlette reads it (``""`` without one), or None when the
    request carries several: such a request is never cached.
    """
    host: str | None = ""
    hosts = 0
    authorization = False
    cache_control = pragma = if_none_match = None
    for name, value in raw:
        if name == b"host":
            hosts += 1
            host = value.decode("latin-1") if hosts == 1 else None
        elif name == b"authorization":
            authorization = True
        elif name == b"cache-control":
            text = value.decode("latin-1")
            cache_control = text if cache_control is None else f"{cache_control}, {text}"
        elif name == b"pragma":
            pragma = value.decode("latin-1")
        elif name == b"if-none-match":
            text = value.decode("latin-1")
            if_none_match = text if if_none_match is None else f"{if_none_match}, {text}"
    return host, authorization, cache_control, pragma, if_none_match
