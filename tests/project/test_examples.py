"""The example scripts run as documented (shortened)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_bare_engine_example_tunes_without_lightning() -> None:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "digits_weight_decay.py"), "--steps", "300", "--solver", "cg"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = completed.stdout.strip().splitlines()
    assert lines[0].strip().startswith("fixed decay:") and lines[1].strip().startswith("tuned (cg):")
    assert re.search(r"mean_log_decay=-3\.0000", lines[0])  # the fixed run never touches its decays
    assert not re.search(r"mean_log_decay=-3\.0000", lines[1])  # the tuned one does
