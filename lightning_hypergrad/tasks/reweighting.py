"""Classification with a learned weight per training example: mislabelled examples get quieted by the validation loss."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn
from torchmetrics.functional.classification import binary_auroc

from lightning_hypergrad.arguments import check_count
from lightning_hypergrad.hparams.example_weights import ExampleWeights
from lightning_hypergrad.tasks.classifier import ClassifierTask


class ReweightedClassifier(ClassifierTask):
    r"""``L_T = Σ_i c_i ℓ_i / Σ_i c_i`` over a training batch, with one learned weight ``c_i = exp(θ_i)`` per example.

    ``L_V = CE(validation)`` on clean data, so an example whose gradient pulls the weights away from what the
    validation set wants (a flipped label, say) has its weight lowered. The training data must yield
    ``(indices, inputs, targets)``: use ``DigitsDataModule(indexed=True)`` or wrap a dataset in
    :class:`~lightning_hypergrad.data.IndexedDataset`.

    How the weights stay on a sensible scale: the batch loss is the weighted *average* (divided by the batch's
    total weight), so multiplying every weight by a constant changes nothing: weights cannot inflate or shrink
    the loss, and with it the effective learning rate. After every hyperstep the log-weights are recentred to
    mean 0, so the weights' geometric mean stays 1 and a weight reads as "times an ordinary example", and then
    clamped to ``[1/max_weight, max_weight]``, so a too-large hyper learning rate cannot run a weight off to
    zero or infinity.

    Args:
        network, num_classes: see :class:`ClassifierTask`.
        num_examples: size of the training split (checked against the datamodule's ``train_size`` if it has one).
        max_weight: the largest weight (and the reciprocal of the smallest), ``> 1``.
        **kwargs: ``optimizer``, ``learning_rate``, clipping and accumulation: see :class:`ClassifierTask`.
    """

    def __init__(
        self,
        network: nn.Module | None = None,
        num_classes: int = 10,
        num_examples: int = 1079,
        max_weight: float = 100.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(network, num_classes, **kwargs)
        check_count(type(self).__name__, "num_examples", num_examples, minimum=1)
        if isinstance(max_weight, bool) or not isinstance(max_weight, (int, float)) or not 1 < max_weight < math.inf:
            raise ValueError(
                f"{type(self).__name__}(max_weight={max_weight!r}): max_weight must be a finite number > 1."
            )
        self.max_log_weight = math.log(max_weight)
        self.example_weights = ExampleWeights(num_examples, initial=1.0, parametrization="log")

    def _datamodule(self) -> Any:
        try:
            return self.trainer.datamodule
        except RuntimeError:  # not attached to a Trainer
            return None

    def setup(self, stage: str) -> None:
        datamodule = self._datamodule()
        size = getattr(datamodule, "train_size", None)
        if size is not None and size != self.example_weights.raw.numel():
            raise ValueError(
                f"{type(self).__name__}(num_examples={self.example_weights.raw.numel()}) does not match the "
                f"training split of {type(datamodule).__name__}, which has {size} examples; set num_examples={size}."
            )

    def training_loss(self, batch: Any) -> Tensor:
        """The weighted average of the batch's per-example cross-entropies (batches are ``(index, x, y)``)."""
        indices, inputs, targets = batch
        losses = nn.functional.cross_entropy(self(inputs), targets, reduction="none")
        # ExampleWeights gives the mean of c·ℓ; dividing by the mean weight makes it the weighted average.
        return self.example_weights(indices, losses) / self.example_weights.weights(indices).mean()

    def hyperparameters(self) -> list[nn.Parameter]:
        """The raw per-example weight parameters (one per training example)."""
        return [self.example_weights.raw]

    def project_hyperparameters(self) -> None:
        """Recentre the log-weights to mean 0 (geometric mean 1) and clamp them to ±log(max_weight)."""
        raw = self.example_weights.raw
        raw.sub_(raw.mean()).clamp_(-self.max_log_weight, self.max_log_weight)

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return super().validation_step(_without_indices(batch), batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return super().test_step(_without_indices(batch), batch_idx)

    def hyperparameter_values(self) -> dict[str, Tensor]:
        """The example weights ``c`` (geometric mean 1), one per training example."""
        return {"example_weights": self.example_weights.weights().detach().clone()}

    def report_metrics(self) -> dict[str, float]:
        """With a datamodule that marks flipped labels (``flipped``): how well low weights find them.

        ``flipped_example_auroc`` is the probability that a random flipped example has a lower weight than a
        random clean one (0.5: no better than chance, 1: every flipped example below every clean one), with the
        mean weights of both groups.
        """
        flipped = getattr(self._datamodule(), "flipped", None)
        if flipped is None or not bool(flipped.any()) or bool(flipped.all()):
            return {}
        return flipped_example_metrics(self.example_weights.weights().detach().cpu(), flipped.cpu())


def flipped_example_metrics(weights: Tensor, flipped: Tensor) -> dict[str, float]:
    """ROC AUC of ``-weights`` as a detector of ``flipped`` examples, and the mean weight of each group."""
    if weights.shape != flipped.shape:
        raise ValueError(f"weights {tuple(weights.shape)} and flipped flags {tuple(flipped.shape)} must match.")
    return {
        "flipped_example_auroc": float(binary_auroc(-weights.float(), flipped.long())),
        "mean_weight_flipped": float(weights[flipped].mean()),
        "mean_weight_clean": float(weights[~flipped].mean()),
    }


def _without_indices(batch: Any) -> Any:
    """Evaluation batches of an indexed training set carry indices first; the metrics need ``(inputs, targets)``."""
    return batch[1:] if isinstance(batch, (list, tuple)) and len(batch) == 3 else batch
