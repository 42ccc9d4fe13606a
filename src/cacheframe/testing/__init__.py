"""The backend conformance suite, for cacheframe's backends and third-party ones.

``from cacheframe.testing import BackendConformance`` loads the suite (and its
fixtures, which live on the class); ``async_fixture`` decorates an async fixture
that overrides one of them (``backend``), for whichever async plugin runs the suite.
The pytest plugin that every pytest session loads (:mod:`cacheframe.testing.plugin`)
only adds ``--cacheframe-url``: importing this package imports nothing else, so
installing cacheframe never changes a project's test run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._support import async_fixture
    from .conformance import BackendConformance

__all__ = ["BackendConformance", "async_fixture"]


def __getattr__(name: str) -> Any:
    # Lazy: the pytest11 plugin lives in this package, and the suite is only for its users.
    if name == "BackendConformance":
        from .conformance import BackendConformance

        return BackendConformance
    if name == "async_fixture":  # the decorator for an overriding async fixture (backend)
        from ._support import async_fixture

        return async_fixture
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
