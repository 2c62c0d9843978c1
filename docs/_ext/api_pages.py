"""Sphinx extension: writes one API reference page per module before Sphinx reads the sources.

The pages come from :mod:`public_api`, so a module added to the package appears in the reference on the next
build without anyone editing the docs. They go to ``docs/reference/`` (ignored by git).
"""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import public_api

REFERENCE = "reference"


def _directive(obj: object) -> str:
    if inspect.isclass(obj) and issubclass(obj, BaseException):
        return "autoexception"
    if inspect.isclass(obj):
        return "autoclass"
    if inspect.isfunction(obj):
        return "autofunction"
    return "autodata"


def module_page(module_name: str, objects: list[public_api.PublicObject]) -> str:
    """The reStructuredText of one module's reference page."""
    lines = [module_name, "=" * len(module_name), "", f".. automodule:: {module_name}", ""]
    if objects:
        lines += [f".. currentmodule:: {module_name}", ""]
    for item in objects:
        directive = _directive(item.obj)
        lines.append(f".. {directive}:: {item.name}")
        if directive in ("autoclass", "autoexception"):
            lines += ["   :members:", "   :show-inheritance:"]
        lines.append("")
    return "\n".join(lines)


def index_page(pages: list[str], packages: set[str]) -> str:
    """The reference's landing page: the public packages first, then the modules inside them."""
    lines = [
        "API reference",
        "=============",
        "",
        "Generated from the docstrings at every build, one page per module. Import public objects from the",
        "packages (``lightning_hypergrad``, ``lightning_hypergrad.solvers``, ``lightning_hypergrad.hparams``, ...);",
        "the other modules hold the pieces they are built from.",
        "",
    ]
    for caption, names in (
        ("Packages", [name for name in pages if name in packages]),
        ("Modules", [name for name in pages if name not in packages]),
    ):
        lines += [".. toctree::", f"   :caption: {caption}", "   :maxdepth: 1", ""]
        lines += [f"   {name}" for name in names]
        lines.append("")
    return "\n".join(lines)


def write_reference(source_dir: Path) -> list[str]:
    """Write every page under ``source_dir/reference``, replacing an earlier build's; return the page names."""
    target = source_dir / REFERENCE
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    packages = {module.__name__ for module in public_api.modules() if hasattr(module, "__path__")}
    pages = []
    for module_name, objects in public_api.public_objects().items():
        if not objects and module_name not in packages:
            continue  # everything it defines is documented under its package
        (target / f"{module_name}.rst").write_text(module_page(module_name, objects))
        pages.append(module_name)
    (target / "index.rst").write_text(index_page(pages, packages))
    return pages


def _on_builder_inited(app) -> None:
    write_reference(Path(app.srcdir))


def setup(app):
    """Register the extension with Sphinx."""
    app.connect("builder-inited", _on_builder_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
