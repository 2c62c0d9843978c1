"""Example networks."""

from lightning_hypergrad.models.mlp import MLP

__all__ = ["MLP"]
