"""The held-out guard: it sees the tuned loss fall while the held-out loss rises, warns, and restores the best state."""

from __future__ import annotations

import functools
import json
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_hypergrad import BilevelLightningModule, HeldOutGuard, HypergradientCallback, HypergradientWarning
from lightning_hypergrad.data import DigitsDataModule, TabularDataModule
from lightning_hypergrad.report import RunReport
from lightning_hypergrad.solvers import Exact
from tests.lightning_helpers import make_trainer

STEPS_PER_EPOCH = 4


class Follower(BilevelLightningModule):
    """``L_T = ½(w − λ)²``: the weight follows λ; ``L_V = ½(w − t)²`` for the batch's targets t.

    The hyper loader's targets are +1 and the held-out loader's −1, so every hyperstep that lowers the tuned loss
    (λ and w towards +1) raises the held-out loss: validation keeps falling while held-out rises.
    """

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.target_of_training = nn.Parameter(torch.zeros((), dtype=torch.float64))  # λ

    def training_loss(self, batch: Any) -> Tensor:
        return 0.5 * (self.weight - self.target_of_training) ** 2 + 0.0 * batch[0].sum()

    def validation_loss(self, batch: Any) -> Tensor:
        (targets,) = batch
        return 0.5 * (self.weight - targets.to(self.weight.dtype)).pow(2).mean()

    def hyperparameters(self) -> list[nn.Parameter]:
        return [self.target_of_training]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.weight_parameters(), lr=0.5)


class Opposed(L.LightningDataModule):
    """Training batches carry nothing; the tuned targets are +1, the held-out targets −1."""

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.zeros(STEPS_PER_EPOCH, dtype=torch.float64)), batch_size=1)

    def hyper_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.ones(4, dtype=torch.float64)), batch_size=2)

    def held_out_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(-torch.ones(3, dtype=torch.float64)), batch_size=2)


def tuned(
    guard: HeldOutGuard, reuse_training_graph: bool | str = "auto", **trainer: Any
) -> tuple[Follower, HypergradientCallback, L.Trainer]:
    module = Follower()
    sgd = functools.partial(torch.optim.SGD, lr=0.5)
    callback = HypergradientCallback(
        Exact(), hyper_optimizer=sgd, every_n_steps=1, reuse_training_graph=reuse_training_graph
    )
    fit = make_trainer([callback, guard], limit_val_batches=0, **trainer)
    fit.fit(module, Opposed())
    return module, callback, fit


def test_the_guard_restores_the_hyperparameters_that_were_best_on_held_out_data() -> None:
    guard = HeldOutGuard(every_n_hypersteps=1, patience=2)
    with pytest.warns(HypergradientWarning, match=r"held-out loss rose .* while the tuned validation loss fell"):
        module, callback, _ = tuned(guard, max_epochs=1)
    assert callback.taken == STEPS_PER_EPOCH
    tuned_losses = [entry["tuned_loss"] for entry in guard.evaluations]
    held_out_losses = [entry["held_out_loss"] for entry in guard.evaluations]
    # Validation keeps falling, held-out keeps rising (the first hyperstep moves λ, the next weight step w).
    assert all(later <= earlier for earlier, later in zip(tuned_losses, tuned_losses[1:]))
    assert all(later >= earlier for earlier, later in zip(held_out_losses, held_out_losses[1:]))
    assert tuned_losses[-1] < 0.1 < 0.5 == tuned_losses[0] and held_out_losses[-1] > 1.0
    assert guard.best["step"] == 0.0 and guard.best["held_out_loss"] == pytest.approx(0.5, rel=1e-15)
    assert guard.restored and float(module.target_of_training) == 0.0  # λ back where it was best: the start
    assert float(module.weight) > 0.4  # the weights were not restored: they trained on the later λ
    assert guard.warned


def test_restoring_the_weights_too_gives_back_the_best_state_exactly() -> None:
    guard = HeldOutGuard(every_n_hypersteps=1, restore="hyperparameters_and_weights", patience=100)
    module, _, _ = tuned(guard, max_epochs=1)
    assert float(module.target_of_training) == 0.0 and float(module.weight) == 0.0
    assert guard.final["held_out_loss"] == pytest.approx(0.5, rel=1e-15)
    assert not guard.warned  # patience 100: never enough evaluations to compare


def test_restore_none_only_measures() -> None:
    guard = HeldOutGuard(every_n_hypersteps=2, restore="none", patience=100)
    module, _, _ = tuned(guard, max_epochs=1)
    assert not guard.restored and float(module.target_of_training) > 0.5
    # The start, then every 2 hypersteps; the end adds none at the step of the last one.
    assert [entry["hypersteps"] for entry in guard.evaluations] == [0.0, 2.0, 4.0]


