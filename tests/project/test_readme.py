"""The README's code example runs as printed (shortened) and its commands match the Makefile."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()


def test_the_subclassing_example_runs(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (example,) = [
        block for block in re.findall(r"```python\n(.*?)```", README, re.DOTALL) if "class Classifier" in block
    ]
    assert "max_epochs=20" in example
    namespace: dict = {}
    exec(compile(example.replace("max_epochs=20", "max_epochs=6"), "README.md", "exec"), namespace)
    assert namespace["callback"].taken > 0 and namespace["callback"].skipped == 0


def test_the_two_commands_exist_in_the_makefile() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "make demo" in README and "make test" in README
    assert re.search(r"^demo:", makefile, re.MULTILINE) and re.search(r"^test:", makefile, re.MULTILINE)
    assert "lightning-hypergrad fit --config configs/digits_weight_decay.yaml" in makefile
    assert "bash .ci/run" not in README and "make test" in (ROOT / ".ci" / "run").read_text()
