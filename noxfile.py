"""The source of truth for running things: tests (all or per backend), lint, typecheck, demo, bench."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"

TEST_DEPS = [".[test,redis,memcached]", "./tests/plugin_example"]
BACKEND_SELECTIONS = {
    "memory": ("memory", ["tests"]),
    "redis": ("redis,redis-cluster,redis-sentinel", ["tests/test_backend_redis.py", "tests/test_views.py"]),
    "memcached": ("memcached,memcached-pair", ["tests/test_backend_memcached.py", "tests/test_views.py"]),
}


def _install_servers(session: nox.Session) -> None:
    session.run("bash", "scripts/install-servers.sh", external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite against every backend (starts its own Redis/Memcached processes)."""
    _install_servers(session)
    session.install(*TEST_DEPS)
    session.run("pytest", *(session.posargs or ["-q", "-ra"]))


@nox.session(name="tests-backend")
@nox.parametrize("backend", list(BACKEND_SELECTIONS))
def tests_backend(session: nox.Session, backend: str) -> None:
    """One backend's conformance and app-level suites: nox -s "tests-backend(backend='redis')"."""
    _install_servers(session)
    session.install(*TEST_DEPS)
    selection, paths = BACKEND_SELECTIONS[backend]
    session.run("pytest", "-q", *paths, env={"CF_TEST_BACKENDS": selection})


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install(".[redis,memcached,test]", "mypy", "types-cachetools")
    session.run("mypy")


@nox.session
def demo(session: nox.Session) -> None:
    """Serve the demo app on the in-memory default (Ctrl-C to stop)."""
    session.install(".[demo]")
    session.run("cacheframe", "demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (not part of the tests): see benchmarks/README.md."""
    _install_servers(session)
    session.install(".[redis,memcached,demo]", "httpx", "pytest", "pytest-benchmark", "pytest-asyncio")
    session.run("python", "benchmarks/run.py", *session.posargs)
