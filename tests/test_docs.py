"""The docs against the code: every setting and backend option listed, plain statements present,
every code block runnable or included from a tested example, and the site builds in strict mode."""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from types import ModuleType

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
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))


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
    ("page", "model"),
    [
        ("memory.md", MemoryOptions),
        ("redis.md", RedisOptions),
        ("redis-cluster.md", ClusterOptions),
        ("redis-sentinel.md", SentinelOptions),
        ("memcached.md", MemcachedOptions),
    ],
)
def test_backend_option_tables_match_the_option_models(page: str, model: type[BaseModel]) -> None:
    """Each backend's page lists exactly the options its options model accepts."""
    rows = _table_rows(_section(DOCS / "backends" / page, "## Options"))
    documented = set().union(*(_names(row[0]) for row in rows[2:]))
    assert documented == set(model.model_fields)


def test_head_needs_a_route_for_get_and_head() -> None:
    """http-semantics.md says HEAD needs GET and HEAD registered, and that is how FastAPI behaves."""
    text = (DOCS / "http-semantics.md").read_text()
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
    """consistency.md says memory:// is one cache per worker and clear reaches only one of them."""
    section = _section(DOCS / "consistency.md", "## Several workers and `memory://`")
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
    """observability.md names the root logger and every logger of the hierarchy the code uses,
    and documents exactly the levels the code logs at."""
    loggers, levels = _log_calls()
    assert loggers and all(name.startswith("cacheframe.") for name in loggers)
    section = _section(DOCS / "observability.md", "## Logging")
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
    """Every kind of warning the code logs has its line in observability.md's Logging section."""
    section = " ".join(_section(DOCS / "observability.md", "## Logging").split())
    for words in ("unreachable at startup", "local function", "security scheme", "after a successful write"):
        assert words in section, words


def _hook() -> ModuleType:
    """docs/hooks/generated.py, the mkdocs hook that writes the generated parts of pages."""
    spec = importlib.util.spec_from_file_location("cf_docs_hook", DOCS / "hooks" / "generated.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_page_lists_every_setting() -> None:
    """The generated configuration page has a row per CacheSettings field: keyword, variable, default."""
    page = _hook().render((DOCS / "configuration.md").read_text())
    assert "<!-- generated" not in page
    rows = {row[1]: row for row in _table_rows(page)[2:]}
    for name, field in CacheSettings.model_fields.items():
        row = rows[f"`CACHEFRAME_{name.upper()}`"]
        assert row[0] == f"`{name}`"
        assert row[3] == f"`{_default_text(field.default)}`", name
    assert len(rows) == len(CacheSettings.model_fields)


def test_cli_page_shows_the_help_of_every_subcommand() -> None:
    """The generated CLI page has `cacheframe --help` and each subcommand's help."""
    page = _hook().render((DOCS / "cli.md").read_text())
    for command in ("", " demo", " backends", " ping", " stats", " clear", " get"):
        assert f"### `cacheframe{command}`" in page
        assert f"$ cacheframe{command} --help\nusage: cacheframe{command}" in page


PYTHON_BLOCK = re.compile(r"^( *)```python\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
INCLUDE = re.compile(r'^--8<-- "([^":]+)(?::(\w+))?"$')
SHOWS_AN_APP = re.compile(r"FastAPI\(|@app\.|\bapp\s*=")


def _python_blocks() -> list[object]:
    """Each ```python block of every page (indentation removed), with an id `page#n`."""
    blocks = []
    for page in PAGES:
        name = str(page.relative_to(DOCS))
        for n, match in enumerate(PYTHON_BLOCK.finditer(page.read_text())):
            code = "\n".join(line[len(match.group(1)) :] for line in match.group(2).splitlines())
            blocks.append(pytest.param(name, code, id=f"{name}#{n}"))
    return blocks


@pytest.mark.parametrize(("page", "code"), _python_blocks())
def test_python_block_is_a_tested_example_or_compiles(page: str, code: str) -> None:
    """A block showing an app is included from a tested examples/ file; any other block compiles."""
    from test_examples import TESTED

    lines = [line for line in code.strip().splitlines() if line.strip()]
    includes = [INCLUDE.match(line.strip()) for line in lines]
    if all(includes):
        for include in includes:
            assert include is not None
            path = ROOT / include.group(1)
            assert path.parent == ROOT / "examples" and path.stem in TESTED, f"{page}: {path} is untested"
            if include.group(2):
                text = path.read_text()
                for edge in ("start", "end"):
                    assert f"# --8<-- [{edge}:{include.group(2)}]" in text, f"{page}: no section"
        return
    assert not any(includes), f"{page}: a block mixes an include with inline code"
    assert not SHOWS_AN_APP.search(code), f"{page}: an app shown inline; put it in examples/ and include it"
    compile(code, page, "exec")


def test_readme_quick_start_is_the_tested_example() -> None:
    """README's quick-start block is examples/quickstart.py's app section, word for word."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start\n\n```python\n(.*?)```", readme, re.DOTALL)
    assert block is not None
    example = (ROOT / "examples" / "quickstart.py").read_text()
    section = re.search(r"# --8<-- \[start:app\]\n(.*?)\n*# --8<-- \[end:app\]", example, re.DOTALL)
    assert section is not None
    assert block.group(1).strip() == section.group(1).strip()


def test_readme_test_command_is_what_ci_runs() -> None:
    """README's test command is the one .ci/run runs, docs build included."""
    command = "python3 -m pip install -q nox && python3 -m nox -s tests lint typecheck docs"
    assert command in (ROOT / "README.md").read_text()
    assert command in (ROOT / ".ci" / "run").read_text()


def test_every_page_is_in_the_nav() -> None:
    """mkdocs.yml's nav names every Markdown page under docs/, and only those."""
    config = (ROOT / "mkdocs.yml").read_text()
    nav = set(re.findall(r"^ *- (?:[^:\n]+: )?([\w/.-]+\.md)$", config, re.MULTILINE))
    assert nav == {str(p.relative_to(DOCS)) for p in PAGES}


MKDOCS = shutil.which("mkdocs")


@pytest.mark.skipif(MKDOCS is None, reason="mkdocs not installed (nox -s docs builds the site)")
def test_site_builds_in_strict_mode(tmp_path: Path) -> None:
    """mkdocs builds the site with no warning, and the generated pages hold every setting."""
    assert MKDOCS is not None
    run = subprocess.run(
        [MKDOCS, "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    configuration = (tmp_path / "configuration" / "index.html").read_text()
    for name in CacheSettings.model_fields:
        assert f"CACHEFRAME_{name.upper()}" in configuration
    assert "cacheframe.Cache" in (tmp_path / "reference" / "index.html").read_text()
