"""Per-user request state read outside the declared parameters: watched while a miss runs.

A view may read ``request.cookies``, ``request.session``, ``request.user``,
``request.auth``, ``request.client``, ``request.state`` or ``request.headers``
without declaring a parameter, so the key cannot hold what it read. While the
view runs, its ``Request`` instance is switched to a subclass that records these
reads (the same object FastAPI hands to dependencies and the view); a response
built after such a read is not stored unless the key holds it. This is Django's
``Vary: Cookie`` on session access, applied to the store.

Headers are recorded by name: reading one the key holds (a ``vary`` name, a
``Header`` parameter, the credentials under ``private``, a Host Starlette
accepts) is fine; any other, or the whole collection, keeps the response out.
The client address and ``request.state`` (where middleware leaves a user or
tenant) are never keyed. ``request.method`` read while answering HEAD keeps
that answer out (HEAD shares GET's entry). Not detected: ``request.scope`` reads.

What runs before the view (dependencies) cannot be watched this way. Starlette's
``SessionMiddleware`` marks its session as accessed, which is read afterwards;
for the rest, a dependency that receives the ``Request`` counts as a possible
reader whenever the request carries per-user state (a Cookie header, a session,
an authenticated user or auth scopes) or any header outside a small set every
client sends alike (``_GENERIC_HEADERS``; a custom API-key header is not in it).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request

from ._authority import request_authority

__all__ = ["unkeyed_reason", "watch"]

_READS = "_cacheframe_reads"  # the instance attribute the recording properties fill
_WATCHED = ("cookies", "session", "user", "auth", "client", "state", "method")
_METHOD = frozenset({"method"})  # matters on HEAD only (_views.py): it shares GET's key
_HEADER = "header:"  # reads entries "header:<lower-case name>"; "header:*" for the whole collection
# Headers whose presence does not single out a user: browsers, proxies and tracers send them.
# A dependency receiving the Request while the request carries any other header may be
# reading it (an API key, X-Forwarded-Host), so the response is not stored.
_GENERIC_HEADERS = frozenset(
    {
        "host", "connection", "keep-alive", "te", "content-length", "content-type", "accept",
        "accept-encoding", "accept-language", "user-agent", "referer", "origin", "cache-control",
        "pragma", "if-none-match", "if-modified-since", "dnt", "upgrade-insecure-requests",
        "priority", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-port", "x-real-ip",
        "forwarded", "traceparent", "tracestate", "x-request-id", "sec-gpc", "via", "cdn-loop",
        "x-amzn-trace-id", "x-cloud-trace-context", "sentry-trace", "baggage",
    }
)  # fmt: skip
_GENERIC_PREFIXES = ("sec-fetch-", "sec-ch-", "x-b3-")  # browsers' fetch metadata and hints, B3 tracing
_UNWATCHABLE = "an unwatchable request object"
_COOKIE_BORNE = frozenset({"cookies", "session"})  # the Cookie header determines these


@functools.lru_cache(maxsize=64)
def _watched_class(cls: type[Request]) -> type[Request]:
    """A subclass of ``cls`` whose per-user properties record that they were read."""

    def recorder(name: str) -> property:
        original = getattr(cls, name)

        def get(self: Any) -> Any:
            reads = self.__dict__[_READS]
            before = set(reads)
            try:  # headers Starlette reads to build this (cookies: the Cookie header) are its own
                return original.__get__(self, type(self))
            finally:
                reads.intersection_update(before)
                reads.add(name)

        return property(get, doc=original.__doc__)

    original_headers = cls.headers

    def headers(self: Any) -> Headers:
        return _RecordingHeaders(original_headers.__get__(self, type(self)), self.__dict__[_READS])

    attributes: dict[str, Any] = {name: recorder(name) for name in _WATCHED}
    attributes["headers"] = property(headers, doc=original_headers.__doc__)
    return type(f"Watched{cls.__name__}", (cls,), attributes)


class _RecordingHeaders(Headers):
    """The request's headers, recording which names are read (``*``: all of them)."""

    def __init__(self, headers: Headers, reads: set[str]) -> None:
        super().__init__(raw=headers.raw)
        self._reads = reads

    def _read(self, name: Any) -> None:
        self._reads.add(_HEADER + (name.lower() if isinstance(name, str) else "*"))

    def __getitem__(self, key: str) -> str:
        self._read(key)
        return super().__getitem__(key)

    def __contains__(self, key: Any) -> bool:
        self._read(key)
        return super().__contains__(key)

    def getlist(self, key: str) -> list[str]:
        self._read(key)
        return super().getlist(key)

    def _all(self) -> None:
        self._reads.add(_HEADER + "*")

    @property
    def raw(self) -> list[tuple[bytes, bytes]]:
        self._all()
        return self._list

    def keys(self) -> list[str]:  # type: ignore[override]
        self._all()
        return super().keys()

    def values(self) -> list[str]:  # type: ignore[override]
        self._all()
        return super().values()

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        self._all()
        return super().items()

    def __iter__(self) -> Any:
        self._all()
        return super().__iter__()

    def __len__(self) -> int:
        self._all()
        return super().__len__()

    def __eq__(self, other: Any) -> bool:
        self._all()
        return super().__eq__(other)

    def mutablecopy(self) -> Any:
        self._all()
        return super().mutablecopy()

    def __repr__(self) -> str:
        self._all()
        return super().__repr__()


