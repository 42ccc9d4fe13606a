"""Installing cacheframe never changes a user's pytest run: fresh virtual environments, one per variant.

Each environment holds cacheframe (a wheel built from this checkout) and pytest, and no
site packages of this one; the wheels come from PyPI once per session into a local
wheelhouse. Deselect with ``-m "not venv"``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [pytest.mark.venv, pytest.mark.timeout(900)]  # the first test builds the wheelhouse

ROOT = Path(__file__).resolve().parent.parent
TRIVIAL = "def test_trivial():\n    assert 1 + 1 == 2\n"
APP_OWN = "import json\n\n\ndef test_users_own():\n    assert json.loads('[1]') == [1]\n"
SUITE = (
    "from cacheframe.testing import BackendConformance\n\n\nclass TestMemory(BackendConformance):\n    pass\n"
)
PIP = ("-m", "pip", "--disable-pip-version-check", "-q")


def _run(
    *args: str | Path, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def _checked(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cacheframe's wheel built from this checkout, with pytest, pytest-asyncio and every dependency."""
    house = tmp_path_factory.mktemp("wheelhouse")
    _checked(_run(sys.executable, *PIP, "wheel", "--no-deps", "-w", house, ROOT))
    (wheel,) = house.glob("cacheframe-*.whl")
    _checked(_run(sys.executable, *PIP, "wheel", "-w", house, wheel, "pytest", "pytest-asyncio"))
    return house


@pytest.fixture(scope="session")
def make_env(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """A fresh venv (no system site packages) with cacheframe, pytest and ``extra``: its python."""
    made: dict[tuple[str, ...], Path] = {}

    def make(*extra: str) -> Path:
        if extra not in made:
            where = tmp_path_factory.mktemp("venv")
            venv.EnvBuilder(with_pip=False, system_site_packages=False).create(where)
            python = where / "bin" / "python"
            # This interpreter's pip installs into the new environment: no ensurepip per venv.
            _checked(
                _run(
                    sys.executable,
                    *PIP,
                    "--python",
                    python,
                    "install",
                    "--no-index",
                    "--find-links",
                    wheelhouse,
                    "cacheframe",
                    "pytest",
                    *extra,
                )
            )
            made[extra] = python
        return made[extra]

    return make


def _pytest(python: Path, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run(
        python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", project, *args, cwd=project
    )


def test_pytest_only_environment_runs_users_tests(make_env: Callable[..., Path], tmp_path: Path) -> None:
    """cacheframe + pytest, no pytest-asyncio: a user's trivial tests pass (the plugin loaded, inert)."""
    python = make_env()
    assert _run(python, "-c", "import pytest_asyncio").returncode != 0  # truly absent
    (tmp_path / "test_app.py").write_text(TRIVIAL + "\n\n" + APP_OWN)
    result = _checked(_pytest(python, tmp_path, "-W", "error"))
    assert "2 passed" in result.stdout
    plugins = _checked(_pytest(python, tmp_path, "--co", "--trace-config"))
    assert "cacheframe.testing.plugin" in plugins.stdout  # registered: only its option
    helped = _checked(_pytest(python, tmp_path, "--help"))
    assert "--cacheframe-url" in helped.stdout


def test_pytest_only_environment_loads_nothing_optional(
    make_env: Callable[..., Path], tmp_path: Path
) -> None:
    """The auto-loaded plugin imports no test framework or driver: the user's session sees none."""
    python = make_env()
    (tmp_path / "test_modules.py").write_text(
        "import sys\n\n\ndef test_nothing_loaded():\n"
        "    optional = {'pytest_asyncio', 'cacheframe.testing.conformance', 'redis', 'aiomcache'}\n"
        "    loaded = optional & set(sys.modules)\n"
        "    assert not loaded, loaded\n"
    )
    _checked(_pytest(python, tmp_path))


def test_anyio_plugin_runs_the_suite(make_env: Callable[..., Path], tmp_path: Path) -> None:
    """Without pytest-asyncio, the suite runs on anyio's pytest plugin (anyio comes with FastAPI)."""
    python = make_env()
    (tmp_path / "test_backend.py").write_text(SUITE)
    result = _checked(
        _pytest(python, tmp_path, "--cacheframe-url", "memory://", "-k", "not ttl and not lock")
    )
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_no_async_plugin_fails_saying_what_to_install(make_env: Callable[..., Path], tmp_path: Path) -> None:
    """With neither pytest-asyncio nor anyio's plugin active, the suite fails naming what to install."""
    python = make_env()
    (tmp_path / "test_backend.py").write_text(SUITE)
    result = _pytest(python, tmp_path, "-p", "no:anyio", "--cacheframe-url", "memory://", "-k", "round_trip")
    assert result.returncode == 1, result.stdout[-3000:]
    assert "pip install pytest-asyncio" in result.stdout


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_pytest_asyncio_modes(make_env: Callable[..., Path], tmp_path: Path, mode: str) -> None:
    """With pytest-asyncio in strict and in auto mode: users' tests and the suite both run."""
    python = make_env("pytest-asyncio")
    (tmp_path / "test_app.py").write_text(
        TRIVIAL + "\n\nasync def test_users_async():\n    assert True\n"
        if mode == "auto"
        else TRIVIAL
        + "\n\nimport pytest\n\n\n@pytest.mark.asyncio\nasync def test_users_async():\n    assert True\n"
    )
    (tmp_path / "test_backend.py").write_text(SUITE)
    args = ("-o", f"asyncio_mode={mode}", "-o", "asyncio_default_fixture_loop_scope=function")
    result = _checked(
        _pytest(python, tmp_path, *args, "--cacheframe-url", "memory://", "-k", "not ttl and not lock")
    )
    assert " passed" in result.stdout and "failed" not in result.stdout and "error" not in result.stdout
