"""MNIST, CIFAR-10 and CIFAR-100 through torchvision, each with a validation split and a hyper_dataloader.

Nothing downloads unless ``download=True``; without it, missing files raise an error that says where they
were looked for and how to get them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets, transforms

from lightning_hypergrad.arguments import check_count
from lightning_hypergrad.data.resumable import ResumableDataLoader
from lightning_hypergrad.data.samplers import EpochShuffleSampler


class TorchvisionDataModule(LightningDataModule):
    """A torchvision classification dataset: its training set split into train / validation, plus its test set.

    Args:
        root: directory holding (or receiving) the dataset files.
        download: fetch the files if missing (needs internet); otherwise a missing dataset is an error.
        batch_size: training batch size.
        hyper_batch_size: validation batch size for hypersteps.
        eval_batch_size: batch size of the validation and test loaders.
        val_size: images moved from the training set to the validation split.
        seed: fixes the split and the shuffling.
        num_workers: DataLoader worker processes.
    """

    dataset_class: ClassVar[Any]
    mean: ClassVar[tuple[float, ...]]
    std: ClassVar[tuple[float, ...]]

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        batch_size: int = 128,
        hyper_batch_size: int = 256,
        eval_batch_size: int = 512,
        val_size: int = 5000,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        for name, value, minimum in (
            ("batch_size", batch_size, 1),
            ("hyper_batch_size", hyper_batch_size, 1),
            ("eval_batch_size", eval_batch_size, 1),
            ("val_size", val_size, 1),
            ("num_workers", num_workers, 0),
        ):
            check_count(owner, name, value, minimum)
        self.root = root
        self.download = download
        self.batch_size = batch_size
        self.hyper_batch_size = hyper_batch_size
        self.eval_batch_size = eval_batch_size
        self.val_size = val_size
        self.seed = seed
        self.num_workers = num_workers
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def prepare_data(self) -> None:
        if not self.download:
            return
        name = type(self).__name__.removesuffix("DataModule")
        for train in (True, False):
            try:
                self.dataset_class(self.root, train=train, download=True)
            except (OSError, RuntimeError) as error:  # URLError is an OSError
                raise RuntimeError(
                    f"Could not download {name} to {self.root!r}: {error}. Without internet, copy the dataset files "
                    "there and use download=False."
                ) from error

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(self.mean, self.std)])
        full_train = self._load(train=True, transform=transform)
        if self.val_size >= len(full_train):
            raise ValueError(
                f"{type(self).__name__}(val_size={self.val_size}): must be below the {len(full_train)} training images."
            )
        order = torch.randperm(len(full_train), generator=torch.Generator().manual_seed(self.seed)).tolist()
        self.val_set = Subset(full_train, order[: self.val_size])
        self.train_set = Subset(full_train, order[self.val_size :])
        self.test_set = self._load(train=False, transform=transform)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        sampler = EpochShuffleSampler(len(self.train_set), self.seed)
        return ResumableDataLoader(self.train_set, self.batch_size, sampler=sampler, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None
        return DataLoader(self.val_set, self.eval_batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        assert self.test_set is not None
        return DataLoader(self.test_set, self.eval_batch_size, num_workers=self.num_workers)

    def hyper_dataloader(self) -> DataLoader:
        """The validation split for the hyperstep, reshuffled per pass, in batches of ``hyper_batch_size``."""
        assert self.val_set is not None
        sampler = EpochShuffleSampler(len(self.val_set), self.seed + 1)
        return DataLoader(self.val_set, self.hyper_batch_size, sampler=sampler, num_workers=self.num_workers)

    def _load(self, train: bool, transform: Any) -> Dataset:
        try:
            return self.dataset_class(self.root, train=train, transform=transform, download=False)
        except RuntimeError as error:
            name = type(self).__name__.removesuffix("DataModule")
            raise FileNotFoundError(
                f"{name} was not found under {self.root!r} ({error}). Pass download=True (in YAML: "
                "data.init_args.download: true) to fetch it, or set root to a directory that holds it."
            ) from error


class MNISTDataModule(TorchvisionDataModule):
    """MNIST (60,000 training and 10,000 test 28×28 digits); see :class:`TorchvisionDataModule`."""

    dataset_class = datasets.MNIST
    mean, std = (0.1307,), (0.3081,)


class CIFAR10DataModule(TorchvisionDataModule):
    """CIFAR-10 (50,000 training and 10,000 test 32×32 colour images, 10 classes)."""

    dataset_class = datasets.CIFAR10
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class CIFAR100DataModule(TorchvisionDataModule):
    """CIFAR-100 (50,000 training and 10,000 test 32×32 colour images, 100 classes)."""

    dataset_class = datasets.CIFAR100
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
