"""What the engine refuses or reports before solving: reentrant checkpointing, NaN and inf losses."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lightning_hypergrad import HypergradientWarning, hypergradient, hypergradient_with_solve
from lightning_hypergrad.solvers import ConjugateGradient, Exact, Identity, Neumann, SolveStatus
from tests.helpers import RidgeProblem

SOLVERS = {
    "neumann": lambda: Neumann(iterations=4),
    "cg": lambda: ConjugateGradient(iterations=4),
    "identity": lambda: Identity(alpha=0.1),
    "exact": lambda: Exact(),
}


class ScaledInputs(nn.Module):
    """A small network on training inputs scaled by a hyperparameter (as a learned augmentation would).

    Checkpointed whole, the segment's only input that requires grad is the hyperparameter, so none of the
    derivatives the engine takes crosses it: torch raises nothing, and a reentrant checkpoint hides every weight.
    """

    def __init__(self, checkpointed: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer, self.head = nn.Linear(4, 6).double(), nn.Linear(6, 1).double()
        self.scale = nn.Parameter(torch.tensor(1.5, dtype=torch.float64))
        self.checkpointed = checkpointed
        generator = torch.Generator().manual_seed(1)
        self.inputs = torch.randn(3, 16, 4, generator=generator, dtype=torch.float64)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        network = nn.Sequential(self.layer, nn.Tanh(), self.head)
        if self.checkpointed == "no":
            return network(inputs).squeeze(-1)
        return checkpoint(network, inputs, use_reentrant=self.checkpointed == "reentrant").squeeze(-1)

    def losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        train_inputs, val_inputs, targets = self.inputs
        weights = [*self.layer.parameters(), *self.head.parameters()]
        penalty = 1e-2 * sum(weight.pow(2).sum() for weight in weights)
        train_loss = (self(self.scale * train_inputs) - targets.sum(-1)).pow(2).mean() + penalty
        return train_loss, (self(val_inputs) - targets.sum(-1)).pow(2).mean()

    def hypergradient(self) -> torch.Tensor:
        weights = [*self.layer.parameters(), *self.head.parameters()]
        return hypergradient(*self.losses(), weights, [self.scale], Exact())[0]


@pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad")  # torch's, on the validation inputs
def test_reentrant_checkpointing_is_refused_where_torch_would_silently_drop_the_segment() -> None:
    with pytest.raises(RuntimeError, match=r"train_loss .*use_reentrant=True.*Hessian-vector.*use_reentrant=False"):
        ScaledInputs("reentrant").hypergradient()


def test_reentrant_checkpointing_is_refused_where_torch_raises_its_own_error() -> None:
    torch.manual_seed(0)
    first, segment = nn.Linear(4, 4).double(), nn.Sequential(nn.Tanh(), nn.Linear(4, 1)).double()
    decay = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    inputs = torch.randn(8, 4, dtype=torch.float64)
    output = checkpoint(segment, first(inputs), use_reentrant=True).sum()
    weights = [*first.parameters(), *segment.parameters()]
    train_loss = output.pow(2) + decay * sum(weight.pow(2).sum() for weight in weights)
    with pytest.raises(RuntimeError, match=r"train_loss .*use_reentrant=True.*Hessian-vector.*use_reentrant=False"):
        hypergradient(train_loss, output, weights, [decay], Exact())


def test_non_reentrant_checkpointing_gives_the_hypergradient_without_checkpointing() -> None:
    expected = ScaledInputs("no").hypergradient()
    assert float(expected.abs()) > 1e-3  # the scale matters
    torch.testing.assert_close(ScaledInputs("non-reentrant").hypergradient(), expected, rtol=1e-12, atol=0.0)


def ridge_losses(problem: RidgeProblem, fault: str) -> tuple[torch.Tensor, torch.Tensor, list, list]:
    weights = problem.minimizer().requires_grad_(True)
    log_decay = problem.log_decay.clone().requires_grad_(True)
    train_loss, val_loss = problem.train_loss(weights, log_decay), problem.val_loss(weights)
    if fault == "nan validation loss":  # NaN derivatives too
        val_loss = val_loss * math.nan
    elif fault == "detached nan validation loss":  # derivatives of zero: the hypergradient came out exact zeros
        val_loss = torch.tensor(math.nan, dtype=torch.float64)
    elif fault == "inf validation loss":  # finite derivatives: the hypergradient looked normal
        val_loss = val_loss + math.inf
    elif fault == "nan training loss":
        train_loss = train_loss + (log_decay * math.nan).sum()
    return train_loss, val_loss, [weights], [log_decay]


FAULTS = {
    "nan validation loss": "the validation loss is nan",
    "detached nan validation loss": "the validation loss is nan",
    "inf validation loss": "the validation loss is inf",
    "nan training loss": "the training loss is nan",
}


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("solver", list(SOLVERS))
def test_a_non_finite_loss_gives_an_invalid_result_not_silent_zeros(fault: str, solver: str) -> None:
    problem = RidgeProblem.make()
    train_loss, val_loss, weights, log_decay = ridge_losses(problem, fault)
    result = hypergradient_with_solve(train_loss, val_loss, weights, log_decay, SOLVERS[solver]())
    assert result.loss_problem is not None and result.loss_problem.startswith(FAULTS[fault])
    assert result.solve.status is SolveStatus.NOT_RUN and not result.solve.converged
    assert result.solve.hvp_count == 0  # nothing was spent on the derivatives of a NaN
    assert torch.equal(result.hypergradients[0], torch.zeros(problem.features, dtype=torch.float64))
    assert all(torch.equal(part, torch.zeros_like(part)) for part in (*result.direct, *result.solve.solution))
    with pytest.warns(HypergradientWarning, match=f"The hypergradient is invalid: {FAULTS[fault]}"):
        (returned,) = hypergradient(*ridge_losses(problem, fault), SOLVERS[solver]())
    assert torch.equal(returned, result.hypergradients[0])


def test_a_finite_loss_gives_a_valid_result() -> None:
    result = hypergradient_with_solve(*ridge_losses(RidgeProblem.make(), "none"), Exact())
    assert result.loss_problem is None and result.solve.converged


def test_a_non_finite_loss_on_another_process_invalidates_the_result_on_every_process() -> None:
    """Two processes simulated in turn: the faulty one's exchanges are recorded, the healthy one averages with
    them. Both stop after the first exchange (the validation gradient's), so neither waits for the other."""
    problem = RidgeProblem.make()
    faulty_sent: list[tuple[torch.Tensor, ...]] = []

    def record(vector):
        faulty_sent.append(tuple(part.clone() for part in vector))
        return vector

    faulty = hypergradient_with_solve(*ridge_losses(problem, "nan validation loss"), Neumann(4), average=record)
    healthy_calls = []

    def average_with_faulty(vector):
        other = faulty_sent[len(healthy_calls)]
        healthy_calls.append(len(vector))
        return tuple((mine + theirs) / 2 for mine, theirs in zip(vector, other))

    healthy = hypergradient_with_solve(*ridge_losses(problem, "none"), Neumann(4), average=average_with_faulty)
    assert faulty.loss_problem.startswith("the validation loss is nan")
    assert (
        healthy.loss_problem
        == "the validation loss is not finite on another process; check that process's batch and loss"
    )
    assert len(faulty_sent) == len(healthy_calls) == 1
    assert not healthy.solve.converged and torch.equal(
        healthy.hypergradients[0], torch.zeros(problem.features).double()
    )
