"""Example networks used by the ready tasks and configs; any ``nn.Module`` works in their place."""

from lightning_hypergrad.models.mlp import MLPClassifier

__all__ = ["MLPClassifier"]
