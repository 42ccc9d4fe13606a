"""Entry-point registry: built-ins registered like plugins, lazy imports, clear errors."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint
from typing import Any

import pytest

from cacheframe import registry
from cacheframe.exceptions import ConfigurationError, MissingDriverError


def test_builtins_registered_through_entry_points() -> None:
    """memory and the serialisers come from the cacheframe distribution's entry points."""
    backends = registry.available(registry.BACKENDS_GROUP)
    assert backends["memory"].distribution == "cacheframe"
    assert {"json", "pickle"} <= set(registry.available(registry.SERIALIZERS_GROUP))


def test_memory_does_not_import_drivers() -> None:
    """Using memory:// never imports redis or aiomcache."""
    code = (
        "import sys, asyncio, cacheframe; c = cacheframe.Cache(url='memory://');"
        "asyncio.run(c.set('a', 1));"
        "print('redis' in sys.modules, 'aiomcache' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_duplicate_names_fail_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two distributions claiming one scheme is an error naming both."""

    class Dist:
        def __init__(self, name: str) -> None:
            self.name = name

    eps = []
    for dist, target in (("one", "a.b:C"), ("two", "x.y:Z")):
        ep = EntryPoint("dup", target, registry.BACKENDS_GROUP)
        ep = ep._for(Dist(dist))  # type: ignore[attr-defined]
        eps.append(ep)
    monkeypatch.setattr(registry, "entry_points", lambda group: eps)
    registry.available.cache_clear()
    try:
        with pytest.raises(ConfigurationError, match="registered twice.*one.*two"):
            registry.available(registry.BACKENDS_GROUP)
    finally:
        registry.available.cache_clear()


def test_missing_driver_names_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend whose module cannot be imported says which extra to install."""
    plugin = registry.Plugin(
        "redis", "nonexistent_mod:X", "cacheframe", EntryPoint("redis", "nonexistent_mod:X", "g")
    )
    with pytest.raises(MissingDriverError, match=r"pip install 'cacheframe\[redis\]'"):
        registry._load(plugin)


def test_unknown_serializer_lists_installed() -> None:
    """An unknown serialiser name lists what is installed."""
    with pytest.raises(ConfigurationError, match="installed serializers: json, pickle"):
        registry.load_serializer_factory("yaml")


def _mypy(*paths: str) -> tuple[str, int]:
    """mypy --strict on ``paths``, in a subprocess (cacheframe as this test run imports it)."""
    import os

    import cacheframe

    src = os.path.dirname(os.path.dirname(cacheframe.__file__))
    env = dict(os.environ)
    if os.path.basename(src) != "site-packages":  # a source tree: point mypy at it
        env["MYPYPATH"] = src  # (an installed cacheframe is found by mypy itself; MYPYPATH may not name it)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", *paths],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    return result.stdout + result.stderr, result.returncode


def test_backend_factory_typed_as_the_registry_calls_it() -> None:
    """mypy accepts the built-ins and a documented plugin as BackendFactory (from_url(url, settings))."""
    from pathlib import Path

    out, status = _mypy(str(Path(__file__).parent / "typing" / "backend_plugins.py"))
    assert status == 0, out


def test_backend_factory_rejects_a_wrong_from_url(tmp_path: Any) -> None:
    """A plugin whose from_url cannot take (url, settings) is a mypy error, not a runtime surprise."""
    bad = tmp_path / "bad_plugin.py"
    bad.write_text(
        "from typing import Any\n"
        "from cacheframe.types import BackendFactory\n\n\n"
        "class Old:\n"
        "    @classmethod\n"
        "    def from_url(cls, url: str, **options: Any) -> 'Old':\n"
        "        return cls()\n\n\n"
        "factory: BackendFactory = Old\n"
    )
    out, status = _mypy(str(bad))
    assert status == 1 and "BackendFactory" in out, out
