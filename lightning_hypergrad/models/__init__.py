"""Example networks."""

from lightning_hypergrad.models.mlp import MLPClassifier

__all__ = ["MLPClassifier"]
