"""The API reference pages written at build time cover every module and every public object exactly once."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "docs" / "_ext"))
import api_pages
import public_api


def test_every_public_object_is_on_exactly_one_page(tmp_path) -> None:
    pages = api_pages.write_reference(tmp_path)
    texts = {name: (tmp_path / "reference" / f"{name}.rst").read_text() for name in pages}
    for module_name, objects in public_api.public_objects().items():
        for item in objects:
            holders = [page for page, text in texts.items() if f":: {item.name}\n" in text]
            assert holders == [module_name], item.path
    index = (tmp_path / "reference" / "index.rst").read_text()
    assert all(f"   {name}\n" in index for name in pages)


def test_every_package_and_every_module_with_public_objects_has_a_page(tmp_path) -> None:
    pages = set(api_pages.write_reference(tmp_path))
    for module in public_api.modules():
        owns_objects = bool(public_api.public_objects()[module.__name__])
        assert (module.__name__ in pages) == (owns_objects or hasattr(module, "__path__")), module.__name__
    assert {"lightning_hypergrad", "lightning_hypergrad.solvers", "lightning_hypergrad.data.digits"} <= pages
