"""Deterministic cache keys: the same call gives the same key in every process.

Values are written in a tagged, length-prefixed encoding (so ``1``, ``True`` and
``1.0`` differ, and ``("a:b", "c")`` never meets ``("a", "b:c")``) and hashed
with BLAKE2b. Nothing here uses ``id()``, ``repr()`` of arbitrary objects or
the salted built-in ``hash()``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import inspect
import re
import secrets
import types
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import parse_qsl

from pydantic import BaseModel
from starlette.requests import HTTPConnection

from .exceptions import KeyBuildError

__all__ = [
    "canonical",
    "custom_function_digest",
    "custom_key",
    "digest",
    "function_digest",
    "function_identity",
    "loggable",
    "namespace_for",
    "safe_segment",
    "uri_segment",
    "url_key",
    "view_key",
]

_DIGEST_SIZE = 16
_MAX_SEGMENT = 96
_SAFE = re.compile(r"[A-Za-z0-9._-]")


def _sized(tag: bytes, payload: bytes) -> bytes:
    return tag + str(len(payload)).encode() + b":" + payload


# Types encoded by value alone; an instance of a subclass (a NamedTuple, a str
# subclass, a defaultdict, a bytearray) has its class keyed too, since it can behave differently.
_PLAIN_TYPES = frozenset({int, float, str, bytes, tuple, list, dict, set})


def canonical(value: Any, *, _path: str = "argument") -> bytes:
    """Encode ``value`` unambiguously; unsupported types raise :class:`KeyBuildError`.

    Deliberate choices: ``0.0`` and ``-0.0`` differ, every NaN is one value; a dict's or
    set's order is not keyed; a pydantic model's extras, private attributes and set
    fields are; an aware datetime's zone is keyed by its class and name, not only its offset.
    """
    if value is None:
        return b"N"
    if value is True:
        return b"T"
    if value is False:
        return b"F"
    if isinstance(value, enum.Enum):
        return _sized(b"e", _qualname(type(value)).encode() + canonical(value.value, _path=_path))
    out = _builtin(value, _path)
    if out is not None:
        if type(value) in _PLAIN_TYPES:
            return out
        return _sized(b"c", _qualname(type(value)).encode() + out)
    if isinstance(value, BaseModel):
        cls = type(value)
        state = (  # each part is self-delimiting: concatenated, they stay unambiguous
            canonical({name: getattr(value, name) for name in cls.model_fields}, _path=_path),
            # extra="allow" extras and private attributes: the function can read them too
            canonical(value.model_extra, _path=f"{_path} (extra)"),
            canonical(getattr(value, "__pydantic_private__", None), _path=f"{_path} (private attribute)"),
            canonical(sorted(value.model_fields_set)),  # model_dump(exclude_unset=True) sees it
        )
        return _sized(b"m", _qualname(cls).encode() + b"".join(state))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _sized(b"D", _qualname(type(value)).encode() + canonical(fields, _path=_path))
    if isinstance(value, dt.datetime):
        return _sized(b"W", _clock(value, value.isoformat()))
    if isinstance(value, dt.date):
        return _sized(b"Y", value.isoformat().encode())
    if isinstance(value, dt.time):
        return _sized(b"H", _clock(value, value.isoformat()))
    if isinstance(value, dt.timedelta):
        parts = (value.days, value.seconds, value.microseconds)
        return _sized(b"R", ",".join(map(str, parts)).encode())
    if isinstance(value, uuid.UUID):
        return _sized(b"u", value.bytes)
    if isinstance(value, Decimal):
        return _sized(b"x", str(value).encode())
    raise KeyBuildError(
        f"cannot build a cache key from {_path} of type {_qualname(type(value))}: "
        "only None, bool, int, float, str, bytes, tuple, list, dict, set, enums, "
        "datetimes, UUID, Decimal, dataclasses and pydantic models are keyed. "
        "Exclude the parameter with @cache(exclude=[...]) or pass key_builder=..."
    )


def _builtin(value: Any, path: str) -> bytes | None:
    """The encoding of numbers, text, bytes and containers (by value), or None for other types."""
    if isinstance(value, int):
        return _sized(b"i", str(int(value)).encode())
    if isinstance(value, float):
        return _sized(b"f", float(value).hex().encode())
    if isinstance(value, str):
        return _sized(b"s", value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bytes | bytearray | memoryview):
        return _sized(b"b", bytes(value))
    if isinstance(value, tuple | list):
        tag = b"t" if isinstance(value, tuple) else b"l"
        return _sized(tag, b"".join(canonical(v, _path=f"{path}[{i}]") for i, v in enumerate(value)))
    if isinstance(value, Mapping) and not isinstance(value, HTTPConnection):  # a Request is a Mapping
        items = sorted(
            canonical(k, _path=f"{path} key") + canonical(v, _path=f"{path}[{k!r}]") for k, v in value.items()
        )
        return _sized(b"d", b"".join(items))
    if isinstance(value, set | frozenset):
        return _sized(b"S", b"".join(sorted(canonical(v, _path=path) for v in value)))
    return None


def _clock(value: dt.datetime | dt.time, iso: str) -> bytes:
    # isoformat() shows the offset only: two zones sharing it today differ tomorrow (DST), and fold
    # is hidden for naive values.
    tz = value.tzinfo
    zone = "" if tz is None else f"{_qualname(type(tz))}={tz}"
    return f"{iso}|{zone}|{value.fold}".encode("utf-8", "surrogatepass")


def digest(*parts: bytes) -> str:
    """Hex BLAKE2b digest of already-canonical parts."""
    h = hashlib.blake2b(digest_size=_DIGEST_SIZE)
    for part in parts:
        h.update(part)
    return h.hexdigest()


def function_digest(
    signature: inspect.Signature,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    exclude: Iterable[str] = (),
    name: str = "",
) -> str:
    """Digest of the function's qualified ``name`` and its call's arguments bound to
    ``signature`` (``f(1, b=2)`` == ``f(1, 2)``)."""
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise KeyBuildError(f"arguments do not match the function's signature: {exc}") from exc
    bound.apply_defaults()
    skip = set(exclude)
    # "fn2": entries of the earlier encoding (before values were checked to round-trip) are not read
    parts = [b"fn2", _sized(b"n", name.encode("utf-8", "surrogatepass"))]
    for param, value in bound.arguments.items():
        if param in skip:
            continue
        parts.append(_sized(b"p", param.encode()) + canonical(value, _path=f"parameter {param!r}"))
    return digest(*parts)


def custom_function_digest(name: str, custom: bytes) -> str:
    """Digest of a custom key builder's result for the function ``name``."""
    return digest(_sized(b"n", name.encode("utf-8", "surrogatepass")), _sized(b"c", custom))


