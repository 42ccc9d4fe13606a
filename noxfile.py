"""The source of truth for running things: tests (all or per backend), lint, typecheck, docs, demo, bench."""

from __future__ import annotations

import shutil

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.default_venv_backend = "venv"

TEST_DEPS = [".[test,redis,memcached]", "./tests/plugin_example"]
# Per-backend sessions: that backend's conformance suite plus the app-level suites on it.
APP_SUITES = [
    "tests/app/test_views.py",
    "tests/app/test_functions.py",
    "tests/app/test_cache.py",
    "tests/app/test_stale.py",
    "tests/app/test_stampede.py",
    "tests/app/test_fastpath.py",
]
REDIS_PARTS = ("urls", "single", "failures", "cluster", "sentinel", "round_trips", "tls", "exec")
BACKEND_SELECTIONS = {
    "memory": ("memory", ["tests/backends/test_memory.py", *APP_SUITES]),
    "redis": (
        "redis,redis-cluster,redis-sentinel",
        [*(f"tests/backends/test_redis_{part}.py" for part in REDIS_PARTS), *APP_SUITES],
    ),
    "memcached": ("memcached,memcached-pair", ["tests/backends/test_memcached.py", *APP_SUITES]),
}


def _install_servers(session: nox.Session) -> None:
    session.run("bash", "scripts/install-servers.sh", external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite against every backend (starts its own Redis/Memcached processes)."""
    _install_servers(session)
    session.install(*TEST_DEPS)
    session.run("pytest", *(session.posargs or ["-q", "-ra"]))


def _backend_session(backend: str) -> None:
    selection, paths = BACKEND_SELECTIONS[backend]

    @nox.session(name=f"tests-{backend}")
    def session(session: nox.Session) -> None:
        if backend != "memory":
            _install_servers(session)
        session.install(*TEST_DEPS)
        session.run("pytest", "-q", *paths, *session.posargs, env={"CF_TEST_BACKENDS": selection})

    session.__doc__ = f"The {backend} backend: conformance suite and app-level suites on it."


for _backend in BACKEND_SELECTIONS:
    _backend_session(_backend)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and format check; import-linter's layers contract (pyproject.toml)."""
    session.install("ruff", "import-linter", ".")
    session.run("ruff", "check", "src", "tests", "examples", "benchmarks", "docs/hooks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests")
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package, and on tests/typing/ (the API as a user's code types it)."""
    session.install(".[redis,memcached,test]", "mypy", "types-cachetools")
    session.run("mypy")
    session.run("mypy", "tests/typing")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site into site/ in strict mode (any warning fails), offline.

    mkdocs-material with mkdocstrings (API reference) and a hook that generates the
    configuration table and the CLI help (docs/hooks/generated.py).
    """
    session.install(".[docs]")
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        "site",
        *session.posargs,
        env={"NO_MKDOCS_2_WARNING": "1"},
    )


@nox.session
def demo(session: nox.Session) -> None:
    """Serve the demo app on the in-memory default (Ctrl-C to stop)."""
    session.install(".[demo]")
    session.run("cacheframe", "demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """HTTP benchmarks vs floor/ceiling/peers, store commands, memory, micro; `-- --quick` for a smoke run.

    Not part of the tests. Writes docs/benchmarks.md (+ .png); see benchmarks/README.md.
    """
    _install_servers(session)
    session.install(".[bench,redis,memcached]")
    if shutil.which("wrk") is None:
        session.warn("wrk not found (Debian: apt-get install wrk): using the Python load generator")
    session.run("python", "benchmarks/run.py", *session.posargs)
