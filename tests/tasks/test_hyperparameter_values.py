"""Every task reports its hyperparameters in meaningful units, and extra report metrics where it has them."""

from __future__ import annotations

import torch

from lightning_hypergrad.models import MLPClassifier
from lightning_hypergrad.tasks import (
    AugmentationClassifier,
    DistillationClassifier,
    DropoutClassifier,
    LSTMLanguageModel,
    WeightDecayClassifier,
)


def test_weight_decay_values_are_coefficients_named_after_their_weights() -> None:
    network = MLPClassifier(in_features=4, hidden=(3,), num_classes=2)
    glob = WeightDecayClassifier(network, 2, "global", "log", initial_decay=0.02).hyperparameter_values()
    assert list(glob) == ["weight_decay"] and torch.allclose(glob["weight_decay"], torch.tensor(0.02))
    per_weight = WeightDecayClassifier(network, 2, "per_weight", "softplus", initial_decay=0.3).hyperparameter_values()
    names = [f"weight_decay/{name}" for name, _ in network.named_parameters()]
    assert list(per_weight) == names
    for (_, weight), value in zip(network.named_parameters(), per_weight.values()):
        assert value.shape == weight.shape and torch.allclose(value, torch.full_like(value, 0.3))
    per_tensor = WeightDecayClassifier(network, 2, "per_tensor", initial_decay=0.1).hyperparameter_values()
    assert list(per_tensor) == names and all(value.shape == () for value in per_tensor.values())


def test_dropout_values_are_drop_probabilities() -> None:
    task = DropoutClassifier(in_features=4, hidden=(5, 6), initial_rate=0.25)
    with torch.no_grad():
        task.hyperparameters()[1][0] = 0.0  # logit 0: rate one half
    values = task.hyperparameter_values()
    assert [value.shape for value in values.values()] == [(5,), (6,)]
    assert all(name.startswith("dropout_rate/") for name in values)
    first, second = values.values()
    assert torch.allclose(first, torch.full((5,), 0.25)) and float(second[0]) == 0.5
    lstm = LSTMLanguageModel(vocabulary_size=20, embedding_size=4, hidden_size=3, initial_rate=0.4)
    rates = lstm.hyperparameter_values()
    assert set(rates) == {"dropout_rate/input", "dropout_rate/output"}
    assert torch.allclose(rates["dropout_rate/input"], torch.full((4,), 0.4)) and lstm.report_metrics() == {}


def test_tasks_without_a_transform_report_raw_values_under_their_parameter_names() -> None:
    distillation = DistillationClassifier(per_class=2)
    values = distillation.hyperparameter_values()
    (name,) = values
    assert name.startswith("distilled.") and torch.equal(values[name], distillation.hyperparameters()[0].detach())
    augmentation = AugmentationClassifier()
    assert len(augmentation.hyperparameter_values()) == len(augmentation.hyperparameters())
    assert augmentation.report_metrics() == {}
    values[name].add_(1.0)  # a copy: editing it leaves the hyperparameter alone
    assert not torch.equal(values[name], distillation.hyperparameters()[0].detach())
