"""Logistic regression with a learned L2 decay per input feature: the tabular task behind the breast-cancer config."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_hypergrad.hparams.feature_decay import FeatureDecay, FeatureGranularity
from lightning_hypergrad.hparams.weight_decay import check_spread_penalty
from lightning_hypergrad.tasks.classifier import ClassifierTask


class FeatureDecayLogisticRegression(ClassifierTask):
    r"""Multinomial logistic regression ``softmax(W x + b)`` with a learned decay on each column of ``W``.

    ``L_T = CE(train) + ½ Σ_j c_j ‖W_{:, j}‖²`` (the bias is not penalised) and ``L_V = CE(validation)``
    (plus ``κ · spread`` of the log coefficients when ``decay_spread_penalty`` κ > 0). The
    inner problem is strictly convex, so trained full-batch it has one minimiser and the implicit hypergradient
    is exact up to the solver (``ConjugateGradient`` converges in at most as many products as weights).

    With ``decay_granularity="global"`` and ``n`` training examples this is scikit-learn's
    ``LogisticRegression(C=C)`` (loss ``C Σ ℓ_i + ½‖W‖²``, intercept unpenalised) at ``c = 1 / (C n)`` for three
    or more classes and at ``c = 2 / (C n)`` for two: scikit-learn's binary model has one weight vector
    ``β = w₁ − w₀``, and the two-class softmax's optimum has ``w₀ = −w₁``, so ``½c(‖w₀‖² + ‖w₁‖²) = ½(c/2)‖β‖²``.

    Args:
        in_features: input columns (30 for breast cancer).
        num_classes: classes (softmax outputs).
        decay_granularity: ``"per_feature"`` (one coefficient per input feature) or ``"global"``.
        initial_decay: every coefficient's starting value.
        learning_rate: the default Adam's learning rate (full-batch training takes large steps).
        decay_spread_penalty: κ ``>= 0``, the weight of a prior pulling the per-feature coefficients towards their
            geometric mean (:func:`~lightning_hypergrad.hparams.weight_decay.log_spread`) in the validation
            objective; validation metrics never include it.
        **kwargs: ``optimizer``, clipping and accumulation: see :class:`ClassifierTask`.
    """

    def __init__(
        self,
        in_features: int = 30,
        num_classes: int = 2,
        decay_granularity: FeatureGranularity = "per_feature",
        initial_decay: float = 1e-2,
        learning_rate: float = 0.05,
        decay_spread_penalty: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(nn.Linear(in_features, num_classes), num_classes, learning_rate=learning_rate, **kwargs)
        self.decay_spread_penalty = check_spread_penalty(type(self).__name__, decay_spread_penalty)
        self.feature_decay = FeatureDecay(in_features, decay_granularity, initial_decay)

    def training_loss(self, batch: Any) -> Tensor:
        """Cross-entropy plus the per-feature decay penalty on the linear weights."""
        inputs, targets = batch
        return nn.functional.cross_entropy(self(inputs), targets) + self.feature_decay(self.network.weight)

    def validation_loss(self, batch: Any) -> Tensor:
        """``L_V``: mean cross-entropy, plus ``κ · spread`` of the log coefficients when κ > 0."""
        loss = super().validation_loss(batch)
        return loss + self.decay_spread_penalty * self.feature_decay.spread() if self.decay_spread_penalty else loss

    def hyperparameters(self) -> list[nn.Parameter]:
        """The log decay coefficients, one per input feature (or one)."""
        return [self.feature_decay.log_coefficients]

    def hyperparameter_values(self) -> dict[str, Tensor]:
        """The decay coefficients ``c``: ``feature_decay`` (one per input feature, or one)."""
        return {"feature_decay": self.feature_decay.coefficients().detach().clone()}
