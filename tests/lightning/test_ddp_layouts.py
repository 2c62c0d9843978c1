"""DDP with hyperparameters registered anywhere on the module, with and without the callback (2 CPU processes).

torch's DDP reducer names a parameter of the root module ``".name"``, not ``"name"``; a hyperparameter at the top
level was therefore left in the reducer, which waited for a gradient the weights' backward never gives it
("parameters that were not used in producing the loss" at the second step). These tests run every layout.
"""

from __future__ import annotations

import json
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.pytorch import Callback
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_hypergrad import BilevelLightningModule, HypergradientCallback, HypergradientWarning
from lightning_hypergrad.data import DigitsDataModule
from lightning_hypergrad.lightning.adapter import ddp_spellings
from lightning_hypergrad.solvers import Neumann
from tests.lightning.test_distributed import WORLD, free_port
from tests.lightning_helpers import make_trainer
from tests.test_cli_reliability import fit_through_the_cli_on_every_process

LAYOUTS = ("top_after", "top_before", "child_after", "child_before", "several", "nested", "user_ignore_list")
MODES = (None, "hvp", "hypergradient")  # no callback, then the callback in each sync mode
STEPS, EVERY = 6, 2


class Holder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.log_decay = nn.Parameter(-3.0 + 0.1 * torch.randn(()))


class LayoutModule(BilevelLightningModule):
    """Ridge-regularised linear classifier whose log decays sit where ``layout`` says."""

    def __init__(self, layout: str) -> None:
        super().__init__()
        if layout.endswith("before"):
            self.add_hyperparameters(layout)
        self.net = nn.Linear(8, 4)
        if not layout.endswith("before"):
            self.add_hyperparameters(layout)
        if layout == "user_ignore_list":
            # trainable yet unused: DDP would fail unless the user's own ignore list survives
            self.spare = nn.Parameter(torch.zeros(3))
            self._ddp_params_and_buffers_to_ignore = ["spare"]

    def add_hyperparameters(self, layout: str) -> None:
        if layout.startswith("top") or layout in ("several", "user_ignore_list"):
            self.log_decay = nn.Parameter(-3.0 + 0.1 * torch.randn(()))
        if layout.startswith("child") or layout == "several":
            self.regularizer = Holder()
        if layout == "several":
            self.log_bias_decay = nn.Parameter(-3.0 + 0.1 * torch.randn(4))
        if layout == "nested":
            self.outer = nn.Module()
            self.outer.inner = Holder()

    def hyperparameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if "decay" in name]

    def training_loss(self, batch: Any) -> Tensor:
        inputs, targets = batch
        loss = nn.functional.cross_entropy(self.net(inputs), targets)
        for name, decay in self.named_parameters():
            if "decay" in name:
                penalised = self.net.bias if "bias" in name else self.net.weight
                loss = loss + 0.5 * (decay.exp() * penalised.pow(2)).sum()
        return loss

    def validation_loss(self, batch: Any) -> Tensor:
        inputs, targets = batch
        return nn.functional.cross_entropy(self.net(inputs), targets)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.weight_parameters(), lr=0.1)


class NaNOnRankOne(LayoutModule):
    """The first hyperstep's validation loss is NaN on rank 1 only: both processes must skip it together."""

    def __init__(self) -> None:
        super().__init__("top_after")
        self.validation_calls = 0

    def validation_loss(self, batch: Any) -> Tensor:
        self.validation_calls += not self.trainer.validating  # count the hypersteps' calls only
        loss = super().validation_loss(batch)
        first_hyperstep = not self.trainer.validating and self.validation_calls == 1
        return loss * float("nan") if self.global_rank == 1 and first_hyperstep else loss


def loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(64, 8, generator=generator)
    return DataLoader(TensorDataset(inputs, inputs[:, :4].argmax(dim=1)), batch_size=8)


def callback_for(mode: str | None) -> list[HypergradientCallback]:
    if mode is None:
        return []
    return [HypergradientCallback(Neumann(iterations=3, alpha=0.5), every_n_steps=EVERY, sync=mode, check_sync=True)]


