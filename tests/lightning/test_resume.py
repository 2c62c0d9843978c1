"""Resuming a fit with the HypergradientCallback: from a checkpoint written by an older version, and bit-exactly."""

from __future__ import annotations

import torch

from lightning_hypergrad import HypergradientCallback
from lightning_hypergrad.solvers import Identity
from tests.fixtures.make_callback_checkpoint import CHECKPOINT, FIXTURE_EPOCHS, fit

TOTAL_EPOCHS = 2 * FIXTURE_EPOCHS


def callback_state(checkpoint_path) -> dict:
    checkpoint = torch.load(checkpoint_path, weights_only=False)
    (state,) = [value for key, value in checkpoint["callbacks"].items() if "HypergradientCallback" in key]
    return state


def assert_same_fit(straight, resumed) -> None:
    straight_model, straight_callback, _ = straight
    resumed_model, resumed_callback, _ = resumed
    for (name, expected), actual in zip(straight_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(actual, expected), f"{name} differs after resume"
    assert resumed_callback.taken == straight_callback.taken
    assert resumed_callback.skipped == straight_callback.skipped
    straight_state, resumed_state = straight_callback.state_dict(), resumed_callback.state_dict()
    assert resumed_state["hyper_batches_drawn"] == straight_state["hyper_batches_drawn"]
    assert resumed_state["hyper_lr_scheduler"] == straight_state["hyper_lr_scheduler"]
    for key in ("step", "exp_avg", "exp_avg_sq"):
        expected = straight_state["hyper_optimizer"]["state"][0][key]
        assert torch.equal(resumed_state["hyper_optimizer"]["state"][0][key], expected), key
    expected_start, resumed_start = straight_state["warm_start_solution"], resumed_state["warm_start_solution"]
    names = ["network.0.weight", "network.0.bias", "network.2.weight", "network.2.bias"]
    assert list(resumed_start) == list(expected_start) == names  # by name, also after the fixture's positional list
    assert all(torch.equal(resumed_start[name], expected_start[name]) for name in expected_start)
    # History entries (converted from the old flat form where the checkpoint held that) match the straight run.
    for key in ("step", "validation_loss", "hyperparameters", "applied"):
        assert [e[key] for e in resumed_callback.history] == [e[key] for e in straight_callback.history], key


def test_the_committed_fixture_holds_the_old_checkpoint_keys() -> None:
    state = callback_state(CHECKPOINT)
    assert state["taken"] == 3 and state["last_step_seen"] == 8 and state["hyper_batches_drawn"] == 3
    assert state["hyper_optimizer"]["state"][0]["step"] == 3
    assert state["hyper_lr_scheduler"]["last_epoch"] == 3
    assert "solver" not in state  # written before solvers had checkpoint state


def test_a_checkpoint_written_by_an_older_version_resumes_bit_exactly() -> None:
    torch.set_num_threads(1)
    straight = fit(TOTAL_EPOCHS)
    resumed = fit(TOTAL_EPOCHS, ckpt_path=CHECKPOINT)
    assert straight[1].taken == 7  # hypersteps at steps 3, 5, ..., 15
    assert_same_fit(straight, resumed)


def test_a_checkpoint_written_now_resumes_bit_exactly(tmp_path) -> None:
    torch.set_num_threads(1)
    _, _, first_half = fit(FIXTURE_EPOCHS)
    path = tmp_path / "half.ckpt"
    first_half.save_checkpoint(path)
    assert_same_fit(fit(TOTAL_EPOCHS), fit(TOTAL_EPOCHS, ckpt_path=path))


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
