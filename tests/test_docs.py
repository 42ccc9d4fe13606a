"""The docs against the code: every setting and backend option listed, plain statements present."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

import cacheframe
from cacheframe import CacheSettings
from cacheframe.backends._redis_client import ClusterOptions, RedisOptions, SentinelOptions
from cacheframe.backends.memcached import MemcachedOptions
from cacheframe.backends.memory import MemoryOptions

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "cacheframe"


def _section(path: Path, heading: str) -> str:
    """The text of the markdown section starting with ``heading`` up to the next heading of its level."""
    text = path.read_text()
    level = heading.split(" ")[0]
    start = text.index(heading + "\n")
    rest = text[start + len(heading) + 1 :]
    end = re.search(rf"^{level} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def _table_rows(text: str) -> list[list[str]]:
    """Cells of each markdown table row (header and separator rows included)."""
    return [
        [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        for line in text.splitlines()
        if line.strip().startswith("|")
    ]


def _names(cell: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", cell))


def _default_text(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_readme_settings_table_matches_the_settings_class() -> None:
    """README's table lists every CacheSettings field once, with its real default."""
    rows = _table_rows(_section(ROOT / "README.md", "## Configuration"))
    documented = {}
    for row in rows:
        names = _names(row[0])
        if len(names) == 1 and next(iter(names)).startswith("CACHEFRAME_"):
            documented[next(iter(names))] = row[1].strip("`")
    expected = {
        f"CACHEFRAME_{name.upper()}": field.default for name, field in CacheSettings.model_fields.items()
    }
    assert sorted(documented) == sorted(expected)
    for name, default in expected.items():
        assert documented[name] == _default_text(default), name


@pytest.mark.parametrize(
    ("heading", "models"),
    [
        ("## Memory (built in)", [MemoryOptions]),
        ("## Redis (`pip install 'cacheframe[redis]'`)", [RedisOptions, ClusterOptions, SentinelOptions]),
        ("## Memcached (`pip install 'cacheframe[memcached]'`)", [MemcachedOptions]),
    ],
)
def test_backend_option_tables_match_the_option_models(heading: str, models: list[type[BaseModel]]) -> None:
    """docs/backends.md lists exactly the options each backend's options model accepts."""
    rows = _table_rows(_section(ROOT / "docs" / "backends.md", heading))
    documented = set().union(*(_names(row[0]) for row in rows[2:]))
    accepted = set().union(*(set(m.model_fields) for m in models))
    assert documented == accepted


def test_head_needs_a_route_for_get_and_head() -> None:
    """usage.md says HEAD needs GET and HEAD registered, and that is how FastAPI behaves."""
    text = (ROOT / "docs" / "usage.md").read_text()
    assert '@app.api_route("/items/{id}", methods=["GET", "HEAD"])' in text
    assert "`405 Method Not Allowed`" in text
    cacheframe.configure(url="memory://")
    app = FastAPI()

    @app.get("/get-only")
    @cacheframe.cache(ttl=60)
    async def get_only() -> dict[str, int]:
        return {"a": 1}

    @app.api_route("/both", methods=["GET", "HEAD"])
    @cacheframe.cache(ttl=60)
    async def both() -> dict[str, int]:
        return {"a": 1}

    client = TestClient(app)
    assert client.head("/get-only").status_code == 405
    assert client.get("/both").headers["x-cache"] == "MISS"
    head = client.head("/both")
    assert (head.status_code, head.headers["x-cache"], head.content) == (200, "HIT", b"")


def test_memory_with_several_workers_is_stated() -> None:
    """usage.md says memory:// is one cache per worker and clear reaches only one of them."""
    section = _section(ROOT / "docs" / "usage.md", "## Several workers and `memory://`")
    assert "each worker has its own cache" in section
    assert "reaches only that worker's entries" in section


def _log_calls() -> tuple[set[str], set[str]]:
    """Logger names passed to getLogger, and the levels of log.<level>(...) calls, in src."""
    loggers: set[str] = set()
    levels: set[str] = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            if node.func.attr == "getLogger":
                arg = node.args[0]
                assert isinstance(arg, ast.Constant), f"{path}: getLogger with a computed name"
                loggers.add(str(arg.value))
            elif isinstance(node.func.value, ast.Name) and node.func.value.id == "log":
                levels.add(node.func.attr.upper())
    return loggers, levels


def test_logging_section_names_the_logger_and_every_level_used() -> None:
    """usage.md names the root logger and every logger of the hierarchy the code uses, and
    documents exactly the levels the code logs at."""
    loggers, levels = _log_calls()
    assert loggers and all(name.startswith("cacheframe.") for name in loggers)
    section = _section(ROOT / "docs" / "usage.md", "## Logging")
    assert 'logging.getLogger("cacheframe")' in section
    for name in loggers:
        assert f"`{name}`" in section, name
    documented = set(re.findall(r"^- `([A-Z]+)`", section, re.MULTILINE))
    assert documented == levels


def test_license_file_matches_pyproject() -> None:
    """A LICENSE file exists and is the license pyproject.toml declares (MIT)."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    text = (ROOT / "LICENSE").read_text()
    assert declared == "MIT" and text.startswith("MIT License")
    assert "Copyright (c)" in text and "cacheframe contributors" in text


def test_logging_section_lists_each_kind_of_warning() -> None:
    """Every kind of warning the code logs has its line in usage.md's Logging section."""
    section = " ".join(_section(ROOT / "docs" / "usage.md", "## Logging").split())
    for words in ("unreachable at startup", "local function", "security scheme", "after a successful write"):
        assert words in section, words
