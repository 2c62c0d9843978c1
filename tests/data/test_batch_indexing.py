"""Whole-batch indexing yields exactly the batches the DataLoader would, and is used only where it is exact."""

import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_hypergrad.data import EpochShuffleSampler
from lightning_hypergrad.data.batch_indexing import BatchIndexingLoader, batch_indexing
from lightning_hypergrad.data.cycling import CyclingLoader


def tensors() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(23, 3, generator=generator), torch.randint(0, 5, (23,), generator=generator))


def batches(loader, passes: int) -> list:
    cycling = CyclingLoader(loader)
    return [next(cycling) for _ in range(passes * len(loader))]


def test_the_batches_equal_the_dataloaders_over_several_reshuffled_passes() -> None:
    def loader(drop_last: bool) -> DataLoader:
        return DataLoader(tensors(), batch_size=5, sampler=EpochShuffleSampler(23, seed=3), drop_last=drop_last)

    for drop_last in (False, True):
        wrapped = batch_indexing(loader(drop_last))
        assert isinstance(wrapped, BatchIndexingLoader)
        assert len(wrapped) == len(loader(drop_last))
        expected, found = batches(loader(drop_last), 3), batches(wrapped, 3)
        assert len(found) == len(expected)
        for mine, theirs in zip(found, expected):
            assert type(mine) is type(theirs) is list
            for a, b in zip(mine, theirs):
                assert a.dtype == b.dtype and torch.equal(a, b)
    # set_epoch reached the sampler: the passes differ
    first, second = batches(batch_indexing(loader(False)), 2)[:: len(loader(False))]
    assert not torch.equal(first[0], second[0])


def test_other_loaders_pass_through_unchanged() -> None:
    class Subclass(TensorDataset):
        def __getitem__(self, index):
            inputs, targets = super().__getitem__(index)
            return inputs * 2, targets

    dataset = tensors()
    unchanged = [
        DataLoader(dataset, batch_size=4, collate_fn=lambda items: items),
        DataLoader(Subclass(*dataset.tensors), batch_size=4),
        DataLoader(dataset, batch_size=None),
        DataLoader(dataset, batch_size=4, num_workers=1),
        [torch.zeros(2)],
    ]
    for loader in unchanged:
        assert batch_indexing(loader) is loader
