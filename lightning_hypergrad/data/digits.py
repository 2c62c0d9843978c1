"""scikit-learn's bundled handwritten digits (1,797 8×8 images): the embedded default data, no download."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from lightning.pytorch import LightningDataModule
from sklearn.datasets import load_digits
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_hypergrad.arguments import check_count
from lightning_hypergrad.data.indexed import IndexedDataset
from lightning_hypergrad.data.resumable import ResumableDataLoader
from lightning_hypergrad.data.samplers import EpochShuffleSampler
from lightning_hypergrad.data.splits import shuffle_and_cut, split_off

NUM_CLASSES = 10


@dataclass(frozen=True)
class DigitsSplit:
    """Disjoint train / validation / test tensors: inputs are flattened 64-pixel images scaled to [0, 1].

    Attributes:
        train_inputs: training images, ``(n_train, 64)`` float32.
        train_targets: their digit labels 0–9, ``(n_train,)`` int64.
        val_inputs: validation images, ``(n_val, 64)``; the hyperparameters are tuned on these.
        val_targets: their labels, ``(n_val,)``.
        test_inputs: test images, ``(n_test, 64)``, never seen while training or tuning.
        test_targets: their labels, ``(n_test,)``.
    """

    train_inputs: Tensor
    train_targets: Tensor
    val_inputs: Tensor
    val_targets: Tensor
    test_inputs: Tensor
    test_targets: Tensor


def split_digits(val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0) -> DigitsSplit:
    """Shuffle the digits with ``seed`` and cut them into train / validation / test by the given fractions."""
    images, labels = load_digits(return_X_y=True)
    inputs = torch.as_tensor(images, dtype=torch.float32) / 16.0
    targets = torch.as_tensor(labels, dtype=torch.int64)
    train, val, test = shuffle_and_cut(inputs, targets, val_fraction, test_fraction, seed)
    return DigitsSplit(*train, *val, *test)


def flip_labels(targets: Tensor, fraction: float, num_classes: int, seed: int) -> tuple[Tensor, Tensor]:
    """Give ``round(fraction · n)`` examples, chosen with ``seed``, a wrong class drawn uniformly from the others.

    Returns the noisy targets and a boolean mask of the flipped examples. Adding an offset in ``1 … C−1`` modulo
    ``C`` guarantees every flipped label differs from the true one.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
        raise ValueError(f"label_noise={fraction!r}: the fraction of flipped labels must lie in [0, 1].")
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(targets), generator=generator)[: round(fraction * len(targets))]
    flipped = torch.zeros(len(targets), dtype=torch.bool)
    flipped[chosen] = True
    offsets = torch.randint(1, num_classes, (len(chosen),), generator=generator)
    noisy = targets.clone()
    noisy[chosen] = (targets[chosen] + offsets) % num_classes
    return noisy, flipped


