"""The torchvision datamodules: splits and loaders on a stand-in dataset, and clear errors without the files."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from lightning_hypergrad.data import CIFAR10DataModule, CIFAR100DataModule, MNISTDataModule


class StandInMNIST(Dataset):
    """MNIST's constructor signature over a few generated PIL images."""

    def __init__(self, root, train=True, transform=None, download=False) -> None:
        self.size = 300 if train else 100
        self.offset = 0 if train else 10_000
        self.transform = transform

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        value = (index + self.offset) % 256
        image = Image.fromarray(torch.full((28, 28), value, dtype=torch.uint8).numpy())
        return self.transform(image), (index + self.offset) % 10


class StandInMNISTDataModule(MNISTDataModule):
    dataset_class = StandInMNIST


def test_the_training_set_splits_into_disjoint_train_and_validation() -> None:
    module = StandInMNISTDataModule(batch_size=32, hyper_batch_size=25, val_size=50, seed=3)
    module.setup("fit")
    assert (len(module.train_set), len(module.val_set), len(module.test_set)) == (250, 50, 100)
    assert not set(module.train_set.indices) & set(module.val_set.indices)
    images, labels = next(iter(module.train_dataloader()))
    assert images.shape == (32, 1, 28, 28) and labels.shape == (32,)
    hyper_images, _ = next(iter(module.hyper_dataloader()))
    assert hyper_images.shape[0] == 25
    assert len(module.val_dataloader().dataset) == 50 and len(module.test_dataloader().dataset) == 100


def test_the_split_is_fixed_by_the_seed() -> None:
    first, second, other = (StandInMNISTDataModule(val_size=50, seed=seed) for seed in (1, 1, 2))
    for module in (first, second, other):
        module.setup("fit")
    assert first.val_set.indices == second.val_set.indices != other.val_set.indices


def test_images_are_normalised_with_the_dataset_statistics() -> None:
    module = StandInMNISTDataModule(val_size=50)
    module.setup("fit")
    image, _ = module.train_set.dataset[0]  # index 0 is a black image
    torch.testing.assert_close(image, torch.full((1, 28, 28), (0.0 - 0.1307) / 0.3081))


@pytest.mark.parametrize("module_class", [MNISTDataModule, CIFAR10DataModule, CIFAR100DataModule])
def test_missing_files_without_download_give_a_clear_error(module_class, tmp_path) -> None:
    name = module_class.__name__.removesuffix("DataModule")
    module = module_class(root=str(tmp_path), download=False)
    module.prepare_data()  # does nothing without download=True
    with pytest.raises(FileNotFoundError, match=rf"{name} was not found under '{tmp_path}'.*Pass download=True"):
        module.setup("fit")


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"MNISTDataModule\(batch_size=0\): batch_size must be an integer >= 1"):
        MNISTDataModule(batch_size=0)
    module = StandInMNISTDataModule(val_size=300)
    with pytest.raises(ValueError, match=r"val_size=300\): must be below the 300 training images"):
        module.setup("fit")
