"""The embedded digits data, the epoch-seeded sampler and the cycling loader behind hypersteps."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_hypergrad.data import DigitsDataModule, EpochShuffleSampler, split_digits
from lightning_hypergrad.data.cycling import CyclingLoader


def test_split_covers_all_digits_once_and_is_fixed_by_the_seed() -> None:
    split = split_digits(seed=0)
    sizes = (len(split.train_inputs), len(split.val_inputs), len(split.test_inputs))
    assert sizes == (1079, 359, 359) and sum(sizes) == 1797
    assert (
        split.train_inputs.shape[1] == 64
        and 0 <= float(split.train_inputs.min()) <= float(split.train_inputs.max()) <= 1
    )
    # Every image lands in exactly one split: the multiset of rows equals scikit-learn's.
    from sklearn.datasets import load_digits

    images, _ = load_digits(return_X_y=True)
    rows = torch.cat([split.train_inputs, split.val_inputs, split.test_inputs]) * 16
    assert sorted(map(tuple, rows.round().int().tolist())) == sorted(map(tuple, torch.as_tensor(images).int().tolist()))
    again, other = split_digits(seed=0), split_digits(seed=1)
    assert torch.equal(split.val_targets, again.val_targets) and not torch.equal(split.val_targets, other.val_targets)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"val_fraction": 0.0}, r"val_fraction=0.0: must lie strictly between 0 and 1"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, r"val_fraction \+ test_fraction = 1.1 leaves no training data"),
    ],
)
def test_bad_fractions_are_refused(arguments, message) -> None:
    with pytest.raises(ValueError, match=message):
        split_digits(**arguments)


def test_hyper_loader_defaults_to_the_whole_validation_split() -> None:
    module = DigitsDataModule()
    ((inputs, _),) = list(module.hyper_dataloader())
    assert inputs.shape == (359, 64)
    assert len(list(DigitsDataModule(hyper_batch_size=100).hyper_dataloader())) == 4


def test_epoch_shuffle_depends_only_on_seed_and_epoch() -> None:
    sampler = EpochShuffleSampler(10, seed=5)
    sampler.set_epoch(3)
    third = list(sampler)
    sampler.set_epoch(0)
    first = list(sampler)
    replay = EpochShuffleSampler(10, seed=5)
    replay.set_epoch(3)
    assert list(replay) == third != first
    assert sorted(third) == list(range(10))


def cycling_over(size: int, batch_size: int) -> CyclingLoader:
    dataset = TensorDataset(torch.arange(size))
    return CyclingLoader(DataLoader(dataset, batch_size, sampler=EpochShuffleSampler(size, seed=0)))


def test_cycling_loader_reshuffles_each_pass_and_never_stops() -> None:
    loader = cycling_over(6, 4)
    batches = [next(loader)[0] for _ in range(6)]  # three passes of two batches
    passes = [torch.cat(batches[i : i + 2]).tolist() for i in (0, 2, 4)]
    assert all(sorted(p) == list(range(6)) for p in passes)
    assert passes[0] != passes[1]
    assert loader.drawn == 6


@pytest.mark.parametrize("drawn", [0, 1, 2, 5, 7])
def test_cycling_loader_replays_its_position(drawn: int) -> None:
    straight = cycling_over(6, 4)
    for _ in range(drawn):
        next(straight)
    resumed = cycling_over(6, 4)
    resumed.skip_to(drawn)
    assert resumed.drawn == drawn
    for _ in range(5):
        assert torch.equal(next(resumed)[0], next(straight)[0])


@pytest.mark.parametrize("drawn", [1, 2, 5])
def test_a_closed_cycling_loader_continues_at_its_position(drawn: int) -> None:
    straight, closed = cycling_over(6, 4), cycling_over(6, 4)
    for _ in range(drawn):
        next(straight), next(closed)
    closed.close()
    assert closed.drawn == drawn
    for _ in range(5):
        assert torch.equal(next(closed)[0], next(straight)[0])


class Unsized:
    def __iter__(self):
        return iter([])


def test_an_empty_loader_is_reported() -> None:
    with pytest.raises(ValueError, match="has no batches"):  # a sized one when the stream starts
        CyclingLoader(DataLoader(TensorDataset(torch.zeros(0)), batch_size=2))
    loader = CyclingLoader(Unsized())  # one without a length at its first draw
    with pytest.raises(ValueError, match="The dataloader yielded no batches"):
        next(loader)


def test_a_long_tailed_training_split_keeps_a_geometric_share_of_each_class() -> None:
    balanced, tailed = DigitsDataModule(seed=3), DigitsDataModule(seed=3, class_imbalance=10.0)
    full = balanced.train_class_counts
    shares = [10.0 ** (-k / 9) for k in range(10)]
    assert tailed.train_class_counts.tolist() == [max(1, round(s * int(n))) for s, n in zip(shares, full)]
    assert torch.equal(tailed.split.val_targets, balanced.split.val_targets)  # validation and test untouched
    assert torch.equal(tailed.split.test_inputs, balanced.split.test_inputs)
    kept = tailed.split.train_inputs
    assert all(any(torch.equal(row, other) for other in balanced.split.train_inputs) for row in kept[:20])


def test_a_class_imbalance_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"imbalance_classes\(ratio=0.5\): ratio must be a finite number >= 1"):
        DigitsDataModule(class_imbalance=0.5)
