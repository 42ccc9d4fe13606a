"""What one ``@cache(...)`` asks for: its options, validated once. Pure data, no I/O.

Lower layers import these types (never the decorator that builds them), so the
engine, the adapters and the fast path read a decorated function's policy
without depending on the glue above them.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypedDict

from .exceptions import ConfigurationError
from .types import KeyBuilder, Serializer

__all__ = ["DecoratorOptions", "Policy", "non_negative_seconds", "tag_fields", "ttl_seconds"]


class DecoratorOptions(TypedDict, total=False):
    """Keyword options of ``@cache(ttl, **options)``; see :func:`cacheframe.cache`."""

    namespace: str | None
    key_builder: KeyBuilder | None
    serializer: str | Serializer | None
    vary: Sequence[str]
    private: bool
    exclude: Sequence[str]
    stale_while_revalidate: float | timedelta
    stale_if_error: float | timedelta
    xfetch_beta: float
    tags: Sequence[str]
    result_tags: Callable[[Any], Iterable[str]] | None
    tag_headers: Sequence[str]


# Response headers that can list a response's tags, for a cache in front (opt-in: tags can
# reveal data): RFC 9875's Cache-Groups (a structured List of Strings), Fastly's and
# Varnish's Surrogate-Key (space-separated), Cloudflare's Cache-Tag (comma-separated).
TAG_HEADERS = ("Cache-Groups", "Surrogate-Key", "Cache-Tag")


def tag_header_names(names: Sequence[str]) -> tuple[str, ...]:
    """The canonical spelling of each name in ``tag_headers``; ConfigurationError otherwise."""
    if isinstance(names, str):
        raise ConfigurationError(f"tag_headers takes a list of header names, got the string {names!r}")
    known = {name.lower(): name for name in TAG_HEADERS}
    out = []
    for name in names:
        canonical = known.get(str(name).lower())
        if canonical is None:
            raise ConfigurationError(f"tag_headers: {name!r} is not one of {', '.join(TAG_HEADERS)}")
        out.append(canonical)
    return tuple(dict.fromkeys(out))


def tag_header_value(header: str, tags: Sequence[str]) -> str | None:
    """``tags`` written as ``header`` expects (tags it cannot carry are left out), or None."""
    printable = [t for t in dict.fromkeys(tags) if t.isascii() and t.isprintable()]
    if header == "Cache-Groups":
        quoted = [t.replace("\\", "\\\\").replace('"', '\\"') for t in printable]
        return ", ".join(f'"{t}"' for t in quoted) or None
    if header == "Surrogate-Key":
        return " ".join(t for t in printable if " " not in t) or None
    return ",".join(t for t in printable if "," not in t and t.strip() == t) or None


@dataclass(frozen=True, slots=True)
class Policy:
    """The validated options of one ``@cache(...)``."""

    ttl: float | timedelta | None
    namespace: str | None
    key_builder: KeyBuilder | None
    serializer: str | Serializer | None
    vary: tuple[str, ...]
    private: bool
    exclude: tuple[str, ...]
    stale_while_revalidate: float
    stale_if_error: float
    xfetch_beta: float
    tags: tuple[str, ...] = ()  # templates over the function's parameters: "item:{item_id}"
    result_tags: Callable[[Any], Iterable[str]] | None = None  # tags taken from the result
    tag_headers: tuple[str, ...] = ()  # response headers listing the entry's tags (TAG_HEADERS)

    vary_lower: tuple[str, ...] = field(init=False)
    keys_auth: bool = field(init=False)  # the key includes Authorization: such requests may be cached

    def __post_init__(self) -> None:
        lower = tuple(v.lower() for v in self.vary)
        object.__setattr__(self, "vary_lower", lower)
        object.__setattr__(self, "keys_auth", self.private or "authorization" in lower)

    @property
    def stale_window(self) -> float:
        """Seconds an entry is kept past its ttl: the longer of the two stale allowances."""
        return max(self.stale_while_revalidate, self.stale_if_error)


def ttl_seconds(ttl: float | timedelta | None, default: float) -> float:
    """``ttl`` (seconds or ``timedelta``) as positive float seconds; ``None`` → ``default``."""
    if ttl is None:
        return default
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    if not seconds > 0:
        raise ConfigurationError(f"ttl must be positive, got {ttl!r}")
    return seconds


def non_negative_seconds(name: str, value: float | timedelta) -> float:
    """``value`` (seconds or ``timedelta``) as float seconds; negative raises, naming ``name``."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise ConfigurationError(f"{name} must not be negative, got {value!r}")
    return seconds


def tag_fields(template: str) -> list[str]:
    """The parameter names a tag template refers to (``"item:{item_id}"`` → ``["item_id"]``);
    ConfigurationError for anything but plain ``{name}`` placeholders."""
    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigurationError(f"tag template {template!r} is malformed: {exc}") from exc
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ConfigurationError(
                f"tag template {template!r}: use plain {{parameter}} placeholders, got {{{name}...}}"
            )
        names.append(name)
    return names
