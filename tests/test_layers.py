"""The layers of DESIGN.md hold: import-linter's contract in pyproject.toml (lazy imports count),
io and shards do not import each other both ways, and no library error names a CLI flag."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "datascout"


def test_import_linter_contracts_are_kept(monkeypatch, capsys):
    cli = pytest.importorskip("importlinter.cli")
    monkeypatch.chdir(ROOT)
    status = cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_logo=True, no_cache=True)
    assert status == cli.EXIT_STATUS_SUCCESS, capsys.readouterr().out


def test_io_and_shards_do_not_import_each_other_both_ways():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("datascout", include_external_packages=False, cache_dir=None)
    both = [(a, b) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
            if a in graph.find_modules_directly_imported_by(b)]
    assert not both, f"modules that import each other: {both}"


# the command line, the web app and the data engine's command glue may speak of flags
FRONT_ENDS = ("cli", "server", "campaign")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+")


def _error_texts(tree: ast.AST):
    """Every string constant inside a ``raise`` statement (f-string parts included)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            for sub in ast.walk(node.exc):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    yield sub.lineno, sub.value


def test_library_errors_name_no_command_line_flag():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.parts[0] in FRONT_ENDS:
            continue
        for lineno, text in _error_texts(ast.parse(path.read_text(), str(path))):
            if FLAG.search(text):
                found.append(f"{rel}:{lineno}: {text.strip()}")
    assert not found, "library errors that name CLI flags:\n" + "\n".join(found)
