"""Warm starts and solver state follow the weights by name: unfreezing a backbone mid-fit, or resuming from a
checkpoint written before it, starts the next solve cold instead of pairing yesterday's vectors by position."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import BackboneFinetuning
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_hypergrad import BilevelLightningModule, HypergradientCallback
from lightning_hypergrad.lightning.solver_memory import SolverMemory
from lightning_hypergrad.solvers import ConjugateGradient, Neumann
from tests.fixtures.make_callback_checkpoint import CHECKPOINT, TinyRegression, loaders, make_callback
from tests.lightning_helpers import make_trainer


class FinetunedRegression(BilevelLightningModule):
    """A 4-4 tanh backbone under a 4-4 linear head with a tuned weight decay. Backbone and head have the same
    shapes, so vectors paired with the weights by position would even pass a shape check."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
        self.head = nn.Linear(4, 4)
        self.log_decay = nn.Parameter(torch.tensor(-2.0))

    def training_loss(self, batch: Any) -> Tensor:
        inputs, targets = batch
        decay = sum(weight.pow(2).sum() for weight in self.weight_parameters())
        return nn.functional.mse_loss(self.head(self.backbone(inputs)), targets) + self.log_decay.exp() * decay

    def validation_loss(self, batch: Any) -> Tensor:
        inputs, targets = batch
        return nn.functional.mse_loss(self.head(self.backbone(inputs)), targets)

    def hyperparameters(self) -> list[nn.Parameter]:
        return [self.log_decay]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.weight_parameters(), lr=0.1)


class WatchedCG(ConjugateGradient):
    """Preconditioned CG that notes, per solve, how many parts b and the warm start had, and its basis after."""

    def __init__(self) -> None:
        super().__init__(iterations=6, preconditioner="spectral", preconditioner_rank=2, preconditioner_steps=4)
        self.seen: list[tuple[int, int | None, int]] = []

    def solve(self, hvp, b, initial=None):
        parts, start = len(b), None if initial is None else len(initial)
        result = super().solve(hvp, b, initial)
        self.seen.append((parts, start, len(self.state_dict()["spectral"]["basis"])))
        return result


def data() -> tuple[DataLoader, DataLoader]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(96, 4, generator=generator)
    targets = torch.tanh(inputs @ torch.randn(4, 4, generator=generator)) + 0.1 * torch.randn(
        96, 4, generator=generator
    )
    return (
        DataLoader(TensorDataset(inputs[:64], targets[:64]), batch_size=16),  # 4 weight steps per epoch
        DataLoader(TensorDataset(inputs[64:], targets[64:]), batch_size=8),
    )


def finetune(
    max_epochs: int, warm_start: bool = True, ckpt_path: Path | None = None
) -> tuple[FinetunedRegression, HypergradientCallback, L.Trainer]:
    """Fit with the backbone frozen for epoch 0 and unfrozen by BackboneFinetuning at epoch 1 (before step 5)."""
    L.seed_everything(0, verbose=False)
    model = FinetunedRegression()
    callback = HypergradientCallback(WatchedCG(), every_n_steps=2, warm_start=warm_start)
    trainer = make_trainer(
        [BackboneFinetuning(unfreeze_backbone_at_epoch=1), callback], max_epochs=max_epochs, check_val_every_n_epoch=100
    )
    trainer.fit(model, *data(), ckpt_path=ckpt_path)
    return model, callback, trainer