def imbalance_classes(targets: Tensor, ratio: float, num_classes: int, seed: int) -> Tensor:
    """Indices of a class-imbalanced subset of ``targets``: class ``k`` keeps ``ratio^(−k/(K−1))`` of its examples.

    Class 0 keeps all of them, class ``K − 1`` a ``1/ratio`` share (at least one), the classes between a
    geometrically falling share (the long-tailed splits of the class-imbalance literature); which examples stay is
    drawn with ``seed``. ``ratio = 1`` keeps everything. The indices come back in their original order.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 1 <= ratio < math.inf:
        raise ValueError(f"imbalance_classes(ratio={ratio!r}): ratio must be a finite number >= 1.")
    generator = torch.Generator().manual_seed(seed)
    kept = []
    for label in range(num_classes):
        members = (targets == label).nonzero().flatten()
        share = ratio ** (-label / (num_classes - 1))
        count = max(1, round(share * len(members))) if len(members) else 0
        kept.append(members[torch.randperm(len(members), generator=generator)[:count]])
    return torch.cat(kept).sort().values


class DigitsDataModule(LightningDataModule):
    """scikit-learn's digits as train / validation / test loaders, plus the hyperstep's ``hyper_dataloader``.

    The split is fixed by ``seed``; training batches are reshuffled every epoch in an order set by
    ``(seed, epoch)`` so resumed runs are exact. ``hyper_dataloader`` draws from the validation split.

    With ``label_noise > 0`` that share of the TRAINING labels is flipped to a wrong class (validation and test
    stay clean); its ``flipped`` attribute marks them, and ``clean_train_targets`` keeps the true labels.
    With ``class_imbalance > 1`` the TRAINING split is made long-tailed (:func:`~lightning_hypergrad.data.digits.imbalance_classes`: class 9 keeps
    a ``1/class_imbalance`` share of its examples, class 0 all); validation and test stay as drawn, about
    balanced, so a validation loss tuned on them asks for every class alike.

    Args:
        batch_size: training batch size.
        hyper_batch_size: validation batch size for hypersteps; ``None`` uses the whole validation split.
        eval_batch_size: batch size of the validation and test loaders.
        val_fraction: share of the 1,797 images held out for validation.
        test_fraction: share held out for testing.
        seed: fixes the split, the shuffling and which labels are flipped.
        label_noise: fraction of training labels flipped to a wrong class, in ``[0, 1]``.
        indexed: training batches yield ``(indices, inputs, targets)`` (see :class:`IndexedDataset`), for
            per-example hyperparameters; validation and test batches stay ``(inputs, targets)``.
        class_imbalance: the most to the least frequent class's share of the training split kept, ``>= 1``.
        held_out_fraction: share of the validation split kept out of the hypersteps, in ``[0, 1)``: with it
            ``val_dataloader`` and ``hyper_dataloader`` serve the rest, ``held_out_dataloader`` that share (for
            :class:`~lightning_hypergrad.lightning.held_out.HeldOutGuard`).
    """

    def __init__(
        self,
        batch_size: int = 64,
        hyper_batch_size: int | None = None,
        eval_batch_size: int = 512,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        label_noise: float = 0.0,
        indexed: bool = False,
        class_imbalance: float = 1.0,
        held_out_fraction: float = 0.0,
    ) -> None:
        super().__init__()
        check_count("DigitsDataModule", "batch_size", batch_size, minimum=1)
        check_count("DigitsDataModule", "eval_batch_size", eval_batch_size, minimum=1)
        if hyper_batch_size is not None:
            check_count("DigitsDataModule", "hyper_batch_size", hyper_batch_size, minimum=1)
        self.batch_size = batch_size
        self.hyper_batch_size = hyper_batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.indexed = bool(indexed)
        split = split_digits(val_fraction, test_fraction, seed)
        if class_imbalance != 1:
            kept = imbalance_classes(split.train_targets, class_imbalance, NUM_CLASSES, seed)
            split = replace(split, train_inputs=split.train_inputs[kept], train_targets=split.train_targets[kept])
        self.clean_train_targets = split.train_targets
        noisy, self.flipped = flip_labels(split.train_targets, label_noise, NUM_CLASSES, seed)
        self.split = replace(split, train_targets=noisy)
        self.held_out: tuple[Tensor, Tensor] | None = None
        if held_out_fraction:
            tuned, self.held_out = split_off(split.val_inputs, split.val_targets, held_out_fraction, "DigitsDataModule")
            self.split = replace(self.split, val_inputs=tuned[0], val_targets=tuned[1])

    @property
    def train_size(self) -> int:
        """Examples in the training split (the size per-example hyperparameters need)."""
        return len(self.split.train_targets)

    @property
    def train_class_counts(self) -> Tensor:
        """Training examples per class, ``(10,)`` (what inverse-frequency weights are computed from)."""
        return torch.bincount(self.split.train_targets, minlength=NUM_CLASSES)

    def train_dataloader(self) -> DataLoader:
        dataset: Dataset = TensorDataset(self.split.train_inputs, self.split.train_targets)
        if self.indexed:
            dataset = IndexedDataset(dataset)
        sampler = EpochShuffleSampler(len(dataset), self.seed)
        return ResumableDataLoader(dataset, batch_size=self.batch_size, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.split.val_inputs, self.split.val_targets), batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(
            TensorDataset(self.split.test_inputs, self.split.test_targets), batch_size=self.eval_batch_size
        )

    def held_out_dataloader(self) -> DataLoader:
        """The held-out share of the validation split (``held_out_fraction``), which hypersteps never see."""
        if self.held_out is None:
            raise ValueError("DigitsDataModule(held_out_fraction=0.0) holds nothing out; set held_out_fraction > 0.")
        return DataLoader(TensorDataset(*self.held_out), batch_size=self.eval_batch_size)

    def hyper_dataloader(self) -> DataLoader:
        """The validation split for the hyperstep, reshuffled per pass, in batches of ``hyper_batch_size``."""
        dataset = TensorDataset(self.split.val_inputs, self.split.val_targets)
        batch_size = self.hyper_batch_size or len(dataset)
        return DataLoader(dataset, batch_size=batch_size, sampler=EpochShuffleSampler(len(dataset), self.seed + 1))
