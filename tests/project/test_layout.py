"""The package's shape: few top-level modules, units small enough to read (the adapter's own test is in
``tests/lightning/test_adapter.py``; the engine's independence from Lightning in ``tests/engine/test_imports.py``)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "lightning_hypergrad"
MAX_FILE_LINES = 300
MAX_FUNCTION_LINES = 60
MAX_CALLBACK_LINES = 250
MAX_TOP_LEVEL_MODULES = 6  # besides __init__.py and __main__.py


def package_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_file_is_longer_than_the_limit() -> None:
    lengths = {str(path.relative_to(PACKAGE)): len(path.read_text().splitlines()) for path in package_files()}
    assert {name: n for name, n in lengths.items() if n > MAX_FILE_LINES} == {}
    assert lengths["lightning/callback.py"] < MAX_CALLBACK_LINES


def docstring_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    first = function.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first.end_lineno - first.lineno + 1
    return 0


def test_no_function_is_longer_than_the_limit() -> None:
    """Signature and body count; the docstring does not (the math belongs there, however long)."""
    long = []
    for path in package_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1 - docstring_lines(node)
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []


def test_the_top_level_holds_few_modules_and_each_layer_is_a_package() -> None:
    modules = sorted(path.name for path in PACKAGE.glob("*.py") if path.name not in ("__init__.py", "__main__.py"))
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, modules
    packages = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists()}
    assert {"engine", "solvers", "lightning", "hparams", "tasks", "models", "data"} <= packages
