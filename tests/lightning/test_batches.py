"""HyperBatches: hyper and fresh training batches reach the module in its device and precision, and replay."""

from __future__ import annotations

import multiprocessing
import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
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
    assert batches.state_dict() == {"hyper_batches_drawn": 7, "train_batches_drawn": 0, "batches_loaded_epoch": None}
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
    workers_before = set(multiprocessing.active_children())
    trainer.fit(model, *indexed_loaders(num_workers=2, persistent_workers=True))
    assert set(multiprocessing.active_children()) <= workers_before  # the hyper streams' workers ended with the fit
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


class LoadersPerEpoch(IndexedRegression):
    """Loaders that change with the epoch they are built in: each example's index is offset by 1000 per epoch."""

    def train_dataloader(self) -> DataLoader:
        return self.shifted(indexed_loaders()[0])

    def val_dataloader(self) -> DataLoader:
        return self.shifted(indexed_loaders()[1])

    def shifted(self, loader: DataLoader) -> DataLoader:
        inputs, targets, index = loader.dataset.tensors
        return DataLoader(TensorDataset(inputs, targets, index + 1000 * self.current_epoch), loader.batch_size)


def test_hypersteps_follow_the_reloaded_dataloaders() -> None:
    L.seed_everything(0, verbose=False)
    model, callback = LoadersPerEpoch(), RecordingCallback(Identity(0.1), every_n_steps=2, train_batch="fresh")
    make_trainer([callback], max_epochs=3, reload_dataloaders_every_n_epochs=1).fit(model)
    assert {epoch: index[0] // 1000 for epoch, index in model.weight_batches} == {0: 0, 1: 1, 2: 2}  # Lightning's
    # Two hypersteps per epoch of 4 steps (at steps 2 and 4 of each): the epoch's loaders, from their first batch.
    hyper = [record["validation_batch"][2].tolist() for record in callback.records]
    fresh = [record["train_batch"][2].tolist() for record in callback.records]
    assert hyper == [list(range(1000 * e + 64 + 8 * k, 1000 * e + 72 + 8 * k)) for e in range(3) for k in range(2)]
    assert fresh == [list(range(1000 * e + 16 * k, 1000 * e + 16 + 16 * k)) for e in range(3) for k in range(2)]


@pytest.mark.parametrize("step", [4, 6])  # the end of epoch 0; the middle of epoch 1, after its first hyperstep
def test_a_resumed_fit_that_reloads_its_loaders_draws_the_uninterrupted_runs_hyper_batches(step, tmp_path) -> None:
    def fit(ckpt_path=None) -> list[tuple[list[int], list[int]]]:
        L.seed_everything(0, verbose=False)
        callback = RecordingCallback(Identity(0.1), every_n_steps=2, train_batch="fresh")
        saving = ModelCheckpoint(tmp_path, "{step}", every_n_train_steps=2, save_top_k=-1)
        trainer = make_trainer(
            [callback, saving], max_epochs=3, enable_checkpointing=True, reload_dataloaders_every_n_epochs=1
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the mid-epoch resume warning: the weights' loader restarts
            trainer.fit(LoadersPerEpoch(), ckpt_path=ckpt_path)
        return [(r["validation_batch"][2].tolist(), r["train_batch"][2].tolist()) for r in callback.records]

    straight = fit()
    assert fit(tmp_path / f"step={step}.ckpt") == straight[step // 2 :]