def request_digest(
    *,
    method: str,
    scheme: str = "http",
    host: str = "",
    root_path: str,
    path: str,
    query_string: str,
    headers: Any,
    cookies: Mapping[str, str],
    vary: Sequence[str] = (),
    header_params: Sequence[str] = (),
    cookie_params: Sequence[str] = (),
    private: bool = False,
    custom: bytes | None = None,
    credential_headers: Sequence[str] = (),
    credential_query: Sequence[str] = (),
) -> str:
    """Digest of what identifies a view's response (``headers`` offers ``getlist(name)``).

    The whole target URI is keyed (scheme, Host, root path, path, and the query
    string exactly as received, undecoded and unsorted), so a view that builds
    absolute URLs or reflects ``request.url`` cannot poison another one's entry.
    HEAD shares GET's key; an absent header differs from an empty one; with
    ``private`` the credentials (Authorization, Cookie, and the route's security
    schemes' ``credential_headers`` and ``credential_query`` parameters) are
    hashed in, even when a custom key replaces the URL.
    """
    return _request_digest(
        method,
        (scheme, host, root_path),
        path,
        query_string,
        headers,
        cookies,
        vary,
        header_params,
        cookie_params,
        private,
        custom,
        credential_headers,
        credential_query,
    )


def _request_digest(
    method: str,
    url: tuple[str, str, str],
    path: str,
    query_string: str,
    headers: Any,
    cookies: Mapping[str, str],
    vary: Sequence[str],
    header_params: Sequence[str],
    cookie_params: Sequence[str],
    private: bool,
    custom: bytes | None,
    credential_headers: Sequence[str] = (),
    credential_query: Sequence[str] = (),
) -> str:
    # A fixed layout of length-prefixed fields: cheaper than canonical() on the hot path,
    # equally unambiguous (every field is sized, absent values are marked).
    parts = [_text("GET" if method == "HEAD" else method), _headers(headers, vary)]
    if custom is not None:  # a custom key builder replaces the URL and parameter parts
        parts.append(b"C%d:%b" % (len(custom), custom))
    else:
        scheme, host, root_path = url
        parts += [
            _text(scheme),
            _text(host),  # as request.url spells it: url_for reflects its case too
            _text(root_path),
            _text(path),
            b"Q" + _text(query_string),  # raw: '<' and '%3C', 'a&b' and 'b&a' render apart
            _headers(headers, header_params),
            b"K%d:" % len(cookie_params),
            *[_optional(cookies.get(name)) for name in cookie_params],
        ]
    if private:
        extra = [n for n in credential_headers if n not in ("authorization", "cookie")]
        names = ("authorization", "cookie", *extra)
        credentials = _headers(headers, names)
        if credential_query:  # every value of each name, as Starlette decodes them
            pairs = parse_qsl(query_string, keep_blank_values=True)
            for name in credential_query:
                values = [v for k, v in pairs if k == name]
                credentials += _text(name) + b"%d:" % len(values) + b"".join(_text(v) for v in values)
        parts.append(b"P" + hashlib.sha256(credentials).digest())
    return digest(b"view3", b"".join(parts))