@contextmanager
def watch(request: Request) -> Iterator[set[str]]:
    """Record which of ``cookies``/``session``/``user``/``auth`` are read on ``request`` meanwhile."""
    reads: set[str] = set()
    original = type(request)
    watched: type[Request] | None = None
    try:
        request.__dict__[_READS] = reads
        watched = _watched_class(original)
        request.__class__ = watched
    except Exception:  # a request class that cannot be subclassed or swapped (user code may raise)
        watched = None
        reads.add(_UNWATCHABLE)  # unknown reads: the response is not stored
    try:
        yield reads
    finally:
        if watched is not None and type(request) is watched:
            request.__class__ = original
        getattr(request, "__dict__", {}).pop(_READS, None)


def unkeyed_reason(
    scope: Any,
    reads: set[str],
    reads_connection: bool,
    cookie_keyed: bool,
    keyed_headers: frozenset[str] | set[str] = frozenset(),
) -> str | None:
    """Why a response may depend on per-user state its key does not hold, or None.

    ``reads``: what the view read (:func:`watch`); ``reads_connection``: a dependency
    received the Request; ``cookie_keyed``: the key holds the Cookie header
    (``private=True`` or ``vary=["Cookie"]``), which covers cookies and the session;
    ``keyed_headers``: the (lower-case) header names the key holds.
    """
    unkeyed = reads - (_COOKIE_BORNE | _METHOD if cookie_keyed else _METHOD)
    if unkeyed:
        unkeyed = {n for n in unkeyed if not _keyed_header(n, scope, keyed_headers)}
    if unkeyed:
        read = ", ".join(_spelled(n) for n in sorted(unkeyed))
        hint = "; key it with @cache(vary=[...])" if any(n.startswith(_HEADER) for n in unkeyed) else ""
        return f"the view read {read}, which the key does not hold{hint}"
    session = scope.get("session")
    if not cookie_keyed and getattr(session, "accessed", False):  # Starlette's SessionMiddleware
        return "the session was read, and the key does not hold the Cookie header"
    if reads_connection:
        carried = _carried(scope, cookie_keyed, keyed_headers)
        if carried:
            return f"a dependency receives the Request and this request carries {carried}"
    return None


def _keyed_header(read: str, scope: Any, keyed: frozenset[str] | set[str]) -> bool:
    """``read`` is a header the key holds exactly as the view reads it."""
    if not read.startswith(_HEADER):
        return False
    name = read[len(_HEADER) :]
    if name in keyed:
        return True
    if name == "host":  # the key holds request_authority(): the first Host header, when accepted
        hosts = [v for n, v in scope["headers"] if n == b"host"]
        return len(hosts) == 1 and request_authority(hosts[0].decode("latin-1"), scope) == hosts[0].decode(
            "latin-1"
        )
    return False


def _spelled(read: str) -> str:
    if read == _UNWATCHABLE:
        return read
    if read.startswith(_HEADER):
        name = read[len(_HEADER) :]
        return "every request header" if name == "*" else f"the {name!r} request header"
    return f"request.{read}"


def _carried(scope: Any, cookie_keyed: bool, keyed: frozenset[str] | set[str]) -> str:
    """The per-user state the request carries that the key does not hold ("" when none)."""
    found = []
    if not cookie_keyed and any(name == b"cookie" for name, _ in scope["headers"]):
        found.append("a Cookie header")
    sent = {n.decode("latin-1") for n, _ in scope["headers"]}
    custom = sorted(
        n
        for n in sent - _GENERIC_HEADERS - keyed - {"cookie", "authorization"}
        if not n.startswith(_GENERIC_PREFIXES)
    )
    if custom:
        found.append(f"the header(s) {', '.join(custom)}")
        if scope.get("session"):
            found.append("a session")
    if "user" in scope and _authenticated(scope["user"]):
        found.append("an authenticated user")
    auth = scope.get("auth")
    if auth is not None and getattr(auth, "scopes", True):  # AuthCredentials() of an anonymous user: none
        found.append("auth scopes")
    return " and ".join(found)


def _authenticated(user: Any) -> bool:
    """Whether ``scope["user"]`` may be a particular user (unknown objects: yes)."""
    try:
        return user is not None and user.is_authenticated is not False
    except Exception:  # a user object without a working is_authenticated: assume a user
        return True
