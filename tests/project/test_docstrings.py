"""Every public module, class, method and function has a real docstring, as the API reference shows it.

"Public" is what the reference documents (``docs/_ext/public_api.py``): the packages' ``__all__`` and every
public class or function of the other modules, with each class's public methods and properties. Methods that
override a Lightning or torch hook are documented by that library, except ``forward``, whose meaning is ours
(PyTorch's inherited ``forward`` docstring is a placeholder). Constructor arguments, dataclass fields and the
tensors that hold a hyperparameter family's hyperparameters must each be described in the class docstring.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
from pathlib import Path

import pytest
from torch import nn

from lightning_hypergrad import hparams

sys.path.insert(0, str(Path(__file__).parents[2] / "docs" / "_ext"))
import public_api

PLACEHOLDER = re.compile(r"\bTODO\b|\bFIXME\b|\bXXX\b|placeholder|Define the computation performed at every call", re.I)
MINIMUM_WORDS = 3
SECTION = re.compile(r"^(Args|Arguments|Parameters|Attributes):\s*$")
ENTRY = re.compile(r"^\s*(\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)*)\s*(?:\([^)]*\))?\s*:")

# Known gaps, each to be documented and deleted; an entry that is no longer a gap fails
# test_known_gaps_are_still_gaps, so this list only ever shrinks. Empty: every public callable is documented.
KNOWN_GAPS: dict[str, str] = {}


def problem_with(doc: str | None) -> str | None:
    """What is wrong with a docstring, or None when it reads as a real one."""
    if doc is None or not doc.strip():
        return "no docstring"
    text = inspect.cleandoc(doc)
    if PLACEHOLDER.search(text):
        return "placeholder docstring"
    if len(text.split()) < MINIMUM_WORDS:
        return "docstring too short to say anything"
    return None


def described_names(doc: str | None) -> set[str]:
    """Names listed in the Google-style ``Args:`` / ``Attributes:`` sections of a docstring."""
    names: set[str] = set()
    section_indent: int | None = None
    entry_indent: int | None = None
    for line in inspect.cleandoc(doc or "").splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if SECTION.match(line.strip()):
            section_indent, entry_indent = indent, None
            continue
        if section_indent is None:
            continue
        if indent <= section_indent:
            section_indent = None
            continue
        entry_indent = indent if entry_indent is None else entry_indent
        match = ENTRY.match(line)
        if indent == entry_indent and match:
            names.update(name.strip().lstrip("*") for name in match.group(1).split(","))
    return names


def member_doc(member: object) -> str | None:
    if isinstance(member, property):
        return member.fget.__doc__ if member.fget is not None else None
    if isinstance(member, (staticmethod, classmethod)):
        return member.__func__.__doc__
    return getattr(member, "__doc__", None)


def documented_module_attributes(module) -> set[str]:
    """Module-level names followed by a string literal: the attribute docstrings Sphinx shows."""
    body = ast.parse(inspect.getsource(module)).body
    names = set()
    for statement, following in zip(body, body[1:]):
        is_docstring = isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
        if is_docstring and isinstance(following.value.value, str):
            targets = statement.targets if isinstance(statement, ast.Assign) else [getattr(statement, "target", None)]
            names.update(target.id for target in targets if isinstance(target, ast.Name))
    return names


def attribute_docs(value: object) -> bool:
    """Whether a module-level name bound to ``value`` has an attribute docstring in the module defining it."""
    for module in public_api.modules():
        for name, candidate in vars(module).items():
            if candidate is value and name in documented_module_attributes(module):
                return True
    return False


def constructor_gaps(cls: type) -> list[str]:
    """Constructor arguments (and dataclass fields) missing from the class docstring's sections."""
    if "__init__" not in vars(cls) or not cls.__module__.startswith(public_api.PACKAGE):
        return []
    described = described_names(cls.__doc__)
    parameters = [
        name
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]
    return [name for name in parameters if name not in described]


def class_gaps(item: public_api.PublicObject) -> dict[str, str]:
    cls = item.obj
    gaps = {}
    if problem := problem_with(cls.__doc__):
        gaps[item.path] = problem
    if missing := constructor_gaps(cls):
        gaps[f"{item.path}.__init__"] = "arguments not described: " + ", ".join(missing)
    for name, member in public_api.public_methods(cls).items():
        if name != "forward" and public_api.overrides_external(cls, name):
            continue
        if problem := problem_with(member_doc(member)):
            gaps[f"{item.path}.{name}"] = problem
    return gaps


