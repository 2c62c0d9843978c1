"""The models real projects bring: attention, LSTMs, torch.compile and gradient checkpointing, through the callback."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch.utils.data import TensorDataset

from lightning_hypergrad import HypergradientCallback, hypergradient
from lightning_hypergrad.lightning.losses import hyperstep_context
from lightning_hypergrad.solvers import Identity, Neumann
from tests.feature_helpers import AttentionNet, DecayedRegression, RecurrentNet, loader, sequences, vectors
from tests.lightning_helpers import RecordingCallback, make_trainer


def tune(model: nn.Module, callback: HypergradientCallback, data=sequences, **trainer_options) -> L.Trainer:
    L.seed_everything(0, verbose=False)
    trainer = make_trainer([callback], **{"max_epochs": 2, **trainer_options})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few batches, no workers: Lightning's advice is beside the point here
        trainer.fit(model, loader(data(64, seed=1)), loader(data(32, seed=2)))
    return trainer


def second_order(model: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A Hessian-vector product of a scalar of ``model(inputs)`` (what every hyperstep needs)."""
    parameters = list(model.parameters())
    gradients = torch.autograd.grad(model(inputs).pow(2).mean(), parameters, create_graph=True)
    return torch.autograd.grad(gradients, parameters, [torch.ones_like(p) for p in parameters])


def test_a_tiny_transformer_is_tuned_end_to_end() -> None:
    torch.manual_seed(0)
    model = DecayedRegression(AttentionNet())
    callback = HypergradientCallback(Neumann(iterations=5), every_n_steps=2)
    tune(model, callback)
    assert callback.taken == 4 and callback.skipped == 0
    assert float(model.log_decay.detach()) != -2.0


def test_attention_uses_its_fast_kernel_outside_hypersteps_and_the_math_kernel_inside() -> None:
    torch.manual_seed(0)
    network, inputs = AttentionNet(), torch.randn(4, 5, 8)
    with pytest.raises(RuntimeError, match="flash_attention"):  # the fused CPU kernel: no double backward
        second_order(network, inputs)
    with hyperstep_context(network):
        products = second_order(network, inputs)
    assert all(torch.isfinite(product).all() for product in products)


class OneDNNSpy(DecayedRegression):
    """Records, per training-loss evaluation, whether a hyperstep was running and whether oneDNN was on."""

    def __init__(self) -> None:
        super().__init__(RecurrentNet())
        self.in_hyperstep = False
        self.seen: list[tuple[bool, bool]] = []

    def training_loss(self, batch):
        self.seen.append((self.in_hyperstep, torch.backends.mkldnn.enabled))
        return super().training_loss(batch)


class MarkingCallback(HypergradientCallback):
    def compute_hypergradient(self, trainer, module, train_batch, validation_batch):
        module.in_hyperstep = True
        try:
            return super().compute_hypergradient(trainer, module, train_batch, validation_batch)
        finally:
            module.in_hyperstep = False


def test_a_tiny_lstm_is_tuned_end_to_end_with_onednn_off_only_inside_hypersteps() -> None:
    torch.manual_seed(0)
    model = OneDNNSpy()
    callback = MarkingCallback(Neumann(iterations=5), every_n_steps=2)
    tune(model, callback)
    assert callback.taken == 4 and callback.skipped == 0
    assert float(model.log_decay.detach()) != -2.0
    assert {enabled for inside, enabled in model.seen if inside} == {False}
    assert {enabled for inside, enabled in model.seen if not inside} == {True}
    assert torch.backends.mkldnn.enabled


def test_the_lstm_hypergradient_agrees_with_and_without_onednn() -> None:
    torch.manual_seed(0)
    model = DecayedRegression(RecurrentNet(width=16))
    data = sequences(32, seed=3, width=16)
    batch = data.tensors

    def hypergradient_here() -> torch.Tensor:
        return hypergradient(
            model.training_loss(batch),
            model.validation_loss(batch),
            model.weight_parameters(),
            model.hyperparameters(),
            Neumann(alpha=0.5, iterations=10),
        )[0]

    assert torch.backends.mkldnn.enabled  # torch's CPU default: oneDNN kernels outside hypersteps
    with_onednn = hypergradient_here()
    with hyperstep_context(model):
        without = hypergradient_here()
    # float32 kernels summing in different orders; the issue measured agreement to 1e-7 on the HVPs.
    torch.testing.assert_close(without, with_onednn, rtol=1e-5, atol=0.0)


