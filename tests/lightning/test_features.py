"""Lightning features real projects use with the plugin: schedulers, several validation loaders, weight averaging,
iterable datasets, limited validation, and the hyper optimizer's learning rate in the logs."""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint, StochasticWeightAveraging
from lightning.pytorch.cli import ReduceLROnPlateau as CLIReduceLROnPlateau
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.data import DataLoader

from lightning_hypergrad import HypergradientCallback
from lightning_hypergrad.solvers import Identity, Neumann
from tests.feature_helpers import DecayedRegression, StreamOfBatches, loader, vectors
from tests.lightning_helpers import RecordingCallback, make_trainer


def linear() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 1))


def fit(model, callbacks, train=None, val: Any = None, **options) -> L.Trainer:
    L.seed_everything(0, verbose=False)
    trainer = make_trainer(callbacks, **{"max_epochs": 2, **options})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few batches, no workers, dropped scheduler keys: beside the point here
        trainer.fit(
            model,
            train if train is not None else loader(vectors(64, seed=1)),
            val if val is not None else loader(vectors(32, 2)),
        )
    return trainer


# --- ReduceLROnPlateau on the weights' optimizer ------------------------------------------------------------


def plateau_forms(optimizer: torch.optim.Optimizer) -> dict[str, tuple[Any, str]]:
    """Every form of configure_optimizers output Lightning accepts, with the metric each one monitors."""
    plateau = ReduceLROnPlateau(optimizer, patience=0)
    return {
        "lists": (([optimizer], [plateau]), "validation_loss"),
        "dict": ({"optimizer": optimizer, "lr_scheduler": plateau}, "validation_loss"),
        "dict, top-level monitor": (
            {"optimizer": optimizer, "lr_scheduler": plateau, "monitor": "twice_loss"},
            "twice_loss",
        ),
        "scheduler dict with monitor": (
            {"optimizer": optimizer, "lr_scheduler": {"scheduler": plateau, "monitor": "twice_loss"}},
            "twice_loss",
        ),
        "list of dicts": (
            [{"optimizer": optimizer, "lr_scheduler": {"scheduler": plateau, "monitor": "twice_loss"}}],
            "twice_loss",
        ),
        "LightningCLI's scheduler": (
            {"optimizer": optimizer, "lr_scheduler": CLIReduceLROnPlateau(optimizer, monitor="twice_loss", patience=0)},
            "twice_loss",
        ),
    }


class PlateauRegression(DecayedRegression):
    def __init__(self, form: str) -> None:
        super().__init__(linear())
        self.form = form
        self.validation_losses: list[float] = []

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.weight_parameters(), lr=0.05)
        configuration, self.monitor = plateau_forms(optimizer)[self.form]
        return configuration

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        loss = super().validation_step(batch, batch_idx, dataloader_idx)
        self.log("twice_loss", 2 * loss)
        return loss

    def on_validation_epoch_end(self) -> None:
        self.validation_losses.append(float(self.trainer.callback_metrics["validation_loss"]))


@pytest.mark.parametrize("form", list(plateau_forms(torch.optim.SGD([nn.Parameter(torch.zeros(1))]))))
def test_reduce_on_plateau_steps_with_its_monitored_metric_in_every_form(form: str) -> None:
    model = PlateauRegression(form)
    trainer = fit(model, [HypergradientCallback(Identity(), every_n_steps=2)], max_epochs=3)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    factor = 2.0 if model.monitor == "twice_loss" else 1.0
    assert scheduler.last_epoch == 3
    assert scheduler.best == pytest.approx(factor * min(model.validation_losses), rel=1e-6)


def test_an_unlogged_plateau_monitor_is_named() -> None:
    class Unlogged(DecayedRegression):
        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.SGD(self.weight_parameters(), lr=0.05)
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": ReduceLROnPlateau(optimizer), "monitor": "f1"},
            }

    with pytest.raises(KeyError, match="ReduceLROnPlateau monitors 'f1', which was not logged"):
        fit(Unlogged(linear()), [])


# --- several validation dataloaders ---------------------------------------------------------------------------


@pytest.mark.parametrize(("choice", "as_dict"), [(0, False), (1, False), ("noisy", True), (0, True)])
def test_hypersteps_draw_from_the_chosen_validation_loader(choice: int | str, as_dict: bool, tmp_path) -> None:
    clean, noisy = loader(vectors(32, seed=2)), loader(vectors(16, seed=3))
    loaders = {"clean": clean, "noisy": noisy} if as_dict else [clean, noisy]
    callback = RecordingCallback(Identity(), every_n_steps=2, validation_dataloader=choice)
    checkpoint = ModelCheckpoint(tmp_path, monitor="validation_loss")
    trainer = fit(DecayedRegression(linear()), [callback, checkpoint], val=loaders, enable_checkpointing=True)
    expected = noisy if choice in (1, "noisy") else clean
    first_batch = next(iter(expected))[0]
    assert callback.taken == 4
    assert torch.equal(callback.records[0]["validation_batch"][0], first_batch)
    other = "validation_loss/noisy" if as_dict else "validation_loss/dataloader_idx_1"
    assert {"validation_loss", other} <= set(trainer.callback_metrics)
    assert checkpoint.best_model_score is not None


