"""The digits label-noise option: a fixed share of training labels flipped to a wrong class, the rest untouched."""

from __future__ import annotations

import pytest
import torch

from lightning_hypergrad.data import DigitsDataModule, flip_labels


def test_exactly_the_requested_share_is_flipped_and_every_flip_is_wrong() -> None:
    clean = DigitsDataModule(seed=2)
    noisy = DigitsDataModule(seed=2, label_noise=0.3)
    assert noisy.train_size == 1079 and int(noisy.flipped.sum()) == round(0.3 * 1079)
    assert torch.equal(noisy.clean_train_targets, clean.split.train_targets)
    changed = noisy.split.train_targets != clean.split.train_targets
    assert torch.equal(changed, noisy.flipped)  # flipped means wrong, unflipped means untouched
    assert torch.equal(noisy.split.train_inputs, clean.split.train_inputs)
    for split in ("val", "test"):  # validation and test stay clean
        assert torch.equal(getattr(noisy.split, f"{split}_targets"), getattr(clean.split, f"{split}_targets"))
    # The wrong classes are spread over all ten, not one fixed offset.
    offsets = (noisy.split.train_targets - clean.split.train_targets)[noisy.flipped] % 10
    assert set(offsets.tolist()) == set(range(1, 10))
    assert torch.equal(DigitsDataModule(seed=2, label_noise=0.3).flipped, noisy.flipped)
    assert not clean.flipped.any()


def test_indexed_training_batches_carry_each_examples_position() -> None:
    module = DigitsDataModule(label_noise=0.5, indexed=True, batch_size=100)
    indices, inputs, targets = next(iter(module.train_dataloader()))
    assert torch.equal(inputs, module.split.train_inputs[indices])
    assert torch.equal(targets, module.split.train_targets[indices])
    assert len(next(iter(module.val_dataloader()))) == 2


@pytest.mark.parametrize("fraction", [-0.1, 1.5, True])
def test_bad_noise_levels_are_refused(fraction) -> None:
    with pytest.raises(
        ValueError, match=rf"label_noise={fraction!r}: the fraction of flipped labels must lie in \[0, 1\]"
    ):
        flip_labels(torch.zeros(10, dtype=torch.int64), fraction, 10, seed=0)
