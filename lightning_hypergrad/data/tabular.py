"""scikit-learn's bundled tabular classification datasets (no download), standardised, in fixed seeded splits."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
from lightning.pytorch import LightningDataModule
from sklearn import datasets
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lightning_hypergrad.arguments import check_choice, check_count
from lightning_hypergrad.data.resumable import ResumableDataLoader
from lightning_hypergrad.data.samplers import EpochShuffleSampler
from lightning_hypergrad.data.splits import shuffle_and_cut, split_off

TabularName = Literal["breast_cancer", "wine", "iris"]
LOADERS = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine, "iris": datasets.load_iris}


@dataclass(frozen=True)
class TabularSplit:
    """Disjoint train / validation / test tensors, features standardised with the training split's statistics.

    Attributes:
        train_inputs, val_inputs, test_inputs: float32 feature matrices, one row per example.
        train_targets, val_targets, test_targets: int64 class labels.
        num_classes: the number of classes in the dataset.
    """

    train_inputs: Tensor
    train_targets: Tensor
    val_inputs: Tensor
    val_targets: Tensor
    test_inputs: Tensor
    test_targets: Tensor
    num_classes: int


def split_tabular(
    name: TabularName = "breast_cancer", val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0
) -> TabularSplit:
    """Shuffle a bundled dataset with ``seed``, cut it into train / validation / test and standardise it.

    Each feature is shifted and scaled by the mean and standard deviation of the training split alone (a
    constant feature keeps scale 1), so no statistic leaks from validation or test data into training.
    """
    check_choice("split_tabular", "name", name, tuple(LOADERS))
    features, labels = LOADERS[name](return_X_y=True)
    inputs = torch.as_tensor(features, dtype=torch.float32)
    targets = torch.as_tensor(labels, dtype=torch.int64)
    (train_inputs, train_targets), val, test = shuffle_and_cut(
        inputs, targets, val_fraction, test_fraction, seed, owner="split_tabular"
    )
    mean = train_inputs.mean(0)
    scale = train_inputs.std(0)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))

    def standardised(split: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return (split[0] - mean) / scale, split[1]

    return TabularSplit(
        *standardised((train_inputs, train_targets)),
        *standardised(val),
        *standardised(test),
        num_classes=int(targets.max()) + 1,
    )


class TabularDataModule(LightningDataModule):
    """A scikit-learn bundled classification dataset as train / validation / test loaders, plus ``hyper_dataloader``.

    Small tabular problems are usually trained full-batch (``batch_size=None``): every weight step then sees the
    whole training split, the inner problem is deterministic and the implicit hypergradient is exact up to the
    solver. The split is fixed by ``seed``; features are standardised with training-split statistics only.

    Args:
        name: ``"breast_cancer"`` (569 × 30, 2 classes), ``"wine"`` (178 × 13, 3) or ``"iris"`` (150 × 4, 3).
        batch_size: training batch size; ``None`` means the whole training split in one batch.
        hyper_batch_size: validation batch size for hypersteps; ``None`` uses the whole validation split.
        val_fraction: share of the examples held out for validation.
        test_fraction: share held out for testing.
        seed: fixes the split and the shuffling.
        held_out_fraction: share of the validation split kept out of the hypersteps, in ``[0, 1)``: with it
            ``val_dataloader`` and ``hyper_dataloader`` serve the rest, ``held_out_dataloader`` that share (for
            :class:`~lightning_hypergrad.lightning.held_out.HeldOutGuard`).
    """

    def __init__(
        self,
        name: TabularName = "breast_cancer",
        batch_size: int | None = None,
        hyper_batch_size: int | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        held_out_fraction: float = 0.0,
    ) -> None:
        super().__init__()
        for argument, value in (("batch_size", batch_size), ("hyper_batch_size", hyper_batch_size)):
            if value is not None:
                check_count("TabularDataModule", argument, value, minimum=1)
        self.name = name
        self.batch_size = batch_size
        self.hyper_batch_size = hyper_batch_size
        self.seed = seed
        self.split = split_tabular(name, val_fraction, test_fraction, seed)
        self.held_out: tuple[Tensor, Tensor] | None = None
        if held_out_fraction:
            tuned, self.held_out = split_off(
                self.split.val_inputs, self.split.val_targets, held_out_fraction, "TabularDataModule"
            )
            self.split = replace(self.split, val_inputs=tuned[0], val_targets=tuned[1])

    @property
    def num_features(self) -> int:
        """Columns of one input."""
        return self.split.train_inputs.shape[1]

    def train_dataloader(self) -> DataLoader:
        dataset = TensorDataset(self.split.train_inputs, self.split.train_targets)
        sampler = EpochShuffleSampler(len(dataset), self.seed)
        return ResumableDataLoader(dataset, batch_size=self.batch_size or len(dataset), sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return _whole(self.split.val_inputs, self.split.val_targets)

    def test_dataloader(self) -> DataLoader:
        return _whole(self.split.test_inputs, self.split.test_targets)

    def held_out_dataloader(self) -> DataLoader:
        """The held-out share of the validation split (``held_out_fraction``), which hypersteps never see."""
        if self.held_out is None:
            raise ValueError("TabularDataModule(held_out_fraction=0.0) holds nothing out; set held_out_fraction > 0.")
        return _whole(*self.held_out)

    def hyper_dataloader(self) -> DataLoader:
        """Validation batches for hypersteps, reshuffled each pass (the whole split when full-batch)."""
        dataset = TensorDataset(self.split.val_inputs, self.split.val_targets)
        batch_size = self.hyper_batch_size or len(dataset)
        return DataLoader(dataset, batch_size=batch_size, sampler=EpochShuffleSampler(len(dataset), self.seed + 1))


def _whole(inputs: Tensor, targets: Tensor) -> DataLoader:
    return DataLoader(TensorDataset(inputs, targets), batch_size=len(inputs))
