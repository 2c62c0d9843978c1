"""Every non-public access to Lightning's and torch DDP's state lives in ``lightning/adapter.py``, and still works.

Non-public means: an underscored attribute of another object (read, written, or named in a string for
``getattr``/``hasattr``/``setattr``), an underscored protocol name a class of ours defines for torch to read, a
reach into the Trainer's loops and their progress trackers, or a write into the Trainer's metric dictionaries.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "lightning_hypergrad"
ADAPTER = PACKAGE / "lightning" / "adapter.py"
NAMED_TUPLE_API = {"_replace", "_asdict", "_fields"}  # public methods of typing.NamedTuple, underscored by design
LOOP_INTERNALS = {"fit_loop", "epoch_loop", "val_loop", "test_loop", "predict_loop", "batch_progress", "epoch_progress"}
METRIC_DICTIONARIES = {"callback_metrics", "progress_bar_metrics", "logged_metrics"}
MUTATORS = {"update", "pop", "clear", "setdefault", "popitem"}


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in NAMED_TUPLE_API


def is_own(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def non_public_accesses(source: str) -> list[str]:
    """``line: what`` for each non-public access in ``source`` (see the module docstring)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            if private(node.attr) and not is_own(node.value):
                found.append(f"{node.lineno}: .{node.attr}")
            if node.attr in LOOP_INTERNALS:
                found.append(f"{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("getattr", "hasattr", "setattr", "delattr") and len(node.args) >= 2:
                name = node.args[1]
                if isinstance(name, ast.Constant) and isinstance(name.value, str) and private(name.value):
                    if not is_own(node.args[0]):
                        found.append(f"{node.lineno}: {node.func.id}(…, {name.value!r})")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS:
            owner = node.func.value
            if isinstance(owner, ast.Attribute) and owner.attr in METRIC_DICTIONARIES:
                found.append(f"{node.lineno}: .{owner.attr}.{node.func.attr}(…)")
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Attribute):
                    if target.value.attr in METRIC_DICTIONARIES:
                        found.append(f"{node.lineno}: .{target.value.attr}[…] =")
        if isinstance(node, ast.ClassDef):
            for statement in node.body:
                if isinstance(statement, ast.Assign):
                    names = [target.id for target in statement.targets if isinstance(target, ast.Name)]
                    found += [f"{statement.lineno}: class attribute {name}" for name in names if private(name)]
    return found


def test_non_public_accesses_appear_only_in_the_adapter() -> None:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path != ADAPTER and (accesses := non_public_accesses(path.read_text())):
            found[str(path.relative_to(PACKAGE))] = accesses
    assert found == {}


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ("trainer._results", "._results"),
        ("trainer.fit_loop.epoch_loop.batch_progress.is_last_batch", ".batch_progress"),
        ("getattr(trainer.fit_loop, '_skip_backward', False)", "'_skip_backward'"),
        ("trainer.callback_metrics.update(shown)", ".callback_metrics.update"),
        ("trainer.progress_bar_metrics['x'] = 1.0", ".progress_bar_metrics[…] ="),
        ("class M:\n    _ddp_params_and_buffers_to_ignore = []", "class attribute _ddp_params_and_buffers_to_ignore"),
    ],
)
def test_the_check_catches_each_kind_of_access(source: str, caught: str) -> None:
    assert any(caught in access for access in non_public_accesses(source))


def test_public_reads_and_our_own_privates_pass() -> None:
    source = "self._cache = 1\ntrainer.callback_metrics.get('validation_loss')\nrecord._replace(step=1)"
    assert non_public_accesses(source) == []


def test_the_adapter_still_finds_the_private_attributes_it_relies_on() -> None:
    from lightning.pytorch import Trainer
    from torch.nn.parallel import DistributedDataParallel

    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    assert hasattr(trainer.fit_loop.epoch_loop.val_loop, "_data_source")
    assert trainer.fit_loop.epoch_loop.batch_progress.is_last_batch is False
    assert trainer._results is None  # no loop running; inside one, its result collection:
    assert trainer.fit_loop.epoch_loop.val_loop._results.dataloader_idx is None
    assert isinstance(trainer.callback_metrics, dict) and isinstance(trainer.progress_bar_metrics, dict)
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


def test_a_persistent_loader_keeps_one_iterator_and_the_hyperstep_gets_its_own() -> None:
    from torch.utils.data import DataLoader

    from lightning_hypergrad.lightning import adapter

    loader = DataLoader(list(range(4)), num_workers=1, persistent_workers=True)
    assert iter(loader) is iter(loader) is loader._iterator  # one iterator and worker pool per DataLoader object
    copied = adapter.own_loader(loader)
    assert iter(copied) is not loader._iterator and copied.dataset is loader.dataset
    assert [batch.tolist() for batch in copied] == [[0], [1], [2], [3]]
