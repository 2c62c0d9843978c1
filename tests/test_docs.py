"""The generated API reference matches the code's docstrings and signatures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DOCS = Path(__file__).parents[1] / "docs"


def test_api_reference_is_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("generate_api", DOCS / "generate_api.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert (DOCS / "api.md").read_text() == generator.render(), "run: python docs/generate_api.py"


def test_every_test_cited_in_the_reliability_table_exists() -> None:
    import re

    cited = set(re.findall(r"`(test_\w+)`", (DOCS / "reliability.md").read_text()))
    defined = {
        name
        for path in (DOCS.parent / "tests").rglob("test_*.py")
        for name in re.findall(r"^def (test_\w+)\(", path.read_text(), flags=re.MULTILINE)
    }
    assert len(cited) >= 25
    assert cited - defined == set()