class ValidationStepOverride(DecayedRegression):
    """A user's ``validation_step`` that takes the loader index but calls ``super()`` without it."""

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return super().validation_step(batch, batch_idx)


def test_a_validation_step_override_without_the_loader_index_logs_each_loader_under_its_name() -> None:
    clean, noisy = vectors(32, seed=2), vectors(16, seed=3)
    model = ValidationStepOverride(linear())
    trainer = fit(model, [HypergradientCallback(Identity(), every_n_steps=2)], val=[loader(clean), loader(noisy)])
    with torch.no_grad():  # batches of 16: the logged means are the losses over each whole set
        expected = [float(model.validation_loss(dataset.tensors)) for dataset in (clean, noisy)]
    logged = [float(trainer.callback_metrics[name]) for name in ("validation_loss", "validation_loss/dataloader_idx_1")]
    assert logged == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("loaders", "choice", "message"),
    [
        ("list", 2, r"there are 2 validation dataloaders \(a list\)"),
        ("list", "noisy", r"there are 2 validation dataloaders \(a list\)"),
        ("dict", "typo", r"a dict with keys \['clean', 'noisy'\]"),
        ("single", 1, "there is a single validation dataloader"),
    ],
)
def test_a_validation_loader_that_is_not_there_is_refused(loaders: str, choice: int | str, message: str) -> None:
    clean, noisy = loader(vectors(32, seed=2)), loader(vectors(16, seed=3))
    val = {"list": [clean, noisy], "dict": {"clean": clean, "noisy": noisy}, "single": clean}[loaders]
    with pytest.raises(ValueError, match=message):
        fit(DecayedRegression(linear()), [HypergradientCallback(validation_dataloader=choice)], val=val)


# --- weight averaging ------------------------------------------------------------------------------------------


class NormalizedRegression(DecayedRegression):
    def __init__(self) -> None:
        super().__init__(nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 1)))


@pytest.mark.parametrize("averaging", ["swa", "ema"])
def test_weight_averaging_leaves_the_tuned_hyperparameters_alone(averaging: str) -> None:
    model = NormalizedRegression()
    callback = HypergradientCallback(Identity(), hyper_optimizer=lambda p: torch.optim.SGD(p, lr=0.5), every_n_steps=1)
    average = StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=1) if averaging == "swa" else EMAWeightAveraging()
    trainer = fit(model, [callback, average], max_epochs=3)
    tuned = callback.history[-1]["hyperparameters"]["log_decay"]["value"]
    assert callback.taken == 12 and tuned != pytest.approx(-2.0, abs=1e-3)
    assert float(model.log_decay.detach()) == pytest.approx(tuned, abs=1e-6)
    # SWA's extra epoch only recomputes BatchNorm statistics: no weight step, no hyperstep.
    assert trainer.global_step == 12


# --- data options ---------------------------------------------------------------------------------------------


def test_an_iterable_dataset_applies_the_last_partial_accumulation_window_of_each_epoch() -> None:
    model = DecayedRegression(linear(), accumulate_grad_batches=4)
    stream = DataLoader(StreamOfBatches(vectors(80, seed=1), batch_size=8), batch_size=None)  # 10 batches a pass
    trainer = fit(model, [HypergradientCallback(Identity(), every_n_steps=2)], train=stream, max_epochs=3)
    assert trainer.global_step == 3 * 3  # windows of 4 + 4 + 2 batches per epoch


def test_val_dataloaders_passed_to_fit_serve_hypersteps_when_validation_is_off() -> None:
    callback = HypergradientCallback(Identity(), every_n_steps=2)
    fit(DecayedRegression(linear()), [callback], limit_val_batches=0)
    assert callback.taken == 4


def test_hypersteps_cycle_the_whole_validation_split_whatever_limit_val_batches_says() -> None:
    callback = RecordingCallback(Identity(), every_n_steps=1)
    validation = loader(vectors(32, seed=2), batch_size=8)  # 4 batches; validation looks at 1
    fit(DecayedRegression(linear()), [callback], val=validation, limit_val_batches=1, max_epochs=1)
    drawn = [record["validation_batch"][0] for record in callback.records[:4]]
    assert all(torch.equal(batch, expected[0]) for batch, expected in zip(drawn, validation))


def test_the_hyper_learning_rate_is_logged_every_hyperstep(tmp_path) -> None:
    import csv

    callback = HypergradientCallback(
        Neumann(iterations=2),
        hyper_lr_scheduler=lambda optimizer: torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5),
        every_n_steps=2,
    )
    logger = CSVLogger(tmp_path, name="run")
    fit(DecayedRegression(linear()), [callback], logger=logger, log_every_n_steps=1)
    rows = list(csv.DictReader(open(logger.experiment.metrics_file_path)))
    rates = [float(row["hyper/learning_rate"]) for row in rows if row.get("hyper/learning_rate")]
    assert rates == pytest.approx([1e-2 * 0.5**k for k in range(4)], rel=1e-6)
