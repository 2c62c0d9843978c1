"""scikit-learn's bundled tabular datasets: fixed splits, training-split standardisation, full-batch loaders."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_wine

from lightning_hypergrad.data import TabularDataModule, split_tabular


def test_split_covers_every_example_once_and_is_fixed_by_the_seed() -> None:
    split = split_tabular("breast_cancer", seed=0)
    sizes = (len(split.train_inputs), len(split.val_inputs), len(split.test_inputs))
    assert sizes == (341, 114, 114) and split.num_classes == 2 and split.train_inputs.shape[1] == 30
    again, other = split_tabular("breast_cancer", seed=0), split_tabular("breast_cancer", seed=1)
    assert torch.equal(split.val_inputs, again.val_inputs) and not torch.equal(split.val_targets, other.val_targets)
    labels = torch.cat([split.train_targets, split.val_targets, split.test_targets])
    assert torch.bincount(labels).tolist() == torch.bincount(torch.as_tensor(load_breast_cancer().target)).tolist()


def test_features_are_standardised_with_training_statistics_only() -> None:
    split = split_tabular("wine", seed=3)
    assert split.train_inputs.mean(0).abs().max() < 1e-5
    assert (split.train_inputs.std(0) - 1).abs().max() < 1e-5
    # Undo the standardisation with the training split's statistics: every raw row must be a row of the dataset.
    raw = torch.as_tensor(load_wine().data, dtype=torch.float64)
    order = torch.randperm(len(raw), generator=torch.Generator().manual_seed(3))
    train_raw = raw[order][: len(split.train_inputs)]
    mean, scale = train_raw.mean(0), train_raw.std(0)
    restored = split.test_inputs.double() * scale + mean
    assert torch.allclose(restored, raw[order][-len(split.test_inputs) :], atol=1e-3, rtol=1e-5)
    assert split.test_inputs.mean(0).abs().max() > 1e-3  # validation and test are not re-centred on themselves


def test_full_batch_loaders() -> None:
    module = TabularDataModule("iris", seed=0)
    ((inputs, targets),) = list(module.train_dataloader())
    assert inputs.shape == (90, 4) and module.num_features == 4
    assert sorted(targets.tolist()) == sorted(module.split.train_targets.tolist())
    ((val_inputs, _),) = list(module.hyper_dataloader())
    assert val_inputs.shape == (30, 4)
    assert len(list(TabularDataModule("iris", batch_size=32).train_dataloader())) == 3


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"name": "titanic"},
            r"split_tabular\(name='titanic'\): allowed values are 'breast_cancer', 'wine' and 'iris'",
        ),
        ({"batch_size": 0}, r"TabularDataModule\(batch_size=0\): batch_size must be an integer >= 1"),
        ({"val_fraction": 1.5}, r"split_tabular\(val_fraction=1.5\): must lie strictly between 0 and 1"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, r"val_fraction \+ test_fraction = 1.0 leaves no training data"),
    ],
)
def test_bad_arguments_are_refused(arguments, message) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        TabularDataModule(**arguments)
