"""Ready hyperparameter families: modules whose parameters are hyperparameters."""

from lightning_hypergrad.hparams.weight_decay import WeightDecay

__all__ = ["WeightDecay"]