def layouts_worker(rank: int, port: int, directory: str) -> None:
    """One process of two: every layout and mode in turn, under ``strategy="ddp"`` in processes made here."""
    try:
        run_every_layout(rank, port, directory)
    finally:  # exiting with a live process group aborts the process (gloo's threads)
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def run_every_layout(rank: int, port: int, directory: str) -> None:
    os.environ.update(
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(WORLD), "RANK": str(rank)}
    )
    os.environ.update({"LOCAL_RANK": str(rank), "NODE_RANK": "0"})
    torch.set_num_threads(1)
    classifier = readme_module(Path(directory))
    results = {}
    for layout in ("readme", *LAYOUTS):
        for mode in MODES:
            torch.manual_seed(rank)  # each process starts from different weights and λ: DDP and we align them
            model = classifier() if layout == "readme" else LayoutModule(layout)
            data = (
                {"datamodule": DigitsDataModule(batch_size=32)}
                if layout == "readme"
                else {"train_dataloaders": loader(), "val_dataloaders": loader()}
            )
            callbacks = callback_for(mode)
            trainer = make_trainer(callbacks, max_steps=STEPS, strategy="ddp", devices=WORLD, deterministic=False)
            trainer.fit(model, **data)
            taken = callbacks[0].taken if callbacks else None
            results[(layout, mode)] = {"state": model.state_dict(), "taken": taken, "step": trainer.global_step}
    for mode in MODES[1:]:
        model, callbacks = NaNOnRankOne(), callback_for(mode)
        trainer = make_trainer(callbacks, max_steps=STEPS, strategy="ddp", devices=WORLD)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HypergradientWarning)
            trainer.fit(model, train_dataloaders=loader(), val_dataloaders=loader())
        history = [entry["applied"] for entry in callbacks[0].history]
        results[("nan_on_rank_one", mode)] = {"state": model.state_dict(), "applied": history}
    torch.save(results, f"{directory}/layouts_rank{rank}.pt")
    os.chdir(directory)  # the CLI's configs write to ./runs
    fit_through_the_cli_on_every_process(Path(directory))


