"""cacheframe's exceptions: one root, driver errors re-raised as our own.

::

    CacheframeError
    ├── ConfigurationError          bad settings, URL, option or decorator argument
    │   ├── UnknownBackendError     no backend installed for a URL scheme
    │   └── MissingDriverError      the backend's driver (extra) is not installed
    ├── KeyBuildError               an argument cannot be turned into a stable key
    ├── BackendError                the store failed (driver errors are chained)
    │   └── BackendTimeoutError     the store did not answer within the deadline
    └── EntryError                  an entry cannot be encoded, decoded or verified
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendTimeoutError",
    "CacheframeError",
    "ConfigurationError",
    "EntryError",
    "KeyBuildError",
    "MissingDriverError",
    "UnknownBackendError",
]


class CacheframeError(Exception):
    """Root of every error cacheframe raises."""


class ConfigurationError(CacheframeError, ValueError):
    """Settings, a URL, a backend option or a decorator argument is invalid."""


class UnknownBackendError(ConfigurationError):
    """No installed backend is registered for the URL's scheme."""


class MissingDriverError(ConfigurationError, ImportError):
    """The backend exists but its driver package is not installed."""


class KeyBuildError(CacheframeError, TypeError):
    """An argument cannot be encoded into a deterministic cache key."""


class BackendError(CacheframeError):
    """The store failed; the driver's exception is the ``__cause__``."""


class BackendTimeoutError(BackendError, TimeoutError):
    """The store did not answer within the configured deadline."""


class EntryError(CacheframeError):
    """An entry is damaged, of an unknown version, fails verification, or is too large to encode."""
