"""docs/lightning.md: every feature row cites tests, and every cited test exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
CITATION = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def defined_functions(path: Path) -> set[str]:
    return {node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)}


def table_rows(text: str) -> list[str]:
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| feature")]
    return [row for row in rows if not set(row) <= {"|", "-", " "}]


def test_every_cited_test_exists() -> None:
    text = (ROOT / "docs" / "lightning.md").read_text()
    citations = CITATION.findall(text)
    assert len(citations) >= 20
    missing = [f"{path}::{name}" for path, name in citations if name not in defined_functions(ROOT / path)]
    assert missing == []


def test_every_row_but_the_gpu_one_cites_a_test() -> None:
    rows = table_rows((ROOT / "docs" / "lightning.md").read_text())
    uncited = [row.split("|")[1].strip() for row in rows if not CITATION.search(row)]
    assert uncited == ["RNNs on a GPU (cuDNN)"]