class CompiledInside(DecayedRegression):
    def __init__(self) -> None:
        super().__init__(torch.compile(nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1)), backend="aot_eager"))


@pytest.mark.parametrize("reuse", [False, "auto"])  # "auto": a compiled training_step recomputes instead
@pytest.mark.parametrize("compiled", ["network", "whole module"])
def test_compiled_models_take_hypersteps_through_the_same_parameters_run_eagerly(compiled: str, reuse) -> None:
    torch.manual_seed(0)
    eager = DecayedRegression(nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1)))
    model = CompiledInside() if compiled == "network" else torch.compile(eager, backend="aot_eager")
    callback = RecordingCallback(Identity(), every_n_steps=3, reuse_training_graph=reuse)
    tune(model, callback, data=vectors, max_epochs=1)
    assert callback.taken == 1 and callback.skipped == 0
    record = callback.records[0]
    eager.load_state_dict({name.replace("_orig_mod.", ""): value for name, value in record["state"].items()})
    expected = hypergradient(
        eager.training_loss(record["train_batch"]),
        eager.validation_loss(record["validation_batch"]),
        eager.weight_parameters(),
        eager.hyperparameters(),
        Identity(),
    )
    torch.testing.assert_close(record["result"].hypergradients[0], expected[0], rtol=1e-6, atol=1e-9)


class Checkpointed(DecayedRegression):
    def __init__(self, use_reentrant: bool | None) -> None:
        super().__init__(nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1)))
        self.use_reentrant = use_reentrant

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = self.network[0](inputs)
        if self.use_reentrant is not None:
            hidden = checkpoint(self.network[1:4], hidden, use_reentrant=self.use_reentrant)
        else:
            hidden = self.network[1:4](hidden)
        return self.network[4](hidden).reshape(-1)


def test_reentrant_gradient_checkpointing_is_refused_with_the_fix() -> None:
    with pytest.raises(RuntimeError, match=r"use_reentrant=True.*Hessian-vector products.*use_reentrant=False"):
        tune(Checkpointed(use_reentrant=True).double(), HypergradientCallback(Identity()), data=double_vectors)


class ScaledAndCheckpointed(DecayedRegression):
    """The whole network reentrantly checkpointed on training inputs scaled by a hyperparameter: no derivative
    taken with respect to the weights crosses the segment, so torch raises nothing, in weight steps or hypersteps."""

    def __init__(self) -> None:
        super().__init__(nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1)))
        self.input_scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return checkpoint(self.network, inputs, use_reentrant=True).reshape(-1)

    def training_loss(self, batch):
        inputs, targets = batch
        return super().training_loss((self.input_scale * inputs, targets))

    def hyperparameters(self) -> list[nn.Parameter]:
        return [self.log_decay, self.input_scale]


def test_reentrant_checkpointing_that_torch_does_not_notice_is_refused_at_the_first_hyperstep() -> None:
    callback = HypergradientCallback(Identity(), every_n_steps=2)
    with pytest.raises(RuntimeError, match=r"use_reentrant=True.*Hessian-vector products.*use_reentrant=False"):
        tune(ScaledAndCheckpointed(), callback, data=vectors)
    assert callback.taken + callback.skipped == 0


def test_non_reentrant_checkpointing_gives_the_hypergradient_without_checkpointing() -> None:
    torch.manual_seed(0)
    model = Checkpointed(use_reentrant=False).double()
    callback = RecordingCallback(Neumann(alpha=0.1, iterations=5), every_n_steps=3)
    tune(model, callback, data=double_vectors, max_epochs=1)
    assert callback.taken == 1
    record = callback.records[0]
    plain = Checkpointed(use_reentrant=None).double()
    plain.load_state_dict(record["state"])
    expected = hypergradient(
        plain.training_loss(record["train_batch"]),
        plain.validation_loss(record["validation_batch"]),
        plain.weight_parameters(),
        plain.hyperparameters(),
        Neumann(alpha=0.1, iterations=5),
    )
    torch.testing.assert_close(record["result"].hypergradients[0], expected[0], rtol=1e-12, atol=0.0)


def double_vectors(count: int, seed: int) -> TensorDataset:
    return TensorDataset(*(tensor.double() for tensor in vectors(count, seed).tensors))
