"""A learned weight per class on long-tailed digits: the loss, the inverse-frequency start, and where tuning moves it."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_hypergrad import HypergradientCallback, HypergradientWarning
from lightning_hypergrad.data import DigitsDataModule
from lightning_hypergrad.hparams.class_weights import inverse_frequency
from lightning_hypergrad.models import MLPClassifier
from lightning_hypergrad.solvers import Neumann
from lightning_hypergrad.tasks import ClassWeightedClassifier
from tests.lightning_helpers import make_trainer


def test_training_loss_is_cross_entropy_weighted_by_class() -> None:
    torch.manual_seed(0)
    task = ClassWeightedClassifier(MLPClassifier(in_features=4, hidden=(), num_classes=3), 3).double()
    with torch.no_grad():
        task.class_weights.log_weights.copy_(torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64))
    inputs, targets = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 2, 1])
    expected = torch.nn.functional.cross_entropy(
        task(inputs), targets, weight=torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64).exp()
    )
    assert float(task.training_loss((inputs, targets)).detach()) == pytest.approx(float(expected.detach()), rel=1e-14)


def test_the_projection_recentres_and_clamps_the_log_weights() -> None:
    task = ClassWeightedClassifier(MLPClassifier(in_features=4, hidden=(), num_classes=3), 3, max_weight=10.0)
    with torch.no_grad():
        task.class_weights.log_weights.copy_(torch.tensor([10.0, 1.0, 1.0]))
        task.project_hyperparameters()
    log_weights = task.class_weights.log_weights.detach()
    # [10, 1, 1] − mean 4 = [6, −3, −3], then clamped to ±log 10.
    assert log_weights.tolist() == pytest.approx([math.log(10), -math.log(10), -math.log(10)], rel=1e-6)


def test_inverse_frequency_start_reads_the_datamodule_counts() -> None:
    data = DigitsDataModule(class_imbalance=10.0)
    task = ClassWeightedClassifier(initial="inverse_frequency")
    make_trainer([], max_steps=1).fit(task, data)
    expected = inverse_frequency(data.train_class_counts).float()
    assert torch.allclose(task.class_weights.weights().detach(), expected, rtol=1e-5)


class Uncounted(L.LightningDataModule):
    """A user's datamodule that does not say how many examples each class has."""

    def __init__(self) -> None:
        super().__init__()
        self.digits = DigitsDataModule()

    def train_dataloader(self) -> DataLoader:
        return self.digits.train_dataloader()


def test_inverse_frequency_without_counts_is_refused_with_the_remedy() -> None:
    task = ClassWeightedClassifier(initial="inverse_frequency")
    with pytest.raises(ValueError, match=r"initial='inverse_frequency'\) needs a datamodule with train_class_counts"):
        make_trainer([], max_steps=1).fit(task, Uncounted())


def test_tuning_raises_the_rare_classes_weights_on_long_tailed_data() -> None:
    torch.manual_seed(0)
    data = DigitsDataModule(class_imbalance=10.0)
    task = ClassWeightedClassifier()
    adam = lambda params: torch.optim.Adam(params, lr=0.05)  # noqa: E731
    callback = HypergradientCallback(Neumann(), hyper_optimizer=adam, every_n_steps=5, warmup_steps=20)
    # The last hyperstep falls on epoch 20's last batch, two examples of class 0: a batch of one class does not
    # depend on the class weights, so its hypergradient is exactly zero, and that is warned about.
    with pytest.warns(HypergradientWarning, match="exactly zero .* a batch of a single class"):
        make_trainer([callback], max_epochs=20).fit(task, data)
    weights = task.class_weights.weights().detach()
    counts = data.train_class_counts.float()
    assert callback.taken > 0 and callback.skipped == 0
    # The rarest half of the classes ends with larger weights than the most frequent half.
    order = counts.argsort()
    assert float(weights[order[:5]].mean()) > 1.5 * float(weights[order[5:]].mean())
