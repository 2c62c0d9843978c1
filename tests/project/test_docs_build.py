"""The documentation build is wired as promised: strict, in CI, and every page reachable from the contents."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"


def test_ci_builds_the_docs_strictly_after_the_tests() -> None:
    commands = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("make ")]
    assert commands == ["make test", "make docs"]
    makefile = (ROOT / "Makefile").read_text()
    (recipe,) = re.findall(r"^docs:.*\n\t(.*)", makefile, re.MULTILINE)
    assert "sphinx" in recipe and "--fail-on-warning" in recipe and "--nitpicky" in recipe


def test_the_docs_extra_installs_what_conf_py_loads() -> None:
    (line,) = re.findall(r"^docs = (\[.*\])$", (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    extras = ast.literal_eval(line)  # tomllib needs Python 3.11; the package supports 3.10
    required = {re.split(r"[<>=\[]", requirement)[0] for requirement in extras}
    conf = (DOCS / "conf.py").read_text()
    assert {"sphinx", "myst-parser", "furo"} <= required
    assert '"myst_parser"' in conf and 'html_theme = "furo"' in conf


def test_every_page_is_in_a_table_of_contents() -> None:
    listed = set()
    for page in DOCS.glob("*.md"):
        for block in re.findall(r"```\{toctree\}\n(.*?)```", page.read_text(), re.DOTALL):
            listed |= {line.strip() for line in block.splitlines() if line.strip() and not line.startswith(":")}
    pages = {page.stem for page in DOCS.glob("*.md")} - {"index"}
    assert pages - listed == set(), "add these pages to a toctree in docs/index.md"
    assert listed - pages - {"reference/index"} == set(), "the contents list pages that do not exist"
