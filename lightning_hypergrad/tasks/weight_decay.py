"""Classification with learnable weight decay: the task behind the digits configs."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_hypergrad.hparams.weight_decay import Granularity, Parametrization, WeightDecay, check_spread_penalty
from lightning_hypergrad.tasks.classifier import ClassifierTask


class WeightDecayClassifier(ClassifierTask):
    """Cross-entropy classification with ``½ Σ c w²`` weight decay whose coefficients are hyperparameters.

    ``L_T = CE(train) + ½ Σ_i c_i w_i²`` and ``L_V = CE(validation) + κ · spread(log c)``: without the spread
    penalty κ (the default 0) the validation loss does not see the decay, so it moves only through the weights
    (the implicit term).

    Args:
        network, num_classes: see :class:`ClassifierTask`.
        decay_granularity: ``"global"``, ``"per_tensor"`` or ``"per_weight"`` (see :class:`~lightning_hypergrad.hparams.WeightDecay`).
        decay_parametrization: ``"log"`` or ``"softplus"``.
        initial_decay: every coefficient's starting value.
        decay_spread_penalty: κ ``>= 0``, the weight of a prior pulling the coefficients towards their geometric
            mean (:func:`~lightning_hypergrad.hparams.weight_decay.log_spread`); for many coefficients
            (``"per_weight"``), against fitting the validation split. Validation metrics never include it.
        **kwargs: ``optimizer``, ``learning_rate``, clipping and accumulation: see :class:`ClassifierTask`.
    """

    def __init__(
        self,
        network: nn.Module | None = None,
        num_classes: int = 10,
        decay_granularity: Granularity = "per_weight",
        decay_parametrization: Parametrization = "log",
        initial_decay: float = 1e-3,
        decay_spread_penalty: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(network, num_classes, **kwargs)
        self.decay_spread_penalty = check_spread_penalty(type(self).__name__, decay_spread_penalty)
        self.weight_decay = WeightDecay(
            [weight.shape for weight in self.network.parameters()],
            decay_granularity,
            decay_parametrization,
            initial_decay,
        )

    def training_loss(self, batch: Any) -> Tensor:
        """``L_T``: mean cross-entropy of an ``(inputs, targets)`` batch plus the learnable decay penalty."""
        inputs, targets = batch
        data_loss = nn.functional.cross_entropy(self(inputs), targets)
        return data_loss + self.weight_decay(list(self.network.parameters()))

    def validation_loss(self, batch: Any) -> Tensor:
        """``L_V``: mean cross-entropy, plus ``κ · spread`` of the log coefficients when κ > 0."""
        loss = super().validation_loss(batch)
        return loss + self.decay_spread_penalty * self.weight_decay.spread() if self.decay_spread_penalty else loss

    def hyperparameters(self) -> list[nn.Parameter]:
        """The decay's raw parameters θ (``weight_decay.raw``), one per coefficient group."""
        return list(self.weight_decay.parameters())

    def hyperparameter_values(self) -> dict[str, Tensor]:
        """The decay coefficients ``c``: ``weight_decay`` (global) or ``weight_decay/<weight name>``."""
        coefficients = [c.detach().clone() for c in self.weight_decay.coefficients()]
        if self.weight_decay.granularity == "global":
            return {"weight_decay": coefficients[0]}
        names = [name for name, _ in self.network.named_parameters()]
        return {f"weight_decay/{name}": c for name, c in zip(names, coefficients)}
