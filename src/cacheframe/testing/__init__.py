"""The backend conformance suite, for cacheframe's backends and third-party ones.

``from cacheframe.testing import BackendConformance`` loads the suite (and its
fixtures, which live on the class). The pytest plugin that every pytest session
loads (:mod:`cacheframe.testing.plugin`) only adds ``--cacheframe-url``: importing
this package imports nothing else, so installing cacheframe never changes a
project's test run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .conformance import BackendConformance

__all__ = ["BackendConformance"]


def __getattr__(name: str) -> Any:
    # Lazy: the pytest11 plugin lives in this package, and the suite is only for its users.
    if name == "BackendConformance":
        from .conformance import BackendConformance

        return BackendConformance
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
