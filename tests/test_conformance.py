"""The conformance suite itself: it catches the broken backends docs/writing-a-backend.md warns about."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import cacheframe

HERE = Path(__file__).resolve().parent

# Backends broken on purpose, each the way the docs say a backend must not be.
BROKEN = '''
import asyncio
import os

import pytest

from cacheframe.backends.memory import MemoryBackend
from cacheframe_example.backend import SQLiteBackend
from cacheframe.testing import BackendConformance


class LikeClear(SQLiteBackend):
    """clear() with SQL LIKE: '_' and '%' act as wildcards."""

    async def clear(self, namespace):
        await self._run("DELETE FROM entries WHERE key LIKE ? || '%'", (namespace,))


class HangingGet(MemoryBackend):
    """get() never returns."""

    async def get(self, key):
        await asyncio.Event().wait()


class RawErrors(MemoryBackend):
    """Lets the driver's OSError escape instead of raising BackendError."""

    @classmethod
    def from_url(cls, url, settings=None):
        backend = super().from_url(url.replace("memory+down", "memory"), settings)
        backend.down = url.startswith("memory+down")
        return backend

    async def _fail(self):
        if self.down:
            raise ConnectionRefusedError(111, "Connection refused")

    async def get(self, key):
        await self._fail()
        return await super().get(key)

    async def set(self, key, value, ttl):
        await self._fail()
        return await super().set(key, value, ttl)


class IgnoresOptions(MemoryBackend):
    """from_url ignores the query string: a misspelt option passes silently."""

    @classmethod
    def from_url(cls, url, settings=None):
        return cls()


class LoopBound(MemoryBackend):
    """Keeps the event loop of its first call, as a driver keeps a connection opened there."""

    loop = None

    async def get(self, key):
        running = asyncio.get_running_loop()
        self.loop = self.loop or running
        if self.loop is not running:
            raise RuntimeError("Future attached to a different loop")
        return await super().get(key)


class ForkShared(MemoryBackend):
    """Keeps using the parent's connection in a forked child."""

    pid = None

    def _connection(self):
        self.pid = self.pid or os.getpid()
        if self.pid != os.getpid():
            raise ConnectionResetError(104, "connection shared with the parent process")

    async def get(self, key):
        self._connection()
        return await super().get(key)

    async def set(self, key, value, ttl):
        self._connection()
        return await super().set(key, value, ttl)


class TestSuite(BackendConformance):
    call_timeout = 1.0

    @pytest.fixture
    def backend_factory(self):
        return {factory}

    @pytest.fixture
    def backend_url(self, tmp_path):
        return {url!r}.format(tmp=tmp_path)

    @pytest.fixture
    def unreachable_url(self):
        return {unreachable!r}
