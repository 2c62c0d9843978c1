"""Datasets and datamodules; the embedded default is scikit-learn's digits (no download)."""

from lightning_hypergrad.data.digits import DigitsDataModule, flip_labels, split_digits
from lightning_hypergrad.data.image_classification import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    MNISTDataModule,
    TorchvisionDataModule,
)
from lightning_hypergrad.data.indexed import IndexedDataset
from lightning_hypergrad.data.resumable import ResumableDataLoader
from lightning_hypergrad.data.samplers import EpochShuffleSampler
from lightning_hypergrad.data.tabular import TabularDataModule, split_tabular
from lightning_hypergrad.data.text import TextDataModule, synthetic_corpus

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DigitsDataModule",
    "EpochShuffleSampler",
    "IndexedDataset",
    "MNISTDataModule",
    "ResumableDataLoader",
    "TabularDataModule",
    "TextDataModule",
    "TorchvisionDataModule",
    "flip_labels",
    "split_digits",
    "split_tabular",
    "synthetic_corpus",
]
