"""pytest plugin (entry point ``pytest11``) for backend authors.

``class TestMine(BackendConformance): pass`` plus ``pytest --cacheframe-url
mine://host:port`` runs the whole conformance suite against the backend the
URL selects. Overriding the ``backend`` fixture instead gives full control.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ..types import Backend

try:
    import pytest_asyncio
except ImportError:  # the suite needs pytest-asyncio; without it the plugin stays inert
    pytest_asyncio = None  # type: ignore[assignment]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--cacheframe-url``."""
    parser.addoption(
        "--cacheframe-url",
        default=None,
        help="cache URL whose backend the cacheframe conformance suite tests",
    )


async def _backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """The backend selected by ``--cacheframe-url`` (skips when the option is absent)."""
    url = request.config.getoption("--cacheframe-url")
    if not url:
        pytest.skip("no --cacheframe-url given and no backend fixture defined")
    from ..registry import load_backend_factory

    instance: Backend = load_backend_factory(url).from_url(url, None)
    yield instance
    await instance.close()


if pytest_asyncio is not None:
    backend = pytest_asyncio.fixture(_backend, name="backend")
