"""During a hyperstep's solve the callback holds neither the loss tensors nor the validation gradient v."""

from __future__ import annotations

import warnings
import weakref

from lightning_hypergrad import HypergradientCallback
from lightning_hypergrad.models import MLPClassifier
from lightning_hypergrad.solvers import Neumann
from lightning_hypergrad.tasks import WeightDecayClassifier
from tests.lightning_helpers import digits, make_trainer


class LossWatchingClassifier(WeightDecayClassifier):
    """Remembers a weak reference to each loss tensor it returns."""

    def __init__(self) -> None:
        super().__init__(network=MLPClassifier(hidden=(32,)), decay_granularity="per_weight")
        self.loss_references: list[weakref.ref] = []

    def training_loss(self, batch):
        loss = super().training_loss(batch)
        self.loss_references.append(weakref.ref(loss))
        return loss

    def validation_loss(self, batch):
        loss = super().validation_loss(batch)
        self.loss_references.append(weakref.ref(loss))
        return loss


class AliveDuringSolve(Neumann):
    """Neumann that records, at the start of each solve, how many of the module's loss tensors are still alive."""

    def __init__(self, module: LossWatchingClassifier) -> None:
        super().__init__(iterations=3, alpha=0.01)
        self.module, self.alive = module, []

    def solve(self, hvp, b, initial=None):
        references = self.module.loss_references
        self.alive.append((len(references), sum(reference() is not None for reference in references)))
        return super().solve(hvp, b, initial)


class HyperstepLossesOnly(HypergradientCallback):
    """Forgets the weight steps' losses (Lightning passes the last one to the hooks) before each hyperstep."""

    def compute_hypergradient(self, trainer, module, train_batch, validation_batch):
        module.loss_references.clear()
        return super().compute_hypergradient(trainer, module, train_batch, validation_batch)


def test_the_hyperstep_lets_go_of_its_loss_tensors_before_the_solve() -> None:
    module = LossWatchingClassifier()
    solver = AliveDuringSolve(module)
    callback = HyperstepLossesOnly(solver, every_n_steps=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_trainer([callback], max_epochs=1).fit(module, datamodule=digits())
    assert callback.taken >= 3
    # Each solve saw its hyperstep's training and validation losses created, and neither of them alive.
    assert solver.alive and all(alive == (2, 0) for alive in solver.alive), solver.alive
