"""A guard against tuning to the validation split: data the hypersteps never see, and the state that was best on it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_hypergrad.arguments import check_choice, check_count
from lightning_hypergrad.engine.hypergradient import HypergradientWarning
from lightning_hypergrad.lightning import adapter, contract, distributed
from lightning_hypergrad.lightning.batches import hyper_loader
from lightning_hypergrad.lightning.callback import HypergradientCallback
from lightning_hypergrad.lightning.losses import hyperstep_context

Restore = Literal["hyperparameters", "hyperparameters_and_weights", "none"]


class HeldOutGuard(Callback):
    """Evaluates the validation loss on held-out data every few hypersteps, keeps the best state and restores it.

    Many hyperparameters can fit the validation split the hypersteps descend, as weights fit a training set: the
    tuned validation loss keeps falling while the loss on other data rises. The guard measures both on a schedule,
    with the module's ``validation_loss`` in eval mode: the *tuned* loss, a full pass over the data the hypersteps
    draw from, and the *held-out* loss, a full pass over ``held_out_dataloader()`` of the datamodule (or the
    module), which the hypersteps never see (``DigitsDataModule(held_out_fraction=0.5)`` and
    ``TabularDataModule(held_out_fraction=...)`` split their validation data so). It keeps a copy of the
    hyperparameters (and, with ``restore="hyperparameters_and_weights"``, of the weights) at the lowest held-out
    loss, the untuned start included, and writes it back when training ends: early stopping for λ, judged on data
    that had no say in it. When the held-out loss has risen over the last ``patience`` evaluations while the tuned
    loss fell, it warns once (a :class:`~lightning_hypergrad.HypergradientWarning`). The end-of-fit report and
    ``summary.json`` carry the final held-out loss, the tuned loss and their gap (``held_out_*`` keys).

    Add it after a :class:`~lightning_hypergrad.HypergradientCallback`:
    ``Trainer(callbacks=[HypergradientCallback(...), HeldOutGuard()])``.

    Args:
        every_n_hypersteps: evaluate after every this many hypersteps taken, ``>= 1`` (and at the start and end).
        restore: what to write back when training ends: ``"hyperparameters"`` (λ only; the weights keep training
            to the end), ``"hyperparameters_and_weights"`` (the whole state at the best evaluation) or ``"none"``
            (only measure and report).
        patience: evaluations over which a rising held-out loss under a falling tuned loss triggers the warning,
            ``>= 1``.
        max_batches: evaluate at most this many batches of each loader (``None``: all of them).
    """

    def __init__(
        self,
        every_n_hypersteps: int = 5,
        restore: Restore = "hyperparameters",
        patience: int = 3,
        max_batches: int | None = None,
    ) -> None:
        self.every_n_hypersteps = check_count("HeldOutGuard", "every_n_hypersteps", every_n_hypersteps, minimum=1)
        self.restore = check_choice(
            "HeldOutGuard", "restore", restore, ("hyperparameters", "hyperparameters_and_weights", "none")
        )
        self.patience = check_count("HeldOutGuard", "patience", patience, minimum=1)
        self.max_batches = None if max_batches is None else check_count("HeldOutGuard", "max_batches", max_batches, 1)
        self.evaluations: list[dict[str, float]] = []  # {"step", "hypersteps", "tuned_loss", "held_out_loss"}
        self.best: dict[str, Any] | None = None  # the evaluation with the lowest held-out loss, and its state
        self.final: dict[str, float] | None = None  # the evaluation after the restore, at the end of training
        self.restored = self.warned = False
        self._hyper: HypergradientCallback | None = None
        self._loaders: tuple[Iterable[Any], Iterable[Any]] | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._hyper = next((c for c in trainer.callbacks if isinstance(c, HypergradientCallback)), None)
        if self._hyper is None:
            raise ValueError("HeldOutGuard guards the hypersteps of a HypergradientCallback; add one to the Trainer.")
        if held_out_owner(trainer, pl_module) is None:
            raise ValueError(
                "HeldOutGuard needs held-out data: define held_out_dataloader() on the datamodule or the module (for "
                "the bundled data, DigitsDataModule(held_out_fraction=0.5) or TabularDataModule(held_out_fraction=0.5))."
            )

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        held_out = held_out_owner(trainer, pl_module).held_out_dataloader()
        tuned = hyper_loader(trainer, pl_module, self._hyper.batches.validation_dataloader)
        self._loaders = (adapter.own_loader(tuned), adapter.own_loader(held_out))  # never the loops' iterators
        if not self.evaluations:  # a fresh fit: the untuned start is the first candidate
            self.evaluate(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        done = self.evaluations[-1]["hypersteps"] if self.evaluations else 0
        if self._hyper.taken - done >= self.every_n_hypersteps:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.evaluations or self.evaluations[-1]["step"] != trainer.global_step:
            self.evaluate(trainer, pl_module)
        if self.restore != "none" and self.best is not None and self.best["step"] != self.evaluations[-1]["step"]:
            write_state(pl_module, self.best, with_weights=self.restore == "hyperparameters_and_weights")
            self.restored = True
        tuned, held_out = self.losses(trainer, pl_module)
        self.final = {"step": float(trainer.global_step), "tuned_loss": tuned, "held_out_loss": held_out}

    def evaluate(self, trainer: Trainer, module: LightningModule) -> dict[str, float]:
        """Measure the tuned and held-out losses now, keep the state if it is the best so far, warn on a growing gap."""
        tuned, held_out = self.losses(trainer, module)
        entry = {
            "step": float(trainer.global_step),
            "hypersteps": float(self._hyper.taken),
            "tuned_loss": tuned,
            "held_out_loss": held_out,
        }
        self.evaluations.append(entry)
        if self.best is None or held_out < self.best["held_out_loss"]:
            self.best = {**entry, **read_state(module, with_weights=self.restore == "hyperparameters_and_weights")}
        self._warn_if_diverging()
        return entry

    def losses(self, trainer: Trainer, module: LightningModule) -> tuple[float, float]:
        """``(tuned, held_out)``: the mean validation loss over each loader, agreed across processes."""
        tuned, held_out = (mean_loss(trainer, module, loader, self.max_batches) for loader in self._loaders)
        (both,) = distributed.all_reduce_mean([torch.tensor([tuned, held_out], dtype=torch.float64)])
        return float(both[0]), float(both[1])

    def _warn_if_diverging(self) -> None:
        if self.warned or len(self.evaluations) <= self.patience:
            return
        then, now = self.evaluations[-1 - self.patience], self.evaluations[-1]
        if now["held_out_loss"] > then["held_out_loss"] and now["tuned_loss"] < then["tuned_loss"]:
            self.warned = True
            rank_zero_warn(
                HypergradientWarning(
                    f"The held-out loss rose from {then['held_out_loss']:.4g} to {now['held_out_loss']:.4g} over the "
                    f"last {self.patience} evaluations (steps {int(then['step'])}-{int(now['step'])}) while the tuned "
                    f"validation loss fell from {then['tuned_loss']:.4g} to {now['tuned_loss']:.4g}: the "
                    "hyperparameters are fitting the validation split. The guard keeps the state that was best on "
                    f"held-out data (step {int(self.best['step'])}); fewer hyperparameters, a lower hyper learning "
                    "rate or more validation data would help."
                )
            )

    def state_dict(self) -> dict[str, Any]:
        return {"evaluations": self.evaluations, "best": self.best, "warned": self.warned}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.evaluations = list(state_dict.get("evaluations", []))
        self.best = state_dict.get("best")
        self.warned = bool(state_dict.get("warned", False))


def held_out_owner(trainer: Trainer, module: LightningModule) -> Any:
    """The datamodule or module that defines ``held_out_dataloader()``, or None."""
    for owner in (trainer.datamodule, module):
        if owner is not None and callable(getattr(owner, "held_out_dataloader", None)):
            return owner
    return None


def mean_loss(trainer: Trainer, module: LightningModule, loader: Iterable[Any], max_batches: int | None) -> float:
    """The module's ``validation_loss`` in eval mode, averaged over ``loader``'s batches weighted by their sizes."""
    total = count = 0.0
    with hyperstep_context(module), torch.no_grad(), trainer.precision_plugin.forward_context():
        module.eval()
        for index, batch in enumerate(loader):
            if max_batches is not None and index >= max_batches:
                break
            batch = trainer.strategy.batch_to_device(trainer.precision_plugin.convert_input(batch))
            size = batch_size(batch)
            total += float(contract.bilevel(module).validation_loss(batch)) * size
            count += size
    return total / count if count else float("nan")


def batch_size(batch: Any) -> int:
    """The length of the batch's first tensor (1 when it has none): the weight of its mean loss."""
    first = batch[0] if isinstance(batch, (list, tuple)) and batch else batch
    return len(first) if isinstance(first, Tensor) and first.ndim > 0 else 1


def read_state(module: LightningModule, with_weights: bool) -> dict[str, Any]:
    """Copies of the hyperparameters by name (and of the weights, in ``weight_parameters()`` order)."""
    bilevel = contract.bilevel(module)
    state: dict[str, Any] = {
        "hyperparameters": {name: parameter.detach().clone() for name, parameter in bilevel.named_hyperparameters()}
    }
    if with_weights:
        state["weights"] = [weight.detach().clone() for weight in bilevel.weight_parameters()]
    return state


def write_state(module: LightningModule, state: dict[str, Any], with_weights: bool) -> None:
    """Write a :func:`read_state` copy back into the module's parameters, in place."""
    bilevel = contract.bilevel(module)
    with torch.no_grad():
        for name, parameter in bilevel.named_hyperparameters():
            parameter.copy_(state["hyperparameters"][name])
        if with_weights:
            for weight, value in zip(bilevel.weight_parameters(), state["weights"], strict=True):
                weight.copy_(value)
