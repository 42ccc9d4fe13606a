"""Render a view's return value exactly as FastAPI's route handler would.

On a miss the decorator needs the bytes FastAPI is about to send, so it does
FastAPI's last step itself, with the route's own settings: response_model
validation and filtering, ``response_class``, the route's ``status_code``, and
the headers/status the view set on the injected ``Response``. A view that
returns a ``Response`` is used as it is (FastAPI does not touch it either).
"""

from __future__ import annotations

import inspect
from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.routing import serialize_response
from fastapi.utils import is_body_allowed_for_status_code
from starlette.responses import JSONResponse, Response

from .routes import is_api_route

__all__ = ["render"]

_SERIALIZE_PARAMS = frozenset(inspect.signature(serialize_response).parameters)


def _response_class(route: Any) -> tuple[type[Response], bool]:
    """The route's response class, and whether it is FastAPI's default placeholder."""
    cls = route.response_class
    value = getattr(cls, "value", None)
    if value is not None and type(cls).__name__ == "DefaultPlaceholder":
        return value, True
    return cls, False


async def render(value: Any, route: Any, sub_response: Response | None, is_coroutine: bool) -> Response:
    """The ``Response`` FastAPI would send for ``value`` returned by ``route``'s endpoint."""
    if isinstance(value, Response):
        return value
    if not is_api_route(route):
        response: Response = JSONResponse(jsonable_encoder(value))
    else:
        cls, is_default = _response_class(route)
        dump_json = route.response_field is not None and is_default and "dump_json" in _SERIALIZE_PARAMS
        options: dict[str, Any] = {
            "field": route.response_field,
            "response_content": value,
            "include": route.response_model_include,
            "exclude": route.response_model_exclude,
            "by_alias": route.response_model_by_alias,
            "exclude_unset": route.response_model_exclude_unset,
            "exclude_defaults": route.response_model_exclude_defaults,
            "exclude_none": route.response_model_exclude_none,
            "is_coroutine": is_coroutine,
            "dump_json": dump_json,
        }
        content = await serialize_response(**{k: v for k, v in options.items() if k in _SERIALIZE_PARAMS})
        status = route.status_code or (sub_response.status_code if sub_response else None)
        if sub_response is not None and sub_response.status_code:
            status = sub_response.status_code
        kwargs: dict[str, Any] = {} if status is None else {"status_code": status}
        if dump_json:
            response = Response(content=content, media_type="application/json", **kwargs)
        else:
            response = cls(content, **kwargs)
        if not is_body_allowed_for_status_code(response.status_code):
            response.body = b""
    if sub_response is not None:
        response.raw_headers.extend(sub_response.raw_headers)
    return response
