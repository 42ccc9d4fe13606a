"""The public surface is pinned: what a user imports and calls, nothing of the engine's."""

from __future__ import annotations

import inspect

import cacheframe
from cacheframe import Cache

EXPORTED = [
    "BackendError",
    "BackendTimeoutError",
    "Cache",
    "CacheSettings",
    "CacheStats",
    "CacheframeError",
    "ConfigurationError",
    "EntryError",
    "KeyBuildError",
    "MissingDriverError",
    "UnknownBackendError",
    "cache",
    "configure",
    "get_cache",
    "install",
    "invalidates",
    "lifespan",
    "tag",
]
CACHE_PUBLIC = {
    "backend", "cache", "clear", "close", "delete", "get",
    "invalidate_tags", "lifespan", "on_invalidate", "set", "settings", "stats",
}  # fmt: skip


def test_all_is_pinned_and_sorted() -> None:
    """cacheframe.__all__ is exactly the documented names, sorted."""
    assert cacheframe.__all__ == EXPORTED
    assert sorted(cacheframe.__all__) == cacheframe.__all__


def test_every_public_member_is_exported() -> None:
    """Every public, non-module name of the package is in __all__, and every export exists
    (httpx's exported-members check)."""
    public = {
        name
        for name, value in vars(cacheframe).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(EXPORTED)
    for name in cacheframe.__all__:
        assert getattr(cacheframe, name) is not None


def test_cache_public_names_are_what_a_user_calls() -> None:
    """Cache offers settings, backend, stats, the KV API, lifespan and cache(); the engine,
    gateway, breaker and memos are private."""
    cache = Cache(url="memory://")
    on_class = {name for name in dir(Cache) if not name.startswith("_")}
    on_instance = {name for name in vars(cache) if not name.startswith("_")}
    assert on_class | on_instance == CACHE_PUBLIC


def test_exports_name_cacheframe_as_their_home() -> None:
    """Exported classes and functions come from cacheframe's own modules."""
    for name in cacheframe.__all__:
        assert getattr(cacheframe, name).__module__.startswith("cacheframe.")
