"""Ready BilevelLightningModules used by the configs."""

from lightning_hypergrad.tasks.classification import WeightDecayClassifier

__all__ = ["WeightDecayClassifier"]
