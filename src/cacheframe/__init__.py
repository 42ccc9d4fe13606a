"""cacheframe: HTTP-correct response and function caching for FastAPI, on pluggable backends."""

from ._install import install
from ._stamps import tag
from .cache import Cache, CacheStats
from .default import cache, configure, get_cache, lifespan
from .exceptions import (
    BackendError,
    BackendTimeoutError,
    CacheframeError,
    ConfigurationError,
    EntryError,
    KeyBuildError,
    MissingDriverError,
    UnknownBackendError,
)
from .invalidation import invalidates
from .settings import CacheSettings

__all__ = [
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
__version__ = "0.1.0"
