"""Request/Response injection: make FastAPI hand the decorator what the view did not ask for.

When a view does not declare a ``Request`` (or ``Response``) parameter, a
keyword-only one is added to the wrapper's ``__signature__``; FastAPI then
passes it in, and the wrapper removes it before calling the view. Parameters
the view declares itself, under any name, are used as they are.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["Injection", "inject"]

REQUEST_PARAM = "_cacheframe_request"
RESPONSE_PARAM = "_cacheframe_response"


@dataclass(frozen=True, slots=True)
class Injection:
    """How to find the request/response in the wrapper's kwargs, and what to strip."""

    signature: inspect.Signature
    original: inspect.Signature
    request_name: str
    response_name: str
    strip: tuple[str, ...]


def _annotations(func: Callable[..., Any], sig: inspect.Signature) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func)
    except Exception:  # unresolvable string annotations: use what the signature holds
        return {name: p.annotation for name, p in sig.parameters.items()}


def _find(hints: dict[str, Any], sig: inspect.Signature, cls: type) -> str | None:
    for name in sig.parameters:
        hint = hints.get(name)
        if isinstance(hint, type) and issubclass(hint, cls):
            return name
    return None


def inject(func: Callable[..., Any]) -> Injection:
    """Compute the wrapper signature for ``func`` with Request/Response available."""
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

    # Keyword-only parameters go before **kwargs, if the function has one.
    var_kw = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
    params = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD] + extra + var_kw
    signature = original.replace(parameters=params)
    return Injection(signature, original, request_name, response_name, tuple(strip))
