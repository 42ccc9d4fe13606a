"""A third-party backend installed as a distribution is selected by its URL scheme."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import cacheframe
from apps import build_app, calls
from cacheframe import registry
from cacheframe.testing import BackendConformance


class TestExamplePluginConformance(BackendConformance):
    """The conformance suite against the example plugin, loaded through its entry point."""

    @pytest.fixture
    def backend_url(self, tmp_path: Path) -> str:
        return f"sqlitecache://{tmp_path}/conf.db"

    @pytest.fixture
    def unreachable_url(self, tmp_path: Path) -> str:
        return f"sqlitecache://{tmp_path}/no-such-directory/conf.db"  # sqlite cannot open it


def test_plugin_registered_by_its_distribution() -> None:
    """The plugin's scheme is listed with the distribution that declares it."""
    plugin = registry.available(registry.BACKENDS_GROUP)["sqlitecache"]
    assert plugin.distribution == "cacheframe-example-plugin"


def test_environment_url_selects_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CACHEFRAME_URL=sqlitecache://... selects the plugin with no code change, and views cache on it."""
    monkeypatch.setenv("CACHEFRAME_URL", f"sqlitecache://{tmp_path}/app.db")
    cache = cacheframe.configure()
    assert type(cache.backend).__name__ == "SQLiteBackend"
    calls.clear()
    client = TestClient(build_app())
    assert client.get("/plain").headers["x-cache"] == "MISS"
    assert client.get("/plain").headers["x-cache"] == "HIT"
    assert (tmp_path / "app.db").stat().st_size > 0


def test_conformance_plugin_with_url_option(tmp_path: Path) -> None:
    """A backend author's empty subclass plus --cacheframe-url runs the suite (pytest-asyncio strict mode)."""
    import subprocess
    import sys

    (tmp_path / "test_mine.py").write_text(
        "from cacheframe.testing import BackendConformance\n\n\n"
        "class TestMine(BackendConformance):\n    pass\n"
    )
    url = f"sqlitecache://{tmp_path}/author.db"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=strict",
            "--rootdir",
            str(tmp_path),
            "--cacheframe-url",
            url,
            str(tmp_path / "test_mine.py"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "error" not in result.stdout.lower()
