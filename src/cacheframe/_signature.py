"""Request/Response injection: make FastAPI hand the decorator what the view did not ask for.

When a view does not declare a ``Request`` (or ``Response``) parameter, a
keyword-only one is added to the wrapper's ``__signature__``; FastAPI then
passes it in, and the wrapper removes it before calling the view. Parameters
the view declares itself, under any name, are used as they are.

Only FastAPI fills the hidden ``Request`` parameter, so its presence tells the
wrapper that FastAPI made the call (and will await the result). A view that
declares its own ``Request`` gets a hidden ``HTTPConnection`` parameter for the
same purpose: the ``marker``.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

__all__ = ["Injection", "inject"]

REQUEST_PARAM = "_cacheframe_request"
RESPONSE_PARAM = "_cacheframe_response"
CONNECTION_PARAM = "_cacheframe_connection"


@dataclass(frozen=True, slots=True)
class Injection:
    """How to find the request/response in the wrapper's kwargs, and what to strip."""

    signature: inspect.Signature
    original: inspect.Signature
    request_name: str
    response_name: str
    strip: tuple[str, ...]
    marker: str | None  # a hidden parameter only FastAPI fills; None: no such parameter is possible


def _annotations(func: Callable[..., Any], sig: inspect.Signature) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func)
    except Exception:  # unresolvable string annotations: use what the signature holds
        return {name: p.annotation for name, p in sig.parameters.items()}


def _is(hint: Any, cls: type) -> bool:
    return isinstance(hint, type) and issubclass(hint, cls)


def _find(hints: dict[str, Any], sig: inspect.Signature, cls: type) -> str | None:
    for name in sig.parameters:
        if _is(hints.get(name), cls):
            return name
    return None


def inject(func: Callable[..., Any], *, marked: bool = False) -> Injection:
    """Compute the wrapper signature for ``func`` with Request/Response available (and, when
    ``marked``, a marker parameter if one can be added)."""
    original = inspect.signature(func)
    hints = _annotations(func, original)
    params = list(original.parameters.values())
    strip: list[str] = []

    request_name = _find(hints, original, Request)
    response_name = _find(hints, original, Response)
    extra = []
    if request_name is None:
        request_name = REQUEST_PARAM
        extra.append(inspect.Parameter(REQUEST_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=Request))
        strip.append(REQUEST_PARAM)
    if response_name is None:
        response_name = RESPONSE_PARAM
        extra.append(inspect.Parameter(RESPONSE_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=Response))
        strip.append(RESPONSE_PARAM)
    marker: str | None = REQUEST_PARAM if REQUEST_PARAM in strip else None
    connections = [n for n in original.parameters if _is(hints.get(n), HTTPConnection)]
    if marked and marker is None and connections == [request_name]:
        # The view's own Request is its only connection parameter: FastAPI fills one more.
        marker = CONNECTION_PARAM
        extra.append(
            inspect.Parameter(CONNECTION_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=HTTPConnection)
        )
        strip.append(CONNECTION_PARAM)

    # Keyword-only parameters go before **kwargs, if the function has one.
    var_kw = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
    params = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD] + extra + var_kw
    signature = original.replace(parameters=params)
    return Injection(signature, original, request_name, response_name, tuple(strip), marker)
