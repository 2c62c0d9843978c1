"""Peak tensor memory of one hypergradient against the bare autograd floor, counted in bytes by the profiler.

The floor computes v = ∂L_V/∂w, g = ∂L_T/∂w with its graph, K Hessian-vector products and one mixed product in
bare autograd, with the losses kept by the caller as ``hypergradient_with_solve``'s callers keep them. Above it a
Neumann solve holds one weight-sized vector (its running sum; the term is the product's input, as v is the
floor's) and conjugate gradient three (its iterate, its residual and b, kept to recompute b − Hx before it claims
its tolerance; the direction is the product's input). The byte
counts are exact and repeatable (tensor allocations, not resident memory); SLACK covers the 0-dim tensors the
solvers keep (norms, flags, step sizes).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_hypergrad import hypergradient, hypergradient_with_solve
from lightning_hypergrad.solvers import ConjugateGradient, Neumann

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
from hypergradient_memory import peak_bytes  # the benchmark's byte count: both measure alike

SLACK = 4096  # bytes


class SmallProblem:
    """A tanh MLP with one decay per weight (kept in a plain list, as a stranger's code might)."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        self.network = nn.Sequential(nn.Linear(16, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(), nn.Linear(128, 4))
        self.weights = list(self.network.parameters())
        self.decays = [torch.full_like(w, 0.5, requires_grad=True) for w in self.weights]
        self.train_batch = (torch.randn(8, 16, generator=generator), torch.randint(0, 4, (8,), generator=generator))
        self.val_batch = (torch.randn(8, 16, generator=generator), torch.randint(0, 4, (8,), generator=generator))
        self.vector_bytes = sum(w.numel() for w in self.weights) * 4

    def train_loss(self) -> torch.Tensor:
        inputs, targets = self.train_batch
        penalty = sum((0.5 * d.exp() * w.pow(2)).sum() for d, w in zip(self.decays, self.weights))
        return nn.functional.cross_entropy(self.network(inputs), targets) + penalty

    def val_loss(self) -> torch.Tensor:
        inputs, targets = self.val_batch
        return nn.functional.cross_entropy(self.network(inputs), targets)

    def floor(self, products: int) -> None:
        train_loss, val_loss = self.train_loss(), self.val_loss()
        vector = torch.autograd.grad(val_loss, self.weights, retain_graph=True)
        gradient = torch.autograd.grad(train_loss, self.weights, create_graph=True)
        for _ in range(products):
            vector = torch.autograd.grad(gradient, self.weights, vector, retain_graph=True)
        torch.autograd.grad(gradient, self.decays, vector)

    def library(self, solver, **options) -> None:
        train_loss, val_loss = self.train_loss(), self.val_loss()
        result = hypergradient_with_solve(train_loss, val_loss, self.weights, self.decays, solver, **options)
        assert result.solve.converged and all(torch.isfinite(part).all() for part in result.hypergradients)


@pytest.fixture(scope="module")
def problem() -> SmallProblem:
    return SmallProblem()


@pytest.mark.parametrize("products", [1, 5])
@pytest.mark.parametrize(
    ("make_solver", "vectors_above_the_floor"),
    [(lambda k: Neumann(k, alpha=0.05), 1), (lambda k: ConjugateGradient(k, rtol=1e-30), 3)],
    ids=["neumann", "conjugate-gradient"],
)
def test_a_hypergradient_holds_only_what_its_solver_needs(
    problem: SmallProblem, make_solver, vectors_above_the_floor: int, products: int
) -> None:
    floor = peak_bytes(lambda: problem.floor(products))
    used = peak_bytes(lambda: problem.library(make_solver(products)))
    assert used >= floor  # the measurement sees the products at all
    assert used <= floor + vectors_above_the_floor * problem.vector_bytes + SLACK


@pytest.mark.parametrize(
    ("make_solver", "options", "vectors_above_the_floor"),
    [
        (lambda: Neumann(5, alpha=0.05), {"damping": 0.01}, 1),
        (lambda: Neumann(5, alpha=0.05), {"loss_scale": 1024.0}, 1),
        (lambda: Neumann(5, alpha=0.05), {"initial": "warm"}, 1),
        (lambda: ConjugateGradient(5, rtol=1e-30), {"initial": "warm"}, 3),
        # Lanczos keeps b (for the series) and its previous vector while it estimates λ_max.
        (lambda: Neumann(5, alpha="auto", lanczos_steps=4), {}, 2),
    ],
    ids=["neumann-damping", "neumann-loss-scale", "neumann-warm", "cg-warm", "neumann-auto"],
)
def test_damping_loss_scale_warm_starts_and_auto_alpha_add_no_vector(
    problem: SmallProblem, make_solver, options: dict, vectors_above_the_floor: int
) -> None:
    if options.get("initial") == "warm":
        options = {"initial": tuple(0.01 * torch.ones_like(w) for w in problem.weights)}
    floor = peak_bytes(lambda: problem.floor(5))
    used = peak_bytes(lambda: problem.library(make_solver(), **options))
    assert used <= floor + vectors_above_the_floor * problem.vector_bytes + SLACK


def test_losses_nobody_else_keeps_are_freed_with_the_parts_of_their_graphs_g_does_not_need(
    problem: SmallProblem,
) -> None:
    def floor_dropping_its_losses() -> None:
        vector = torch.autograd.grad(problem.val_loss(), problem.weights)
        gradient = torch.autograd.grad(problem.train_loss(), problem.weights, create_graph=True)
        for _ in range(5):
            vector = torch.autograd.grad(gradient, problem.weights, vector, retain_graph=True)
        torch.autograd.grad(gradient, problem.decays, vector)

    floor = peak_bytes(floor_dropping_its_losses)
    assert floor < peak_bytes(lambda: problem.floor(5))  # the kept losses cost something on this problem
    solver = Neumann(5, alpha=0.05)
    for function in (hypergradient, hypergradient_with_solve):
        used = peak_bytes(
            lambda function=function: function(
                problem.train_loss(), problem.val_loss(), problem.weights, problem.decays, solver
            )
        )
        assert used <= floor + problem.vector_bytes + SLACK, function.__name__
