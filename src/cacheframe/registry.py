"""Backends and serialisers found through entry points, loaded lazily.

Built-ins register in cacheframe's own ``pyproject.toml`` under the same groups
as third-party plugins (``cacheframe.backends``, ``cacheframe.serializers``),
so ``memory://`` never imports a Redis or Memcached driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from .exceptions import ConfigurationError, MissingDriverError, UnknownBackendError

if TYPE_CHECKING:
    from .types import BackendFactory

__all__ = [
    "BACKENDS_GROUP",
    "SERIALIZERS_GROUP",
    "Plugin",
    "available",
    "load_backend_factory",
    "load_serializer_factory",
    "scheme_of",
]

BACKENDS_GROUP = "cacheframe.backends"
SERIALIZERS_GROUP = "cacheframe.serializers"


@dataclass(frozen=True)
class Plugin:
    """One registered name: where it points and which distribution declares it."""

    name: str
    target: str
    distribution: str
    entry_point: EntryPoint


@cache
def available(group: str) -> dict[str, Plugin]:
    """All plugins of ``group`` by name; two distributions claiming one name is an error."""
    found: dict[str, Plugin] = {}
    for ep in entry_points(group=group):
        dist = ep.dist.name if ep.dist is not None else "?"
        plugin = Plugin(ep.name, ep.value, dist, ep)
        previous = found.get(ep.name)
        if previous is not None and previous.target != plugin.target:
            raise ConfigurationError(
                f"{group!r} name {ep.name!r} is registered twice: by {previous.distribution} "
                f"({previous.target}) and by {dist} ({ep.value}); uninstall one of them"
            )
        found[ep.name] = plugin
    return found


def scheme_of(url: str) -> str:
    """The backend name a URL selects (``redis+cluster://`` → ``redis+cluster``)."""
    scheme = urlsplit(url).scheme.lower()
    if not scheme or "://" not in url:
        raise ConfigurationError(
            f"cache URL {url!r} has no scheme; write it like 'memory://' or "
            f"'redis://127.0.0.1:6379/0' (installed: {_names(BACKENDS_GROUP)})"
        )
    return scheme


def load_backend_factory(url: str) -> BackendFactory:
    """Import the factory registered for the URL's scheme (called as ``from_url(url, settings)``)."""
    scheme = scheme_of(url)
    plugin = available(BACKENDS_GROUP).get(scheme)
    if plugin is None:
        raise UnknownBackendError(
            f"no cacheframe backend is installed for scheme {scheme!r} (from {url!r}); "
            f"installed schemes: {_names(BACKENDS_GROUP)}"
        )
    return cast("BackendFactory", _load(plugin))


def load_serializer_factory(name: str) -> Any:
    """Import the serialiser factory registered under ``name``."""
    plugin = available(SERIALIZERS_GROUP).get(name)
    if plugin is None:
        raise ConfigurationError(
            f"unknown serializer {name!r}; installed serializers: {_names(SERIALIZERS_GROUP)}"
        )
    return _load(plugin)


def _load(plugin: Plugin) -> Any:
    try:
        return plugin.entry_point.load()
    except ImportError as exc:
        if isinstance(exc, MissingDriverError):
            raise
        raise MissingDriverError(
            f"{plugin.name!r} (from {plugin.distribution}) cannot be imported: {exc}. "
            f"If it is a cacheframe built-in, install its extra: "
            f"pip install 'cacheframe[{plugin.name.split('+')[0]}]'"
        ) from exc


def _names(group: str) -> str:
    return ", ".join(sorted(available(group))) or "(none)"
