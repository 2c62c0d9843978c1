"""Sphinx configuration of the documentation site: ``make docs`` builds it strictly (warnings are errors)."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).parent
sys.path.insert(0, str(DOCS.parent))  # the package in this checkout, before any installed copy
sys.path.insert(0, str(DOCS / "_ext"))

project = "lightning_hypergrad"
author = "lightning_hypergrad developers"
copyright = "2026, lightning_hypergrad developers"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "api_pages",
    "cli_help",
]

# Markdown pages (myst) next to the generated reStructuredText reference.
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]

# Every reference must resolve; only names from other libraries (not indexed here: no network at build time)
# are exempt.
nitpicky = True
EXTERNAL = r"(torch|lightning|lightning_utilities|typing|typing_extensions|collections|pathlib|enum|abc|os|jsonargparse|matplotlib|numpy|sklearn|torchvision)(\..*)?"
nitpick_ignore_regex = [
    (r"py:.*", EXTERNAL),
    (r"py:.*", r"(Tensor|Vector|HVP|Path|Module|Optimizer|Callable|Sequence|Iterable|Iterator|Mapping|Any|Literal)"),
    (
        r"py:.*",
        r"(OptimizerCallable|LRSchedulerCallable|ArgsType|Granularity|FeatureGranularity|Parametrization|LightningModule|Restore)",
    ),
    (r"py:.*", r"(Trainer|Callback|LightningDataModule|LightningCLI|Dataset|DataLoader|Sampler|ReduceLROnPlateau)"),
    (r"py:.*", r"(nn\.Module|nn\.Parameter|LRScheduler|T_co|int|float|str|bool|None|dict|list|tuple|object)"),
]

autodoc_member_order = "bysource"
autodoc_inherit_docstrings = False  # a Lightning hook we override is documented by Lightning, not copied here
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_default_options = {"exclude-members": "__init__, __new__"}
autodoc_class_signature = "mixed"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = False
napoleon_attr_annotations = True

html_theme = "furo"
html_title = "lightning_hypergrad"
html_static_path: list[str] = []
