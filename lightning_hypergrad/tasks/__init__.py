"""Ready BilevelLightningModules used by the configs."""

from lightning_hypergrad.tasks.augmentation import AugmentationClassifier
from lightning_hypergrad.tasks.class_weighting import ClassWeightedClassifier
from lightning_hypergrad.tasks.classifier import ClassifierTask
from lightning_hypergrad.tasks.distillation import DistillationClassifier
from lightning_hypergrad.tasks.dropout import DropoutClassifier
from lightning_hypergrad.tasks.language_model import LSTMLanguageModel
from lightning_hypergrad.tasks.logistic_regression import FeatureDecayLogisticRegression
from lightning_hypergrad.tasks.reweighting import ReweightedClassifier
from lightning_hypergrad.tasks.weight_decay import WeightDecayClassifier

__all__ = [
    "AugmentationClassifier",
    "ClassWeightedClassifier",
    "ClassifierTask",
    "DistillationClassifier",
    "DropoutClassifier",
    "FeatureDecayLogisticRegression",
    "LSTMLanguageModel",
    "ReweightedClassifier",
    "WeightDecayClassifier",
]