'''


EMPTY_SUBCLASS = (
    "from cacheframe.testing import BackendConformance\n\n\nclass TestMine(BackendConformance):\n    pass\n"
)


def run_suite(tmp_path: Path, *args: str, source: str | None = None) -> subprocess.CompletedProcess[str]:
    """pytest on a generated test module in a subprocess; the example plugin importable."""
    if source is not None:
        (tmp_path / "test_suite.py").write_text(source)
    paths = [str(HERE / "plugin_example" / "src"), str(Path(cacheframe.__file__).parent.parent)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )


def broken(factory: str, url: str = "memory://", unreachable: str | None = None) -> str:
    return BROKEN.format(factory=factory, url=url, unreachable=unreachable)


def test_like_based_clear_fails_the_suite(tmp_path: Path) -> None:
    """A clear written with SQL LIKE (clearing my_app deletes my-app's keys) fails the wildcard tests."""
    result = run_suite(tmp_path, "-k", "wildcards", source=broken("LikeClear", "sqlitecache://{tmp}/like.db"))
    out = result.stdout
    assert result.returncode == 1, out[-3000:]
    assert "FAILED" in out and "underscore" in out and "percent" in out, out[-3000:]
    assert "removed 'cf-conf-" in out or "removed 'my-app" in out, out[-3000:]


def test_sqlite_range_clear_passes_the_wildcard_tests(tmp_path: Path) -> None:
    """The same backend with the example's range-based clear passes them (the test tells the two apart)."""
    result = run_suite(
        tmp_path, "-k", "wildcards", source=broken("SQLiteBackend", "sqlitecache://{tmp}/ok.db")
    )
    assert result.returncode == 0, result.stdout[-3000:]


def test_hanging_get_fails_within_bounded_time(tmp_path: Path) -> None:
    """A backend whose get never returns fails its tests after call_timeout instead of hanging."""
    result = run_suite(tmp_path, "-k", "missing_key or overwrite", source=broken("HangingGet"))
    assert result.returncode == 1, result.stdout[-3000:]
    assert result.stdout.count("did not return within 1 s") >= 2, result.stdout[-3000:]


def test_raw_driver_errors_fail_the_suite(tmp_path: Path) -> None:
    """A backend that lets ConnectionRefusedError escape fails, told to raise BackendError."""
    result = run_suite(tmp_path, "-k", "errors_are", source=broken("RawErrors", unreachable="memory+down://"))
    assert result.returncode == 1, result.stdout[-3000:]
    assert "raised ConnectionRefusedError" in result.stdout and "BackendError" in result.stdout


def test_ignored_option_fails_the_suite(tmp_path: Path) -> None:
    """A from_url that ignores ?options= fails: a misspelt option must be an error."""
    result = run_suite(tmp_path, "-k", "unknown_option", source=broken("IgnoresOptions"))
    assert result.returncode == 1, result.stdout[-3000:]
    assert "cf_no_such_option" in result.stdout or "DID NOT RAISE" in result.stdout


def test_backend_bound_to_its_first_event_loop_fails_the_suite(tmp_path: Path) -> None:
    """A backend whose connections belong to the loop of its first call fails the event-loop test."""
    result = run_suite(tmp_path, "-k", "event_loop", source=broken("LoopBound"))
    assert result.returncode == 1, result.stdout[-3000:]
    assert "attached to a different loop" in result.stdout, result.stdout[-3000:]


def test_backend_sharing_connections_across_fork_fails_the_suite(tmp_path: Path) -> None:
    """A backend that keeps the parent's connection in a forked child fails the fork test."""
    result = run_suite(tmp_path, "-k", "after_fork", source=broken("ForkShared"))
    assert result.returncode == 1, result.stdout[-3000:]
    assert "after fork, in the child" in result.stdout and "shared with the parent" in result.stdout


def test_no_backend_given_fails_saying_what_to_pass(tmp_path: Path) -> None:
    """An empty subclass run without --cacheframe-url fails (it used to pass as '19 skipped')."""
    source = EMPTY_SUBCLASS
    result = run_suite(tmp_path, source=source)
    assert result.returncode == 1, result.stdout[-3000:]
    assert "--cacheframe-url" in result.stdout and "backend_url" in result.stdout
    assert " passed" not in result.stdout.splitlines()[-1]


def test_url_option_runs_the_whole_suite(tmp_path: Path) -> None:
    """An empty subclass with --cacheframe-url memory:// runs every test; none fails or hides as a skip."""
    source = EMPTY_SUBCLASS
    result = run_suite(tmp_path, "-rs", "--cacheframe-url", "memory://", source=source)
    assert result.returncode == 0, result.stdout[-3000:]
    skipped = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert all(
        "does not declare" in line or "no store to lose" in line or "names no host" in line
        for line in skipped
    ), skipped


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_pytest_asyncio_modes(tmp_path: Path, mode: str) -> None:
    """The suite runs under pytest-asyncio's strict and auto modes alike."""
    source = EMPTY_SUBCLASS
    result = run_suite(
        tmp_path,
        "-o",
        f"asyncio_mode={mode}",
        "--cacheframe-url",
        "memory://",
        "-k",
        "round_trip or wildcards",
        source=source,
    )
    assert result.returncode == 0, result.stdout[-3000:]


OVERRIDDEN_BACKEND = '''
from cacheframe.backends.memory import MemoryBackend
from cacheframe.testing import BackendConformance, async_fixture


class TestMine(BackendConformance):
    @async_fixture
    async def backend(self):
        backend = MemoryBackend.from_url("memory://", None)
        yield backend
        await backend.close()

    def test_built_my_way(self, backend):
        """The override is what the suite's tests receive."""
        assert type(backend) is MemoryBackend
'''


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_async_backend_override_runs_in_every_mode(tmp_path: Path, mode: str) -> None:
    """A backend fixture overridden with cacheframe.testing.async_fixture works under strict mode too."""
    args = ("-o", f"asyncio_mode={mode}", "--cacheframe-url", "memory://", "-k", "bytes_round_trip or my_way")
    result = run_suite(tmp_path, *args, source=OVERRIDDEN_BACKEND)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 passed" in result.stdout, result.stdout[-3000:]
