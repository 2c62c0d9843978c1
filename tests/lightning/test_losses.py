"""The hyperstep's losses: eval/train modes as asked, and modes and buffers restored whatever happens."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from lightning.pytorch.plugins import Precision
from torch import Tensor, nn

from lightning_hypergrad.lightning.losses import evaluate_losses, hyperstep_context


class NormalizedNet(nn.Module):
    """BatchNorm and dropout, with losses that fail on request."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 1))
        self.seen_training: list[bool] = []

    def training_loss(self, batch: Tensor) -> Tensor:
        self.seen_training.append(self.body[2].training)
        return self.body(batch).pow(2).mean()

    def validation_loss(self, batch: Any) -> Tensor:
        self.seen_training.append(self.body[2].training)
        if batch is None:
            raise RuntimeError("the validation batch is broken")
        return self.body(batch).pow(2).mean()


def snapshot(net: nn.Module) -> tuple[dict[str, Tensor], list[bool]]:
    return {k: v.clone() for k, v in net.state_dict().items()}, [m.training for m in net.modules()]


@pytest.mark.parametrize("failing", [False, True])
def test_modes_and_buffers_are_restored_even_when_a_loss_raises(failing: bool) -> None:
    torch.manual_seed(0)
    net = NormalizedNet()
    net.body[3].eval()  # a user's own mode choice must survive too
    before_state, before_modes = snapshot(net)
    batch = torch.randn(8, 3)

    def run() -> None:
        with hyperstep_context(net):
            train_loss, _ = evaluate_losses(net, Precision(), batch, None if failing else batch, "eval")
            train_loss.backward()
            net.eval()  # anything inside may change modes

    if failing:
        with pytest.raises(RuntimeError, match="validation batch is broken"):
            run()
    else:
        run()
    after_state, after_modes = snapshot(net)
    assert after_modes == before_modes
    for name, tensor in before_state.items():
        assert torch.equal(after_state[name], tensor), name


def test_validation_runs_in_eval_mode_and_training_in_the_modules_mode() -> None:
    net = NormalizedNet()
    batch = torch.randn(8, 3)
    with hyperstep_context(net):
        evaluate_losses(net, Precision(), batch, batch, "eval")
        evaluate_losses(net, Precision(), batch, batch, "train")
    assert net.seen_training == [False, True, True, True]  # validation, training; validation, training
