"""Sphinx extension: the ``cli-help`` directive prints what ``lightning-hypergrad <arguments>`` prints.

The CLI pages therefore show the real parser's options at build time, never a copy that can go stale. A
command that fails (an option renamed, a class removed) fails the build.
"""

from __future__ import annotations

import os
import subprocess
import sys

from docutils import nodes
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective

# Runs the entry point under its installed name, so the usage line reads "lightning-hypergrad".
LAUNCHER = "import sys; from lightning_hypergrad.cli import main; sys.argv[0] = 'lightning-hypergrad'; main()"
HELP_WIDTH = "100"
TIMEOUT_SECONDS = 300


def cli_output(arguments: list[str]) -> str:
    """The text ``lightning-hypergrad`` prints for ``arguments`` (which must exit with status 0)."""
    environment = {**os.environ, "COLUMNS": HELP_WIDTH}
    completed = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *arguments],
        capture_output=True,
        text=True,
        env=environment,
        timeout=TIMEOUT_SECONDS,
    )
    if completed.returncode != 0:
        raise ExtensionError(
            f"lightning-hypergrad {' '.join(arguments)} exited with {completed.returncode}:\n{completed.stderr[-2000:]}"
        )
    return completed.stdout


class CliHelp(SphinxDirective):
    """``.. cli-help:: fit --help``: a literal block with the command's output."""

    required_arguments = 1
    final_argument_whitespace = True

    def run(self) -> list[nodes.Node]:
        """Run the command and return its output as a literal block headed by the command line."""
        arguments = self.arguments[0].split()
        text = f"$ lightning-hypergrad {' '.join(arguments)}\n{cli_output(arguments)}"
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def setup(app):
    """Register the directive with Sphinx."""
    app.add_directive("cli-help", CliHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
