"""The engine and the solvers are torch only: nothing they import, directly or through the package, is Lightning."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2]
PACKAGE = "lightning_hypergrad"
TORCH_ONLY = ["lightning_hypergrad.engine", "lightning_hypergrad.solvers", "lightning_hypergrad.arguments"]
FORBIDDEN = ("lightning", "pytorch_lightning", "lightning_fabric", "lightning_hypergrad.lightning")


def source_of(module: str) -> Path | None:
    """The file of a package module, or None for anything outside the package."""
    if module != PACKAGE and not module.startswith(f"{PACKAGE}."):
        return None
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imported_by(module: str) -> set[str]:
    """The modules ``module``'s file imports (``from a.b import c`` counts ``a.b`` and, if it is a module, ``a.b.c``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source_of(module).read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            for alias in node.names:
                candidate = source_of(f"{node.module}.{alias.name}")
                if candidate is not None and candidate.exists():
                    names.add(f"{node.module}.{alias.name}")
    return names


def reachable_from(start: list[str]) -> dict[str, str]:
    """Every module reachable by imports from ``start``, each with the package module that first imported it.

    The package's own ``__init__`` is not followed: it re-exports the Lightning layer for users, and importing the
    engine's modules by path (as a torch-only user would vendor them) does not need it.
    """
    seen: dict[str, str] = {}
    queue = [(module, "") for module in start]
    while queue:
        module, importer = queue.pop()
        if module in seen:
            continue
        seen[module] = importer
        path = source_of(module)
        if path is not None and path.exists() and module != PACKAGE:
            queue += [(name, module) for name in imported_by(module)]
    return seen


def engine_modules() -> list[str]:
    modules = []
    for package in TORCH_ONLY:
        path = source_of(package)
        if path.name == "__init__.py":
            modules += [
                f"{package}.{file.stem}" for file in sorted(path.parent.glob("*.py")) if file.stem != "__init__"
            ]
        modules.append(package)
    return modules


def test_the_engine_and_solvers_import_nothing_from_lightning() -> None:
    reached = reachable_from(engine_modules())
    offending = {
        name: importer
        for name, importer in reached.items()
        if name.split(".")[0] in FORBIDDEN[:3] or name.startswith(FORBIDDEN[3])
    }
    assert offending == {}
    assert "lightning_hypergrad.engine.vectors" in reached and "torch" in reached  # the walk does follow imports


def test_the_walk_finds_lightning_where_it_is_imported() -> None:
    reached = reachable_from(["lightning_hypergrad.lightning.callback"])
    assert "lightning.pytorch" in reached
