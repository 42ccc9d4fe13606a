"""Backend options from a URL's query string, validated by the backend's own model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ValidationError

from ..exceptions import ConfigurationError

__all__ = ["parse_options"]

M = TypeVar("M", bound=BaseModel)


def parse_options(url: str, model: type[M], defaults: Mapping[str, Any] | None = None) -> M:
    """Validate ``url``'s query parameters (over ``defaults``) with ``model``."""
    query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    values = {k: v for k, v in (defaults or {}).items() if k in model.model_fields}
    values.update(query)
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '?'}: {e['msg']}"
            + (f" (got {e['input']!r})" if e["type"] != "extra_forbidden" else "")
            for e in exc.errors()
        )
        known = ", ".join(model.model_fields)
        raise ConfigurationError(
            f"invalid option in cache URL {_redact(url)!r}: {problems}; known options: {known}"
        ) from exc


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url
