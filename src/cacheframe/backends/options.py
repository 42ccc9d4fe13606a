"""Backend options from a URL's query string, validated by the backend's own model (public API).

A backend plugin calls :func:`parse_options` in its ``from_url``::

    class MyOptions(BaseModel):
        timeout: float = Field(0.25, gt=0)

    options = parse_options(url, MyOptions, {"timeout": settings.timeout} if settings else None)

A query parameter that names no field of the model is rejected whatever the
model's ``extra`` setting, so a misspelt option never passes silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import BaseModel, ValidationError

from ..exceptions import ConfigurationError

__all__ = ["parse_options"]

M = TypeVar("M", bound=BaseModel)


def parse_options(url: str, model: type[M], defaults: Mapping[str, Any] | None = None) -> M:
    """Validate ``url``'s query parameters (over ``defaults``) with ``model``."""
    query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    known = _names(model)
    unknown = sorted(name for name in query if name not in known)
    if unknown:
        raise ConfigurationError(
            f"unknown option {', '.join(map(repr, unknown))} in cache URL {_redact(url)!r}; "
            f"known options: {', '.join(known)}"
        )
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
        raise ConfigurationError(
            f"invalid option in cache URL {_redact(url)!r}: {problems}; known options: {', '.join(known)}"
        ) from exc


def _names(model: type[BaseModel]) -> list[str]:
    """Every name ``model`` validates a query parameter under: a field's validation alias (or
    alias), and its own name when it has none or the model populates by name. A name the model
    would ignore (a field name hidden behind an alias) counts as unknown, so it is rejected."""
    config = model.model_config
    by_name = bool(config.get("populate_by_name") or config.get("validate_by_name"))
    by_alias = config.get("validate_by_alias", True) is not False
    names: dict[str, None] = {}  # ordered like the fields, for the error message
    for name, field in model.model_fields.items():
        alias = field.validation_alias if field.validation_alias is not None else field.alias
        choices = getattr(alias, "choices", [alias])  # AliasChoices: any of its string choices
        aliases = [a for a in choices if isinstance(a, str)] if by_alias else []
        if by_name or alias is None or not by_alias:
            names[name] = None
        names.update(dict.fromkeys(aliases))
    return list(names)


# Query options whose value is a credential (redis+sentinel's sentinel_password, a plugin's token).
_SECRET_WORDS = ("password", "secret", "token")


def _redact(url: str) -> str:
    """``url`` with its password, and any password-like query option, replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # unparsable: hide the whole userinfo, and the query, rather than guess
        head, at, tail = url.partition("@")
        return f"{head.partition('://')[0]}://***@{tail.partition('?')[0]}" if at else url.partition("?")[0]
    if password:
        url = url.replace(f":{password}@", ":***@", 1)
        parts = urlsplit(url)
    if not any(word in parts.query.lower() for word in _SECRET_WORDS):
        return url
    items = (item.partition("=") for item in parts.query.split("&"))
    query = "&".join(
        f"{name}=***" if sep and any(w in name.lower() for w in _SECRET_WORDS) else f"{name}{sep}{value}"
        for name, sep, value in items
    )
    return urlunsplit(parts._replace(query=query))
