"""ResumableDataLoader: a pass resumed from its state continues with the batches an uninterrupted pass yields."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from lightning_hypergrad.data import EpochShuffleSampler, ResumableDataLoader
from tests.feature_helpers import StreamOfBatches


def shuffled(size: int = 10, batch_size: int = 3) -> ResumableDataLoader:
    dataset = TensorDataset(torch.arange(size))
    return ResumableDataLoader(dataset, batch_size=batch_size, sampler=EpochShuffleSampler(size, seed=0))


def epoch(loader: ResumableDataLoader, number: int) -> list[list[int]]:
    loader.sampler.set_epoch(number)
    return [batch.tolist() for (batch,) in loader]


@pytest.mark.parametrize("handed_out", [0, 1, 3])
def test_a_loaded_state_skips_the_batches_already_handed_out_in_that_pass(handed_out: int) -> None:
    straight = shuffled()
    expected = epoch(straight, 1)  # 4 batches: 3, 3, 3, 1
    interrupted = shuffled()
    interrupted.sampler.set_epoch(1)
    batches = iter(interrupted)
    for _ in range(handed_out):
        next(batches)
    state = interrupted.state_dict()
    assert state == {"batches_handed_out": handed_out}
    resumed = shuffled()
    resumed.load_state_dict(state)
    batches = iter(resumed)  # Lightning iterates before it sets the epoch; the pass starts at the first draw
    resumed.sampler.set_epoch(1)
    assert [batch.tolist() for (batch,) in batches] == expected[handed_out:]
    assert resumed.state_dict() == {"batches_handed_out": 0}  # a complete pass
    assert epoch(resumed, 2) == epoch(straight, 2)  # the next pass is whole


def test_an_iterable_dataset_is_refused() -> None:
    with pytest.raises(ValueError, match=r"ResumableDataLoader\(dataset=StreamOfBatches\): the dataset is an Iter"):
        ResumableDataLoader(StreamOfBatches(TensorDataset(torch.zeros(4), torch.zeros(4)), 2), batch_size=None)
