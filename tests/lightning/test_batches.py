"""HyperBatches: hyper and fresh training batches reach the module in its device and precision, and replay."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_hypergrad import HypergradientCallback
from lightning_hypergrad.lightning.batches import HyperBatches
from lightning_hypergrad.solvers import Identity, Neumann
from tests.fixtures.make_callback_checkpoint import TinyRegression, loaders
from tests.lightning_helpers import RecordingCallback, make_trainer


class DtypeSpy(HypergradientCallback):
    """Records the dtype of every batch a hyperstep hands to the module."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.dtypes: list[tuple[torch.dtype, torch.dtype, torch.dtype]] = []

    def compute_hypergradient(self, trainer, module, train_batch, validation_batch):
        self.dtypes.append((train_batch[0].dtype, validation_batch[0].dtype, module.log_decay.dtype))
        return super().compute_hypergradient(trainer, module, train_batch, validation_batch)


@pytest.mark.parametrize(
    ("precision", "dtype", "solver"),
    [("64-true", torch.float64, Neumann(iterations=4, alpha=0.1)), ("bf16-true", torch.bfloat16, Identity(0.1))],
)
@pytest.mark.parametrize("train_batch", ["current", "fresh"])
def test_true_precision_fits_take_hypersteps_on_converted_batches(precision, dtype, solver, train_batch) -> None:
    L.seed_everything(0, verbose=False)
    callback = DtypeSpy(solver, every_n_steps=2, train_batch=train_batch)
    model = TinyRegression()
    start = model.log_decay.detach().clone()
    make_trainer([callback], max_epochs=2, precision=precision).fit(model, *loaders())
    assert callback.taken == 4 and callback.skipped == 0
    assert set(callback.dtypes) == {(dtype, dtype, dtype)}
    assert torch.isfinite(model.log_decay).all() and model.log_decay.dtype == dtype
    assert not torch.equal(model.log_decay.double(), start.double())


class WithValidationLoader(TinyRegression):
    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.arange(10.0)), batch_size=3)


def test_positions_survive_a_state_dict_round_trip_before_and_after_start() -> None:
    model = WithValidationLoader()
    trainer = make_trainer()
    trainer.strategy.connect(model)  # batch_to_device needs the module's device
    batches = HyperBatches(fresh_train=False)
    batches.load_state_dict({"hyper_batches_drawn": 7})
    assert batches.state_dict() == {"hyper_batches_drawn": 7, "train_batches_drawn": 0}
    batches.start(trainer, model)
    # 4 batches per pass (3, 3, 3, 1): 7 drawn means the next is the pass-1 batch at index 3, i.e. [9.0].
    assert torch.equal(batches.next_hyper(trainer)[0], torch.tensor([9.0]))
    assert batches.state_dict()["hyper_batches_drawn"] == 8


def test_drawing_before_start_says_so() -> None:
    with pytest.raises(RuntimeError, match="before start"):
        HyperBatches(fresh_train=False).next_hyper(make_trainer())


class IndexedRegression(TinyRegression):
    """TinyRegression on ``(inputs, targets, index)`` batches; records which examples each weight step used."""

    def __init__(self) -> None:
        super().__init__()
        self.weight_batches: list[tuple[int, list[int]]] = []

    def training_step(self, batch, batch_idx):
        self.weight_batches.append((self.current_epoch, batch[2].tolist()))
        return super().training_step(batch, batch_idx)

    def training_loss(self, batch):
        return super().training_loss(batch[:2])

    def validation_loss(self, batch):
        return super().validation_loss(batch[:2])


def indexed_loaders(**workers) -> tuple[DataLoader, DataLoader]:
    """The fixture's data, 64 training examples in batches of 16 and 32 validation ones in batches of 8, with
    each example's index (validation: 64 on)."""
    (train_inputs, train_targets), (val_inputs, val_targets) = (loader.dataset.tensors for loader in loaders())
    train = TensorDataset(train_inputs, train_targets, torch.arange(64))
    validation = TensorDataset(val_inputs, val_targets, torch.arange(64, 96))
    return DataLoader(train, batch_size=16, **workers), DataLoader(validation, batch_size=8, **workers)


@pytest.mark.parametrize("train_batch", ["current", "fresh"])
def test_hyper_batches_do_not_share_the_fit_loops_persistent_workers(train_batch: str) -> None:
    L.seed_everything(0, verbose=False)
    model, callback = IndexedRegression(), RecordingCallback(Identity(0.1), every_n_steps=2, train_batch=train_batch)
    trainer = make_trainer([callback], max_epochs=3, num_sanity_val_steps=2)  # the sanity check starts val workers
    trainer.fit(model, *indexed_loaders(num_workers=2, persistent_workers=True))
    # Each epoch of the weights sees every training example once, in the loader's order, and the fit runs to its end.
    assert trainer.global_step == 12
    assert model.weight_batches == [(epoch, list(range(16 * b, 16 * b + 16))) for epoch in range(3) for b in range(4)]
    # The hypersteps (at steps 2, 4, ..., 12) walk through the validation loader in order, on their own; their
    # training batch is the fresh stream's next one (also in order), or the weights' batch of that step.
    hyper = [record["validation_batch"][2].tolist() for record in callback.records]
    assert hyper == [list(range(64 + 8 * (k % 4), 72 + 8 * (k % 4))) for k in range(6)]
    train = [record["train_batch"][2].tolist() for record in callback.records]
    position = [k % 4 if train_batch == "fresh" else (2 * k + 1) % 4 for k in range(6)]
    assert train == [list(range(16 * b, 16 + 16 * b)) for b in position]