def test_the_report_and_summary_carry_the_held_out_gap(tmp_path) -> None:
    guard = HeldOutGuard(every_n_hypersteps=1, patience=100)
    sgd = functools.partial(torch.optim.SGD, lr=0.5)
    trainer = make_trainer(
        [HypergradientCallback(Exact(), hyper_optimizer=sgd, every_n_steps=1), guard, RunReport(plots=False)],
        max_epochs=1,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(Follower(), Opposed())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["held_out_loss"] == pytest.approx(guard.final["held_out_loss"], rel=1e-15)
    assert summary["held_out_tuned_loss"] == pytest.approx(guard.final["tuned_loss"], rel=1e-15)
    assert summary["held_out_gap"] == pytest.approx(summary["held_out_loss"] - summary["held_out_tuned_loss"])
    assert summary["held_out_restored"] is True and summary["held_out_best_step"] == 0


def test_the_guard_s_state_survives_a_checkpoint(tmp_path) -> None:
    # Hypersteps after their weight steps: taken inside them, w and λ land on the target together at step 4 and the
    # (true) zero hypergradient is warned about from then on.
    straight_guard = HeldOutGuard(every_n_hypersteps=1, patience=100)
    straight, _, _ = tuned(straight_guard, reuse_training_graph=False, max_epochs=2)

    saving = ModelCheckpoint(dirpath=tmp_path, save_on_train_epoch_end=True, save_last=True)
    first_guard = HeldOutGuard(every_n_hypersteps=1, patience=100)
    module = Follower()
    sgd = functools.partial(torch.optim.SGD, lr=0.5)
    trainer = make_trainer(
        [
            HypergradientCallback(Exact(), hyper_optimizer=sgd, every_n_steps=1, reuse_training_graph=False),
            first_guard,
            saving,
        ],
        max_epochs=1,
        limit_val_batches=0,
        enable_checkpointing=True,
    )
    trainer.fit(module, Opposed())
    resumed_guard = HeldOutGuard(every_n_hypersteps=1, patience=100)
    resumed = Follower()
    trainer = make_trainer(
        [
            HypergradientCallback(Exact(), hyper_optimizer=sgd, every_n_steps=1, reuse_training_graph=False),
            resumed_guard,
        ],
        max_epochs=2,
        limit_val_batches=0,
    )
    trainer.fit(resumed, Opposed(), ckpt_path=str(tmp_path / "last.ckpt"))
    # The first run's end-of-training evaluation came after its checkpoint, so it is not in the resumed history.
    assert resumed_guard.evaluations == straight_guard.evaluations
    assert resumed_guard.best["step"] == straight_guard.best["step"]
    assert float(resumed.target_of_training) == float(straight.target_of_training)
    assert float(resumed.weight) == float(straight.weight)


def test_the_guard_needs_held_out_data_and_a_hypergradient_callback() -> None:
    with pytest.raises(ValueError, match=r"HeldOutGuard needs held-out data: define held_out_dataloader\(\)"):
        make_trainer([HypergradientCallback(Exact()), HeldOutGuard()], max_steps=1).fit(Follower(), plain_data())
    with pytest.raises(ValueError, match="HeldOutGuard guards the hypersteps of a HypergradientCallback"):
        make_trainer([HeldOutGuard()], max_steps=1, limit_val_batches=0).fit(Follower(), Opposed())


def plain_data() -> L.LightningDataModule:
    class Plain(Opposed):
        held_out_dataloader = None  # type: ignore[assignment]

    return Plain()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"every_n_hypersteps": 0}, r"every_n_hypersteps must be an integer >= 1"),
        ({"restore": "weights"}, r"HeldOutGuard\(restore='weights'\): allowed values are"),
        ({"patience": 0}, r"patience must be an integer >= 1"),
    ],
)
def test_bad_arguments_are_refused(arguments, message) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        HeldOutGuard(**arguments)


@pytest.mark.parametrize("datamodule", [DigitsDataModule, TabularDataModule])
def test_the_bundled_datamodules_hold_part_of_the_validation_split_out(datamodule) -> None:
    whole, split = datamodule(), datamodule(held_out_fraction=0.25)
    val_size = len(whole.split.val_targets)
    held_out = round(0.25 * val_size)
    assert len(split.split.val_targets) == val_size - held_out and len(split.held_out[1]) == held_out
    assert torch.equal(torch.cat([split.split.val_inputs, split.held_out[0]]), whole.split.val_inputs)
    assert sum(len(batch[0]) for batch in split.held_out_dataloader()) == held_out
    assert sum(len(batch[0]) for batch in split.hyper_dataloader()) == val_size - held_out
    with pytest.raises(ValueError, match=r"held_out_fraction=1.5\): held_out_fraction must lie strictly between"):
        datamodule(held_out_fraction=1.5)
