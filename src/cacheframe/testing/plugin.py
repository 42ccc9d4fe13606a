"""The pytest plugin (entry point ``pytest11``) every pytest session loads once cacheframe is installed.

It adds ``--cacheframe-url`` and nothing else: no fixture, no hook, no import of
an optional package. The conformance suite and its fixtures load only when a
test module imports :class:`cacheframe.testing.BackendConformance`.
"""

from __future__ import annotations

import pytest

URL_OPTION = "--cacheframe-url"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--cacheframe-url``, read by the conformance suite's ``backend_url`` fixture."""
    parser.addoption(
        URL_OPTION,
        default=None,
        help="cache URL of the backend that cacheframe's conformance suite (BackendConformance) tests",
    )
