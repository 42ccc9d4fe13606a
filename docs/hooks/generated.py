"""mkdocs hook: the parts of pages that are made from the code, so they cannot drift from it.

A page line ``<!-- generated: settings -->`` becomes the table of
:class:`cacheframe.CacheSettings` fields; ``<!-- generated: cli -->`` becomes the
``--help`` of ``cacheframe`` and of each subcommand. ``tests/test_docs.py`` renders
both and checks every setting and subcommand is there.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from typing import Any

import annotated_types

from cacheframe import CacheSettings
from cacheframe.cli import _parser
from cacheframe.settings import ENV_PREFIX

HELP_WIDTH = "88"  # argparse wraps to the terminal; the page must not depend on who builds it


def default_text(value: object) -> str:
    """A default as the docs write it: ``—`` for none, ``true``/``false``, ``5`` for ``5.0``."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _type_text(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if not hasattr(annotation, "__args__") else None
    text = text or str(annotation)
    return re.sub(r"\b(?:[a-z_]+\.)+(\w+)", r"\1", text).replace("NoneType", "None")


def _bounds(metadata: list[Any]) -> str:
    words = []
    for item in metadata:
        if isinstance(item, annotated_types.Gt):
            words.append(f"> {default_text(item.gt)}")
        elif isinstance(item, annotated_types.Ge):
            words.append(f"≥ {default_text(item.ge)}")
        elif isinstance(item, annotated_types.MinLen) and item.min_length == 1:
            words.append("not empty")
    return ", ".join(words)


def settings_table() -> str:
    """One row per settings field: keyword, variable, type, default, accepted values, meaning."""
    rows = [
        "| keyword | environment variable | type | default | valid | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for name, field in CacheSettings.model_fields.items():
        cells = [
            f"`{name}`",
            f"`{ENV_PREFIX}{name.upper()}`",
            _type_text(field.annotation).replace("|", "\\|"),
            f"`{default_text(field.default)}`",
            _bounds(field.metadata),
            (field.description or "").replace("|", "\\|"),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_help() -> str:
    """``cacheframe --help`` and each subcommand's ``--help``, as the terminal shows them."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH
    try:
        parser = _parser()
        parts = [("cacheframe", parser)] + [
            (f"cacheframe {name}", sub) for name, sub in _subcommands(parser).items()
        ]
        return "\n\n".join(
            f"### `{title}`\n\n```text\n$ {title} --help\n{sub.format_help().rstrip()}\n```"
            for title, sub in parts
        )
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


GENERATORS: dict[str, Callable[[], str]] = {"settings": settings_table, "cli": cli_help}
MARKER = re.compile(r"^<!-- generated: (\w+) -->$", re.MULTILINE)


def render(markdown: str) -> str:
    """The page with each marker line replaced by what its generator makes now."""
    return MARKER.sub(lambda match: GENERATORS[match.group(1)](), markdown)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """mkdocs' hook event: runs on every page's Markdown before it is converted."""
    return render(markdown)
