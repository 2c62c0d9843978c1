"""``implicit_parameters()``: restricting the implicit term to some weights solves over their block only."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from lightning_hypergrad import hypergradient_with_solve
from lightning_hypergrad.solvers import Exact
from tests.fixtures.make_callback_checkpoint import TinyRegression, loaders
from tests.lightning_helpers import RecordingCallback, make_trainer


class LastLayer(TinyRegression):
    """The 4-8-2 regression with its implicit term restricted to the output layer (float64)."""

    def __init__(self, implicit: str = "last") -> None:
        super().__init__()
        self.double()
        self.implicit = implicit

    def implicit_parameters(self) -> list[nn.Parameter]:
        if self.implicit == "hyper":
            return [self.log_decay]
        return [] if self.implicit == "none" else list(self.network[2].parameters())


def double_loaders():
    return [
        torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(*(t.double() for t in loader.dataset.tensors)), batch_size=loader.batch_size
        )
        for loader in loaders()
    ]


def test_the_solve_runs_over_the_chosen_block_and_matches_a_direct_restricted_hypergradient() -> None:
    L.seed_everything(0, verbose=False)
    model, callback = LastLayer(), RecordingCallback(Exact(), every_n_steps=2)
    make_trainer([callback], max_steps=6, limit_val_batches=0).fit(model, *double_loaders())
    assert callback.taken == 3
    record = callback.records[-1]
    assert [tuple(part.shape) for part in record["result"].solve.solution] == [(2, 8), (2,)]
    model.load_state_dict(record["state"])
    inputs, targets = record["train_batch"]
    validation_inputs, validation_targets = record["validation_batch"]
    train_loss = model.training_loss((inputs, targets))
    validation_loss = model.validation_loss((validation_inputs, validation_targets))
    expected = hypergradient_with_solve(
        train_loss, validation_loss, list(model.network[2].parameters()), [model.log_decay], Exact()
    )
    torch.testing.assert_close(record["result"].hypergradients[0], expected.hypergradients[0], rtol=1e-12, atol=0)
    full = hypergradient_with_solve(
        model.training_loss((inputs, targets)),
        model.validation_loss((validation_inputs, validation_targets)),
        model.weight_parameters(),
        [model.log_decay],
        Exact(),
    )
    assert not torch.allclose(full.hypergradients[0], expected.hypergradients[0])  # a real restriction


@pytest.mark.parametrize(
    ("implicit", "message"), [("none", "it is empty"), ("hyper", r"\['log_decay'\] are not weights")]
)
def test_a_choice_outside_the_weights_is_refused_at_setup(implicit: str, message: str) -> None:
    with pytest.raises(
        ValueError, match=r"LastLayer.implicit_parameters\(\) must return a non-empty subset.*" + message
    ):
        make_trainer([RecordingCallback(Exact())], max_steps=2).fit(LastLayer(implicit), *double_loaders())