def public_api_gaps() -> dict[str, str]:
    """Every documentation gap of the public API, keyed by dotted path."""
    gaps = {}
    for module in public_api.modules():
        if problem := problem_with(module.__doc__):
            gaps[module.__name__] = problem
    for objects in public_api.public_objects().values():
        for item in objects:
            if inspect.isclass(item.obj):
                gaps.update(class_gaps(item))
            elif inspect.isfunction(item.obj):
                if problem := problem_with(item.obj.__doc__):
                    gaps[item.path] = problem
            elif not attribute_docs(item.obj):
                gaps[item.path] = "no attribute docstring"
    return gaps


def test_every_public_callable_has_a_real_docstring() -> None:
    unexpected = {path: problem for path, problem in public_api_gaps().items() if path not in KNOWN_GAPS}
    assert not unexpected, "document these:\n" + "\n".join(f"  {path}: {why}" for path, why in unexpected.items())


def test_known_gaps_are_still_gaps() -> None:
    gaps = public_api_gaps()
    fixed = [path for path in KNOWN_GAPS if path not in gaps]
    assert not fixed, f"now documented, delete from KNOWN_GAPS: {fixed}"


def test_the_walk_sees_what_users_import() -> None:
    documented = {item.path for objects in public_api.public_objects().values() for item in objects}
    assert {"lightning_hypergrad.hparams.WeightDecay", "lightning_hypergrad.solvers.Neumann"} <= documented
    assert "lightning_hypergrad.data.digits.DigitsSplit" in documented  # defined in a module, not re-exported
    assert not any(path.startswith("lightning_hypergrad.solvers.neumann.") for path in documented)  # once only
    assert {"forward", "coefficients"} <= set(public_api.public_methods(hparams.WeightDecay))


@pytest.mark.parametrize(
    "doc, problem",
    [
        (None, "no docstring"),
        ("   ", "no docstring"),
        ("Define the computation performed at every call.\n\nShould be overridden.", "placeholder docstring"),
        ("TODO: write this.", "placeholder docstring"),
        ("Forward.", "docstring too short to say anything"),
        ("The penalty ½ Σ c w² over the weights.", None),
    ],
)
def test_placeholders_are_recognised(doc, problem) -> None:
    assert problem_with(doc) == problem


def test_argument_sections_are_parsed() -> None:
    doc = """Summary line.

    Args:
        network, num_classes: see the base class.
        decay (float): a value
            continued on a second line: not an entry.
        **kwargs: forwarded.

    Returns:
        ignored: not an argument.
    """
    assert described_names(doc) == {"network", "num_classes", "decay", "kwargs"}


# One small instance per hyperparameter family, to see which tensors hold its hyperparameters.
FAMILY_EXAMPLES = {
    "ConcreteDropout": lambda: hparams.ConcreteDropout(shape=(3,)),
    "DistilledData": lambda: hparams.DistilledData(num_classes=2, input_shape=(3,)),
    "ExampleWeights": lambda: hparams.ExampleWeights(num_examples=4),
    "LearnedAugmentation": lambda: hparams.LearnedAugmentation(nn.Linear(4, 3), noise_channels=1),
    "WeightDecay": lambda: hparams.WeightDecay([(2, 3), (3,)], granularity="per_weight"),
    "FeatureDecay": lambda: hparams.FeatureDecay(5),
    "ClassWeights": lambda: hparams.ClassWeights(3),
}


def test_every_family_has_an_example_here() -> None:
    assert set(FAMILY_EXAMPLES) == set(hparams.__all__)


@pytest.mark.parametrize("name", sorted(FAMILY_EXAMPLES))
def test_family_docstrings_name_the_tensors_holding_hyperparameters(name) -> None:
    family = FAMILY_EXAMPLES[name]()
    holders = {parameter_name.split(".")[0] for parameter_name, _ in family.named_parameters()}
    missing = holders - described_names(type(family).__doc__)
    assert not missing, f"{name}'s docstring should describe {sorted(missing)} (Args or Attributes)"