def uri_segment(root_path: str, path: str) -> str:
    """The key segment (ending in ``:``) naming a view entry's target path, right after its
    namespace: clearing ``namespace + uri_segment(...)`` drops every variant stored for that
    path (any Host, query, varied header or user), as an unsafe request must (RFC 9111 §4.4).
    Two paths sharing a segment only means one clears the other's entries too."""
    data = _text(root_path) + _text(path)
    return hashlib.blake2b(data, digest_size=8, person=b"cf-uri").hexdigest() + ":"


def _text(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return b"%d:%b" % (len(data), data)


def _optional(text: str | None) -> bytes:
    return b"N" if text is None else b"S" + _text(text)


def _headers(headers: Any, names: Sequence[str]) -> bytes:
    out = [b"H%d:" % len(names)]
    for name in names:
        values = headers.getlist(name)
        out.append(b"L%d:" % len(values) + b"".join(_text(v) for v in values) if values else b"N")
    return b"".join(out)


async def custom_key(
    builder: Callable[..., Any], func: Callable[..., Any], request: Any, args: Any, kwargs: Any
) -> bytes:
    """Call a user key builder (sync or async) and return its result as bytes."""
    result = builder(func, request, args, kwargs)
    if inspect.isawaitable(result):
        result = await result
    if isinstance(result, str):
        return result.encode("utf-8", "surrogatepass")
    if isinstance(result, bytes):
        return result
    raise KeyBuildError(f"a key_builder must return str or bytes, got {type(result).__qualname__}")


def safe_segment(text: str) -> str:
    """``text`` as one key segment: safe ASCII, percent-escaped, long ones shortened."""
    out = "".join(ch if _SAFE.fullmatch(ch) else _escape(ch) for ch in text)
    if len(out) > _MAX_SEGMENT or not out:
        return f"{out[:32]}~{digest(text.encode('utf-8', 'surrogatepass'))}"
    return out


def loggable(key: str) -> str:
    """A store key as logs show it: its prefix and namespace as they are (chosen in code), the
    rest (which may hold user input: a key/value key, a path) as a short digest,
    ``cacheframe:kv:#1f0c…``. The same key always logs the same, so log lines can be matched."""
    parts = key.split(":", 2)
    if len(parts) < 3:  # not a store key: all of it hashed
        return "#" + digest(key.encode("utf-8", "surrogatepass"))[:16]
    prefix, namespace, rest = parts
    if not rest:  # a whole namespace
        return key
    return f"{prefix}:{namespace}:#{digest(rest.encode('utf-8', 'surrogatepass'))[:16]}"


def _escape(ch: str) -> str:
    return "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))


def namespace_for(func: Callable[..., Any]) -> str:
    """Default namespace of a decorated function: ``module.qualname``."""
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', '?')}"


def function_identity(func: Callable[..., Any], *, named: bool = False) -> tuple[str, bool]:
    """``(identity, same in every process)``: ``module.qualname``, made unique where it is not.

    Functions made inside a function (``<locals>``), lambdas and functions of ``__main__``
    (two scripts sharing a store) can share a qualname with other functions: their code
    is added, and the values their closure holds, so ``make(2)`` and ``make(3)`` of a
    factory differ while each stays the same in every process. A closure holding
    something that cannot be keyed gets a random token (it shares entries with nothing,
    not even itself in another process), unless the function is ``named`` by an explicit
    namespace: that name then stands for the closure.
    """
    name = namespace_for(func)
    code = getattr(func, "__code__", None)
    if ("<" not in name and not name.startswith("__main__.")) or not isinstance(code, types.CodeType):
        return name, True
    name = f"{name}@{code.co_firstlineno}~{_code_digest(code)}"
    cells = getattr(func, "__closure__", None) or ()
    try:
        return f"{name}~{digest(canonical(tuple(c.cell_contents for c in cells)))}", True
    except Exception:  # unkeyable, a cell not filled yet, a cycle, an object whose attributes raise
        # Failing here would fail the function's first call; never shared is always safe.
        return (name, True) if named else (f"{name}#{secrets.token_hex(8)}", False)


def _code_digest(code: types.CodeType) -> str:
    """A digest of a code object that is the same in every process running the same source."""
    consts = []
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            consts.append(_code_digest(const).encode())
        else:
            try:
                consts.append(canonical(const))
            except KeyBuildError:
                consts.append(_qualname(type(const)).encode())
    positions = ",".join(map(str, code.co_positions())).encode()
    return digest(_sized(b"c", code.co_code), canonical(code.co_names), *consts, _sized(b"p", positions))[:16]


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class KeyMemo(Protocol):
    """Where :func:`url_key` keeps the store keys of hot URLs (a binding's ``BytesMemo``)."""

    def get(self, key: tuple[str, str, str, str, str, str, bytes]) -> str | None: ...

    def put(self, key: tuple[str, str, str, str, str, str, bytes], value: str, size: int) -> None: ...


_URL_MEMO_MAX_URL = 512  # longer URLs are keyed each time, not kept
_URL_MEMO_OVERHEAD = 200  # bytes of a memo slot beyond its strings


def url_key(
    memo: KeyMemo, namespace: str, scope: Any, host: str, place: Callable[[str], str] | None = None
) -> str:
    """:func:`view_key` of a request keyed by its URL alone (the common case), as ``place``
    puts it in the store (in a stamp bucket, see ``_stamps``; None: as is), kept in ``memo`` by
    (namespace, method, scheme, host, root path, path, query string): hot URLs repeat."""
    query = scope.get("query_string", b"")
    path = scope["path"]
    root = scope.get("root_path", "")
    fields = (namespace, scope["method"], scope.get("scheme", "http"), host, root, path, query)
    key = memo.get(fields)
    if key is None:
        key = view_key(namespace, scope, host)
        if place is not None:
            key = place(key)
        size = len(query) + len(host) + len(path) + len(root)
        if size <= _URL_MEMO_MAX_URL:
            memo.put(fields, key, size + len(namespace) + len(key) + _URL_MEMO_OVERHEAD)
    return key


def view_key(
    namespace: str,
    scope: Any,
    host: str,
    *,
    headers: Any = None,
    cookies: Any = None,
    vary: tuple[str, ...] = (),
    header_params: tuple[str, ...] = (),
    cookie_params: tuple[str, ...] = (),
    private: bool = False,
    custom: bytes | None = None,
    credential_headers: tuple[str, ...] = (),
    credential_query: tuple[str, ...] = (),
) -> str:
    """The store key of a request to a view: the one computation both the decorator path and
    the ASGI fast path use, so the two can never disagree (``host``: the request's
    ``request_authority``, the authority Starlette builds ``request.url`` from).

    A segment per path follows the namespace: an unsafe request clears all of the path's
    variants (see :mod:`cacheframe.unsafe`); :func:`request_digest` says what the rest keys."""
    root_path = scope.get("root_path", "")
    path = scope["path"]
    url = (scope.get("scheme", "http"), host, root_path)
    query = scope.get("query_string", b"").decode("latin-1")
    return (
        namespace
        + uri_segment(root_path, path)
        + _request_digest(
            scope["method"], url, path, query, headers, cookies or {}, vary, header_params,
            cookie_params, private, custom, credential_headers, credential_query,
        )
    )  # fmt: skip