@pytest.fixture(scope="module")
def spawned_directory(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("layouts")
    mp.start_processes(layouts_worker, args=(free_port(), str(directory)), nprocs=WORLD, start_method="spawn")
    return directory


@pytest.fixture(scope="module")
def layout_results(spawned_directory) -> list[dict]:
    return [torch.load(spawned_directory / f"layouts_rank{rank}.pt", weights_only=False) for rank in range(WORLD)]


def test_the_cli_writes_its_report_under_ddp(spawned_directory) -> None:
    """Every process evaluated the splits and reached the collective log_dir; rank 0 wrote one report."""
    (summary_path,) = (spawned_directory / "runs" / "digits_weight_decay").glob("version_*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["global_step"] == 4 and summary["hypersteps_taken"] == 1
    assert {"train_loss", "validation_loss", "test_loss"} <= set(summary)


def assert_same_on_both(first: dict[str, Tensor], second: dict[str, Tensor]) -> None:
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), f"{name} differs across processes"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_trains_under_ddp_with_and_without_the_callback(layout: str, layout_results) -> None:
    initial = LayoutModule(layout).state_dict()
    for mode in MODES:
        first, second = (per_rank[(layout, mode)] for per_rank in layout_results)
        assert first["step"] == second["step"] == STEPS
        assert_same_on_both(first["state"], second["state"])
        moved = {n for n, v in first["state"].items() if v.shape == initial[n].shape and not torch.equal(v, initial[n])}
        assert "net.weight" in moved
        decays = [name for name in first["state"] if "decay" in name]
        if mode is None:
            assert first["taken"] is None
        else:
            assert first["taken"] == second["taken"] == STEPS // EVERY
            # every hyperparameter moved from rank 0's start, identically on both processes
            torch.manual_seed(0)
            start = LayoutModule(layout).state_dict()
            assert all(not torch.equal(first["state"][name], start[name]) for name in decays)


@pytest.mark.parametrize("mode", MODES[1:])
def test_a_nan_loss_on_one_process_skips_the_hyperstep_on_all(mode: str, layout_results) -> None:
    first, second = (per_rank[("nan_on_rank_one", mode)] for per_rank in layout_results)
    assert first["applied"] == second["applied"] == [False, True, True]
    assert_same_on_both(first["state"], second["state"])
    assert all(bool(torch.isfinite(value).all()) for value in first["state"].values())


def test_without_the_callback_every_process_keeps_rank_zeros_hyperparameters(layout_results) -> None:
    torch.manual_seed(0)
    start = LayoutModule("several").state_dict()
    for per_rank in layout_results:
        state = per_rank[("several", None)]["state"]
        for name in ("log_decay", "regularizer.log_decay", "log_bias_decay"):
            assert torch.equal(state[name], start[name])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_ignore_list_names_each_hyperparameter_as_both_ddp_spellings(layout: str) -> None:
    model = LayoutModule(layout)
    ignored = set(model._ddp_params_and_buffers_to_ignore)
    for module_name, submodule in model.named_modules():
        for name, _ in submodule.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            should = "decay" in name or full == "spare"
            assert (f"{module_name}.{name}" in ignored) == should  # the reducer's spelling
            assert (full in ignored) == should  # named_parameters()' spelling


def test_a_user_ignore_list_is_extended_not_overwritten() -> None:
    model = LayoutModule("user_ignore_list")
    assert model._ddp_params_and_buffers_to_ignore[0] == "spare"
    assert set(model._ddp_params_and_buffers_to_ignore) == {"spare", ".spare", "log_decay", ".log_decay"}
    assert ddp_spellings(model, [model.net.weight]) == ["net.weight"]


# --- the README's own example, under ddp_spawn --------------------------------------------------------------------


def readme_module(directory: Path) -> type:
    """The README's Classifier, written to an importable file so that spawned processes can unpickle it."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "class Classifier" in b]
    (directory / "readme_example.py").write_text(block.split("\ncallback = ")[0])
    sys.path.insert(0, str(directory))
    try:
        import readme_example

        return readme_example.Classifier
    finally:
        sys.path.remove(str(directory))


class FinalStateSaver(Callback):
    def __init__(self, directory: str, tag: str) -> None:
        self.directory, self.tag = directory, tag

    def on_train_end(self, trainer, pl_module) -> None:
        torch.save(pl_module.state_dict(), f"{self.directory}/{self.tag}_rank{trainer.global_rank}.pt")


def test_the_readme_example_trains_under_ddp_spawn(tmp_path, monkeypatch) -> None:
    """The issue's report: the README module with the callback failed at its second step under ddp_spawn."""
    monkeypatch.syspath_prepend(str(tmp_path))
    classifier = readme_module(tmp_path)
    L.seed_everything(0, verbose=False)
    hyper, saver = callback_for("hvp"), FinalStateSaver(str(tmp_path), "readme")
    trainer = make_trainer([*hyper, saver], max_steps=STEPS, strategy="ddp_spawn", devices=WORLD, deterministic=False)
    trainer.fit(classifier(), DigitsDataModule(batch_size=32))
    states = [torch.load(tmp_path / f"readme_rank{rank}.pt") for rank in range(WORLD)]
    assert_same_on_both(*states)
    assert not torch.equal(states[0]["log_decay"], torch.tensor(-4.0))


@pytest.mark.parametrize("mode", MODES)
def test_the_readme_example_trains_under_ddp_in_each_mode(mode: str | None, layout_results) -> None:
    first, second = (per_rank[("readme", mode)] for per_rank in layout_results)
    assert first["step"] == second["step"] == STEPS
    assert_same_on_both(first["state"], second["state"])
    tuned = not torch.equal(first["state"]["log_decay"], torch.tensor(-4.0))
    assert tuned == (mode is not None)
