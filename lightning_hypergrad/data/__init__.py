"""Datasets and datamodules; the embedded default is scikit-learn's digits (no download)."""

from lightning_hypergrad.data.digits import DigitsDataModule, split_digits
from lightning_hypergrad.data.samplers import EpochShuffleSampler

__all__ = ["DigitsDataModule", "EpochShuffleSampler", "split_digits"]
