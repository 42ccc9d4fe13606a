"""The backend conformance suite, for cacheframe's backends and third-party ones.

See :mod:`cacheframe.testing.conformance`; the pytest plugin
(:mod:`cacheframe.testing.plugin`) adds ``--cacheframe-url``.
"""

from .conformance import BackendConformance

__all__ = ["BackendConformance"]
