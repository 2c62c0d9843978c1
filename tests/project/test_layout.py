"""Size limits that keep each unit readable, and Lightning's private attributes confined to one adapter."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "lightning_hypergrad"
MAX_FILE_LINES = 300
MAX_FUNCTION_LINES = 60
MAX_CALLBACK_LINES = 250
PRIVATE_ADAPTER = PACKAGE / "lightning" / "adapter.py"


def package_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_file_is_longer_than_the_limit() -> None:
    lengths = {str(path.relative_to(PACKAGE)): len(path.read_text().splitlines()) for path in package_files()}
    assert {name: n for name, n in lengths.items() if n > MAX_FILE_LINES} == {}
    assert lengths["lightning/callback.py"] < MAX_CALLBACK_LINES


def docstring_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    first = function.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first.end_lineno - first.lineno + 1
    return 0


def test_no_function_is_longer_than_the_limit() -> None:
    """Signature and body count; the docstring does not (the math belongs there, however long)."""
    long = []
    for path in package_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1 - docstring_lines(node)
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []


NAMED_TUPLE_API = {"_replace", "_asdict", "_fields"}  # public methods of typing.NamedTuple, underscored by design


def test_private_attributes_of_other_objects_are_read_only_in_the_adapter() -> None:
    """``x._name`` where x is not ``self``/``cls`` (our own privates) appears only in lightning/adapter.py."""
    found = []
    for path in package_files():
        if path == PRIVATE_ADAPTER:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if node.attr in NAMED_TUPLE_API:
                    continue
                if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} .{node.attr}")
    assert found == []


def test_the_adapter_still_finds_the_private_attributes_it_relies_on() -> None:
    from lightning.pytorch import Trainer
    from torch.nn.parallel import DistributedDataParallel

    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    assert hasattr(trainer.fit_loop.epoch_loop.val_loop, "_data_source")
    source = inspect.getsource(DistributedDataParallel)
    assert "module._ddp_params_and_buffers_to_ignore" in source  # read from the wrapped module
    assert 'f"{module_name}.{param_name}" not in self.parameters_to_ignore' in source  # the reducer's spelling


def test_the_adapter_still_finds_the_weight_averaging_attributes_it_relies_on() -> None:
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import EMAWeightAveraging, StochasticWeightAveraging

    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    assert trainer.fit_loop._skip_backward is False  # SWA's BatchNorm epoch sets it
    assert StochasticWeightAveraging(swa_lrs=0.1)._average_model is None
    assert EMAWeightAveraging()._average_model is None
