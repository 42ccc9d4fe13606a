"""Per-user request state read outside the declared parameters: watched while a miss runs.

A view may read ``request.cookies``, ``request.session``, ``request.user`` or
``request.auth`` without declaring a parameter, so the key cannot hold what it
read. While the view runs, its ``Request`` instance is switched to a subclass
that records these reads (the same object FastAPI hands to dependencies and the
view); a response built after such a read is not stored unless the key holds
it. This is Django's ``Vary: Cookie`` on session access, applied to the store.

What runs before the view (dependencies) cannot be watched this way. Starlette's
``SessionMiddleware`` marks its session as accessed, which is read afterwards;
for the rest, a dependency that receives the ``Request`` counts as a possible
reader whenever the request carries per-user state (a Cookie header, a session,
an authenticated user or auth scopes).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from starlette.requests import Request

__all__ = ["unkeyed_reason", "watch"]

_READS = "_cacheframe_reads"  # the instance attribute the recording properties fill
_WATCHED = ("cookies", "session", "user", "auth")
_UNWATCHABLE = "an unwatchable request object"
_COOKIE_BORNE = frozenset({"cookies", "session"})  # the Cookie header determines these


@functools.lru_cache(maxsize=64)
def _watched_class(cls: type[Request]) -> type[Request]:
    """A subclass of ``cls`` whose per-user properties record that they were read."""

    def recorder(name: str) -> property:
        original = getattr(cls, name)

        def get(self: Any) -> Any:
            self.__dict__[_READS].add(name)
            return original.__get__(self, type(self))

        return property(get, doc=original.__doc__)

    return type(f"Watched{cls.__name__}", (cls,), {name: recorder(name) for name in _WATCHED})


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


def unkeyed_reason(scope: Any, reads: set[str], reads_connection: bool, cookie_keyed: bool) -> str | None:
    """Why a response may depend on per-user state its key does not hold, or None.

    ``reads``: what the view read (:func:`watch`); ``reads_connection``: a dependency
    received the Request; ``cookie_keyed``: the key holds the Cookie header
    (``private=True`` or ``vary=["Cookie"]``), which covers cookies and the session.
    """
    unkeyed = reads - _COOKIE_BORNE if cookie_keyed else reads
    if unkeyed:
        read = ", ".join(n if n == _UNWATCHABLE else f"request.{n}" for n in sorted(unkeyed))
        return f"the view read {read}, which the key does not hold"
    session = scope.get("session")
    if not cookie_keyed and getattr(session, "accessed", False):  # Starlette's SessionMiddleware
        return "the session was read, and the key does not hold the Cookie header"
    if reads_connection:
        carried = _carried(scope, cookie_keyed)
        if carried:
            return f"a dependency receives the Request and this request carries {carried}"
    return None


def _carried(scope: Any, cookie_keyed: bool) -> str:
    """The per-user state the request carries that the key does not hold ("" when none)."""
    found = []
    if not cookie_keyed:
        if any(name == b"cookie" for name, _ in scope["headers"]):
            found.append("a Cookie header")
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
