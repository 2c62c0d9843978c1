"""Ready hyperparameter families: modules whose parameters are hyperparameters.

Register one on your BilevelLightningModule and return its ``parameters()`` from ``hyperparameters()``.
"""

from lightning_hypergrad.hparams.augmentation import LearnedAugmentation
from lightning_hypergrad.hparams.class_weights import ClassWeights
from lightning_hypergrad.hparams.distilled_data import DistilledData
from lightning_hypergrad.hparams.dropout import ConcreteDropout
from lightning_hypergrad.hparams.example_weights import ExampleWeights
from lightning_hypergrad.hparams.feature_decay import FeatureDecay
from lightning_hypergrad.hparams.weight_decay import WeightDecay

__all__ = [
    "ClassWeights",
    "ConcreteDropout",
    "DistilledData",
    "ExampleWeights",
    "FeatureDecay",
    "LearnedAugmentation",
    "WeightDecay",
]
