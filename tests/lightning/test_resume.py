"""Resuming a fit with the HypergradientCallback: from a checkpoint written by an older version (on another
machine, so within float32 rounding), and bit-exactly from one written and resumed here."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from lightning_hypergrad import HypergradientCallback
from lightning_hypergrad.solvers import Identity, Neumann
from lightning_hypergrad.tasks import DropoutClassifier
from tests.fixtures.make_callback_checkpoint import (
    CHECKPOINT,
    FIXTURE_EPOCHS,
    TinyRegression,
    fit,
    loaders,
    make_callback,
)
from tests.lightning_helpers import digits, make_trainer, small_classifier

TOTAL_EPOCHS = 2 * FIXTURE_EPOCHS
# The committed fixture was computed on another CPU, whose kernels may round differently (other SIMD widths and
# summation orders give results a few float32 ulps apart). Resuming from the fixture with every weight moved by
# 4 ulps moves the final state by at most 9.5e-7 (6.4e-7 relative); a broken resume moves it by 4e-3 or more
# (the hyper batches one position off: 4.0e-3; the hyper scheduler's state lost: 1.6e-2; Adam's moments lost:
# 5.9e-2). These tolerances sit 10 times above the first and 400 times below the others.
ACROSS_MACHINES = {"rtol": 1e-5, "atol": 1e-6}
BIT_EXACT = {"rtol": 0.0, "atol": 0.0}


def callback_state(checkpoint_path) -> dict:
    checkpoint = torch.load(checkpoint_path, weights_only=False)
    (state,) = [value for key, value in checkpoint["callbacks"].items() if "HypergradientCallback" in key]
    return state


def assert_same_fit(straight, resumed, tolerance: dict[str, float]) -> None:
    """Same weights, hyperparameters, hyper optimizer, warm start and history (floats within ``tolerance``), and
    exactly the same counts, hyper batch positions and scheduler state."""
    straight_model, straight_callback, _ = straight
    resumed_model, resumed_callback, _ = resumed
    for (name, expected), actual in zip(straight_model.state_dict().items(), resumed_model.state_dict().values()):
        torch.testing.assert_close(actual, expected, **tolerance, msg=lambda text, name=name: f"{name}: {text}")
    assert resumed_callback.taken == straight_callback.taken
    assert resumed_callback.skipped == straight_callback.skipped
    straight_state, resumed_state = straight_callback.state_dict(), resumed_callback.state_dict()
    assert resumed_state["hyper_batches_drawn"] == straight_state["hyper_batches_drawn"]
    assert resumed_state["hyper_lr_scheduler"] == straight_state["hyper_lr_scheduler"]
    for key in ("step", "exp_avg", "exp_avg_sq"):
        expected = straight_state["hyper_optimizer"]["state"][0][key]
        torch.testing.assert_close(resumed_state["hyper_optimizer"]["state"][0][key], expected, **tolerance)
    expected_start, resumed_start = straight_state["warm_start_solution"], resumed_state["warm_start_solution"]
    names = ["network.0.weight", "network.0.bias", "network.2.weight", "network.2.bias"]
    assert list(resumed_start) == list(expected_start) == names  # by name, also after the fixture's positional list
    torch.testing.assert_close(resumed_start, expected_start, **tolerance)
    # History entries (converted from the old flat form where the checkpoint held that) match the straight run.
    for key in ("step", "applied"):
        assert [e[key] for e in resumed_callback.history] == [e[key] for e in straight_callback.history], key
    for key in ("validation_loss", "hyperparameters"):
        expected = [e[key] for e in straight_callback.history]
        torch.testing.assert_close([e[key] for e in resumed_callback.history], expected, **tolerance)


def test_the_committed_fixture_holds_the_old_checkpoint_keys() -> None:
    state = callback_state(CHECKPOINT)
    assert state["taken"] == 3 and state["last_step_seen"] == 8 and state["hyper_batches_drawn"] == 3
    assert state["hyper_optimizer"]["state"][0]["step"] == 3
    assert state["hyper_lr_scheduler"]["last_epoch"] == 3
    assert "solver" not in state  # written before solvers had checkpoint state


def test_a_checkpoint_written_by_an_older_version_on_another_machine_resumes_within_rounding() -> None:
    torch.set_num_threads(1)
    straight = fit(TOTAL_EPOCHS)
    resumed = fit(TOTAL_EPOCHS, ckpt_path=CHECKPOINT)
    assert straight[1].taken == 7  # hypersteps at steps 3, 5, ..., 15
    assert_same_fit(straight, resumed, ACROSS_MACHINES)


def test_a_checkpoint_written_now_resumes_bit_exactly(tmp_path) -> None:
    torch.set_num_threads(1)
    _, _, first_half = fit(FIXTURE_EPOCHS)
    path = tmp_path / "half.ckpt"
    first_half.save_checkpoint(path)
    assert_same_fit(fit(TOTAL_EPOCHS), fit(TOTAL_EPOCHS, ckpt_path=path), BIT_EXACT)


def fit_digits(epochs: int, directory, every_n_train_steps: int, ckpt_path=None) -> tuple:
    """Digits (17 batches an epoch), a hyperstep every 5 steps, a checkpoint every ``every_n_train_steps``."""
    L.seed_everything(0, verbose=False)
    model = small_classifier(decay_granularity="per_tensor")
    callback = HypergradientCallback(Neumann(iterations=5), every_n_steps=5, warm_start=True)
    saving = ModelCheckpoint(directory, "{step}", every_n_train_steps=every_n_train_steps, save_top_k=-1)
    trainer = make_trainer([callback, saving], max_epochs=epochs, enable_checkpointing=True)
    trainer.fit(model, digits(hyper_batch_size=100), ckpt_path=ckpt_path)
    return model, callback, trainer


# Step 20: the third batch of epoch 1, with a hyperstep the checkpoint holds; step 17: epoch 0's last batch.
@pytest.mark.parametrize("step", [20, 17])
def test_the_bundled_datamodules_resume_bit_exactly_from_a_checkpoint_within_an_epoch(step: int, tmp_path) -> None:
    torch.set_num_threads(1)
    straight = fit_digits(2, tmp_path / "straight", step)
    resumed = fit_digits(2, tmp_path / "resumed", step, ckpt_path=tmp_path / "straight" / f"step={step}.ckpt")
    assert resumed[2].global_step == straight[2].global_step == 34
    assert straight[1].taken == 6 and resumed[1].state_dict()["last_step_seen"] == 34
    assert_same_fit(straight, resumed, BIT_EXACT)


def test_a_mid_epoch_resume_with_a_plain_dataloader_is_warned_about(tmp_path) -> None:
    def run(ckpt_path=None) -> None:
        L.seed_everything(0, verbose=False)
        saving = ModelCheckpoint(tmp_path, "{step}", every_n_train_steps=2, save_top_k=-1)
        trainer = make_trainer([make_callback(), saving], max_epochs=1, enable_checkpointing=True)
        trainer.fit(TinyRegression(), *loaders(), ckpt_path=ckpt_path)

    run()
    with pytest.warns(PossibleUserWarning, match="resuming from a checkpoint that ended before the epoch ended"):
        run(tmp_path / "step=2.ckpt")  # after 2 of the epoch's 4 batches: Lightning restarts the epoch


class RememberingIdentity(Identity):
    """A solver with state between solves, as a caching solver would have."""

    def __init__(self, alpha: float = 0.1) -> None:
        super().__init__(alpha)
        self.estimate = 0.0

    def state_dict(self) -> dict:
        return {"estimate": self.estimate}

    def load_state_dict(self, state: dict) -> None:
        self.estimate = state["estimate"]


def test_the_solvers_state_travels_in_the_checkpoint_under_its_own_key(tmp_path) -> None:
    saved = HypergradientCallback(RememberingIdentity())
    saved.solver.estimate = 4.5
    state = saved.state_dict()
    assert state["solver"] == {"estimate": 4.5}
    restored = HypergradientCallback(RememberingIdentity())
    restored.load_state_dict(state)
    assert restored.solver.estimate == 4.5
    old = HypergradientCallback(RememberingIdentity())
    old.load_state_dict(callback_state(CHECKPOINT))  # no "solver" key: the solver keeps its fresh state
    assert old.solver.estimate == 0.0 and old.taken == 3


def fit_dropout_digits(directory, ckpt_path=None, every_n_train_steps: int = 1) -> DropoutClassifier:
    """Learned (concrete) dropout on digits: every weight step and hyperstep draws masks from the global generator."""
    L.seed_everything(0, verbose=False)
    model = DropoutClassifier(hidden=(32,), initial_rate=0.2)
    callback = HypergradientCallback(Neumann(iterations=5), every_n_steps=5)
    saving = ModelCheckpoint(directory, "{step}", every_n_train_steps=every_n_train_steps, save_top_k=-1)
    trainer = make_trainer([callback, saving], max_epochs=2, enable_checkpointing=True)
    trainer.fit(model, digits(hyper_batch_size=100), ckpt_path=ckpt_path)
    return model


# Step 17: epoch 0's last batch (the resumed fit starts a new pass); 20: within epoch 1, just after a hyperstep.
@pytest.mark.parametrize("step", [17, 20])
def test_a_fit_with_concrete_dropout_resumes_bit_exactly(step: int, tmp_path) -> None:
    torch.set_num_threads(1)
    straight = fit_dropout_digits(tmp_path / "straight")
    resumed = fit_dropout_digits(tmp_path / "resumed", ckpt_path=tmp_path / "straight" / f"step={step}.ckpt")
    for (name, expected), actual in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(actual, expected), name
    assert not torch.allclose(straight.dropouts()[0].rate(), torch.tensor(0.2))  # the rates were tuned


def test_without_the_saved_random_state_the_resumed_dropout_masks_differ(tmp_path) -> None:
    """The check above can fail: the same resume from a checkpoint stripped of ``random_state`` leaves the
    uninterrupted run (an older checkpoint resumes this way, without an error)."""
    torch.set_num_threads(1)
    straight = fit_dropout_digits(tmp_path / "straight", every_n_train_steps=20)
    path = tmp_path / "straight" / "step=20.ckpt"
    checkpoint = torch.load(path, weights_only=False)
    (key,) = [key for key in checkpoint["callbacks"] if "HypergradientCallback" in key]
    del checkpoint["callbacks"][key]["random_state"]
    torch.save(checkpoint, path)
    resumed = fit_dropout_digits(tmp_path / "resumed", ckpt_path=path, every_n_train_steps=20)
    assert not torch.equal(resumed.network[1].weight, straight.network[1].weight)
