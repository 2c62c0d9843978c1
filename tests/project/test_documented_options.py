"""Option names shown in the README and docs exist: a renamed or misspelt argument fails here, not for a user.

Checked: keyword arguments in Python code blocks and in inline code such as ``Neumann(iterations=K, alpha=α)``
(and argument listings such as ``Identity(alpha)``) whenever the callee is one of this package's public objects;
``init_args`` keys under a ``class_path`` in YAML blocks; and inline ``name=value`` spans, whose name must be a
parameter of some public callable of this package or of the Lightning / torch calls the docs refer to.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.utils.checkpoint
import yaml

sys.path.insert(0, str(Path(__file__).parents[2] / "docs" / "_ext"))
import public_api

ROOT = Path(__file__).parents[2]
PAGES = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
ASSIGNMENT = re.compile(r"^([A-Za-z_]\w*)=\S*$")  # `sync="hvp"`; a span with spaces is a command
# Other libraries' calls the docs write as `name=value` (Trainer flags, torch's autograd, optimizers, checkpointing).
EXTERNAL_CALLABLES = (
    L.Trainer,
    torch.autograd.grad,
    torch.optim.SGD,
    torch.optim.Adam,
    torch.utils.checkpoint.checkpoint,
)


def parameter_names(target: Callable) -> set[str]:
    """The keyword names ``target`` accepts, following ``**kwargs`` into this package's base classes."""
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return set()
    names = {name for name, p in parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    forwards = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    if forwards and inspect.isclass(target):
        for base in target.__mro__[1:]:
            if base.__module__.startswith(public_api.PACKAGE) and "__init__" in vars(base):
                names |= parameter_names(base)
                break
    return names


def public_callables() -> dict[str, Callable]:
    """This package's public classes and functions by their short name."""
    found = {}
    for objects in public_api.public_objects().values():
        for item in objects:
            if callable(item.obj) and (inspect.isclass(item.obj) or inspect.isfunction(item.obj)):
                found[item.name] = item.obj
    return found


def every_parameter_name() -> set[str]:
    names: set[str] = set()
    for target in [*public_callables().values(), *EXTERNAL_CALLABLES]:
        names |= parameter_names(target)
        if inspect.isclass(target):
            for member in public_api.public_methods(target).values():
                if inspect.isfunction(member):
                    names |= parameter_names(member)
    return names


def callee_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def call_problems(tree: ast.AST, listing: bool) -> Iterator[str]:
    """Keyword (and, in a listing, positional) names that the called public object does not accept."""
    known = public_callables()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or callee_name(node) not in known:
            continue
        name = callee_name(node)
        accepted = parameter_names(known[name])
        used = [keyword.arg for keyword in node.keywords if keyword.arg is not None]
        if listing and node.args and all(isinstance(arg, ast.Name) for arg in node.args):
            used += [arg.id for arg in node.args]
        yield from (f"{name}({argument}=...)" for argument in used if argument not in accepted)


def yaml_problems(document: object) -> Iterator[str]:
    """``init_args`` keys that the class named by the sibling ``class_path`` does not accept."""
    if isinstance(document, list):
        for item in document:
            yield from yaml_problems(item)
    if not isinstance(document, dict):
        return
    if "class_path" in document and isinstance(document.get("init_args"), dict):
        module_name, _, class_name = document["class_path"].rpartition(".")
        target = getattr(importlib.import_module(module_name), class_name)
        accepted = parameter_names(target)
        yield from (f"{document['class_path']}: {key}" for key in document["init_args"] if key not in accepted)
    for value in document.values():
        yield from yaml_problems(value)


def page_problems(text: str) -> list[str]:
    """Every unknown option name on one page (code blocks, YAML blocks and inline code)."""
    problems: list[str] = []
    for language, block in FENCE.findall(text):
        if language == "python":
            try:
                problems += call_problems(ast.parse(block), listing=False)
            except SyntaxError as error:
                problems.append(f"python block does not parse: {error}")
        elif language in ("yaml", "yml"):
            problems += yaml_problems(yaml.safe_load(block))
    all_names = every_parameter_name()
    for span in INLINE.findall(FENCE.sub("", text)):
        if match := ASSIGNMENT.match(span):
            if match.group(1) not in all_names:
                problems.append(f"`{span}`: no public callable takes {match.group(1)}")
            continue
        try:
            tree = ast.parse(span, mode="eval")
        except SyntaxError:
            continue  # prose or formulas in code font, not a call
        problems += call_problems(tree, listing=True)
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_documented_option_names_exist(page: Path) -> None:
    assert page_problems(page.read_text()) == []


def test_the_guide_lists_every_option_of_the_callback() -> None:
    from lightning_hypergrad import HypergradientCallback

    guide = (ROOT / "docs" / "guide.md").read_text()
    (listing,) = [block for _, block in FENCE.findall(guide) if block.lstrip().startswith("HypergradientCallback(")]
    (call,) = [
        node
        for node in ast.walk(ast.parse(listing))
        if isinstance(node, ast.Call) and callee_name(node) == "HypergradientCallback"
    ]
    assert [keyword.arg for keyword in call.keywords] == list(inspect.signature(HypergradientCallback).parameters)


def test_wrong_names_are_caught() -> None:
    page = """
```python
callback = HypergradientCallback(Neumann(iterations=5, alfa=0.1), every_n_step=5)
```

```yaml
solver:
  class_path: lightning_hypergrad.solvers.ConjugateGradient
  init_args: {iterations: 5, tolerance: 1e-6}
```

Set `check_synch=True`, or use `Identity(alpha, beta)`; `WeightDecayClassifier(learning_rate=0.1)` is fine.
"""
    assert sorted(page_problems(page)) == [
        "HypergradientCallback(every_n_step=...)",
        "Identity(beta=...)",
        "Neumann(alfa=...)",
        "`check_synch=True`: no public callable takes check_synch",
        "lightning_hypergrad.solvers.ConjugateGradient: tolerance",
    ]