def notes(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The callback's info lines: one per cold start forced by a change of weights."""
    return [record.getMessage() for record in caplog.records if record.getMessage().startswith("HypergradientCallback")]


@pytest.mark.parametrize("warm_start", [True, False], ids=["warm-start", "cold-starts"])
def test_unfreezing_a_backbone_mid_fit_starts_the_next_solve_cold(warm_start: bool, caplog) -> None:
    caplog.set_level(logging.INFO)
    model, callback, trainer = finetune(2, warm_start)
    assert trainer.global_step == 8 and callback.taken == 4 and callback.skipped == 0  # hypersteps 2, 4, 6, 8
    assert all(parameter.requires_grad for parameter in model.backbone.parameters())
    # b grows from the head's 2 parts to 4 at step 6; the warm start and the preconditioner follow by name.
    starts = [None, 2, None, 4] if warm_start else [None] * 4
    assert callback.solver.seen == [(2, starts[0], 2), (2, starts[1], 2), (4, starts[2], 4), (4, starts[3], 4)]
    (note,) = notes(caplog)
    assert "trainable weights changed before the hyperstep at step 6" in note
    assert "now trainable: backbone.0.weight, backbone.0.bias" in note
    if warm_start:
        assert list(callback.solver_memory.solution) == [
            "backbone.0.weight",
            "backbone.0.bias",
            "head.weight",
            "head.bias",
        ]


# CG on this MLP stops at negative curvature on most solves, which the callback rightly warns about; not the subject.
@pytest.mark.filterwarnings("ignore:The solver stopped at negative curvature")
def test_a_checkpoint_written_before_the_unfreezing_resumes_exactly(tmp_path, caplog) -> None:
    torch.set_num_threads(1)
    straight_model, straight, _ = finetune(3)
    _, first_epoch, trainer = finetune(1)
    path = tmp_path / "frozen_backbone.ckpt"
    trainer.save_checkpoint(path)
    assert set(first_epoch.state_dict()["warm_start_solution"]) == {"head.weight", "head.bias"}
    caplog.set_level(logging.INFO)
    caplog.clear()
    resumed_model, resumed, _ = finetune(3, ckpt_path=path)
    # The restored warm start and basis belong to the head alone: the first solve after the unfreezing is cold.
    assert [seen[:2] for seen in resumed.solver.seen] == [(4, None), (4, 4), (4, 4), (4, 4)]  # steps 6 to 12
    assert [seen[2] for seen in resumed.solver.seen] == [4] * 4
    (note,) = notes(caplog)
    assert "at step 6 (now trainable: backbone.0.weight, backbone.0.bias)" in note
    assert resumed.taken == straight.taken == 6
    for (name, expected), actual in zip(straight_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(actual, expected), f"{name} differs after resume"
    expected_start, resumed_start = (c.state_dict()["warm_start_solution"] for c in (straight, resumed))
    assert expected_start.keys() == resumed_start.keys()
    assert all(torch.equal(resumed_start[name], expected_start[name]) for name in expected_start)


class PartlyFrozenRegression(TinyRegression):
    """The committed fixture's module with its first layer frozen (its optimizer still lists it, so the
    fixture's optimizer state loads)."""

    def __init__(self) -> None:
        super().__init__()
        self.network[0].requires_grad_(False)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.network.parameters(), lr=0.1)


def test_a_positional_warm_start_from_an_older_checkpoint_is_dropped_when_it_no_longer_fits(caplog) -> None:
    # The fixture's warm start is a list of 4 parts (both layers); today only the second layer trains.
    saved = torch.load(CHECKPOINT, weights_only=False)["callbacks"]
    (state,) = [value for key, value in saved.items() if "HypergradientCallback" in key]
    assert [tuple(part.shape) for part in state["warm_start_solution"]] == [(8, 4), (8,), (2, 8), (2,)]
    caplog.set_level(logging.INFO)
    L.seed_everything(0, verbose=False)
    callback = make_callback()
    make_trainer([callback], max_epochs=4, check_val_every_n_epoch=100).fit(
        PartlyFrozenRegression(), *loaders(), ckpt_path=CHECKPOINT
    )
    assert callback.taken == 7 and callback.skipped == 0
    (note,) = notes(caplog)
    assert "warm start from an older checkpoint (4 parts, paired by position) does not fit the 2" in note
    assert list(callback.solver_memory.solution) == ["network.2.weight", "network.2.bias"]


def test_vectors_of_other_weights_of_the_same_shapes_are_never_used() -> None:
    head, backbone = nn.Linear(4, 4), nn.Linear(4, 4)
    memory = SolverMemory()
    solver = Neumann(lanczos_every=10)
    memory.start(solver, [("head.weight", head.weight), ("head.bias", head.bias)], step=2, warm_start=True)
    memory.keep([torch.ones(4, 4), torch.ones(4)])
    solver.load_state_dict({"largest_eigenvalue": 3.0})  # as if estimated on the head's Hessian
    swapped = [("backbone.weight", backbone.weight), ("backbone.bias", backbone.bias)]  # same shapes, other names
    assert memory.start(solver, swapped, step=4, warm_start=True) is None
    assert solver.state_dict()["largest_eigenvalue"] is None  # the next solve estimates λ_max afresh
    memory.keep([torch.zeros(4, 4), torch.zeros(4)])
    (weight, bias) = memory.start(solver, swapped, step=6, warm_start=True)
    assert torch.equal(weight, torch.zeros(4, 4)) and torch.equal(bias, torch.zeros(4))


def test_a_positional_warm_start_that_still_fits_is_used() -> None:
    layer = nn.Linear(4, 2)
    memory = SolverMemory()
    memory.load_state_dict({"warm_start_solution": [torch.full((2, 4), 3.0), torch.full((2,), 4.0)]})  # no layout
    named = [("weight", layer.weight), ("bias", layer.bias)]
    weight, bias = memory.start(WatchedCG(), named, step=1, warm_start=True)
    assert torch.equal(weight, torch.full((2, 4), 3.0)) and torch.equal(bias, torch.full((2,), 4.0))
    assert memory.start(WatchedCG(), named[::-1], step=2, warm_start=True) is None  # reordered: a new layout
