"""Every solver, NaN or inf injected into one product: a failed result with a status saying why, never a raise."""

from __future__ import annotations

import pytest
import torch

from lightning_hypergrad.solvers import Amortized, ConjugateGradient, Exact, Identity, IHVPSolver, Neumann, SolveStatus
from tests.helpers import symmetric_matrix

HESSIAN = symmetric_matrix(6, torch.tensor([0.5, 0.8, 1.0, 1.5, 2.0, 3.0]))
B = torch.linspace(-1.0, 2.0, 6, dtype=torch.float64)
WARM_START = torch.linalg.solve(HESSIAN, B) + 0.01

# (factory, whether the warm start is passed): every configuration that reaches a product differently.
SOLVERS = {
    "neumann-fixed-alpha": (lambda: Neumann(iterations=6, alpha=0.3), False),
    "neumann-auto-alpha": (lambda: Neumann(iterations=6, alpha="auto", lanczos_steps=4), False),
    "neumann-reused-alpha": (lambda: Neumann(iterations=6, alpha="auto", lanczos_steps=4, lanczos_every=5), False),
    "conjugate-gradient": (lambda: ConjugateGradient(iterations=5, rtol=1e-30), False),
    "conjugate-gradient-warm": (lambda: ConjugateGradient(iterations=5, rtol=1e-30), True),
    "preconditioned-cg": (
        lambda: ConjugateGradient(iterations=5, rtol=1e-30, preconditioner="spectral", preconditioner_steps=4),
        False,
    ),
    "identity-warm": (lambda: Identity(alpha=0.5), True),
    "exact": (lambda: Exact(), False),
    "amortized": (lambda: Amortized(iterations=3), False),
    "amortized-carried": (lambda: Amortized(iterations=3), False),
    "amortized-fixed-alpha": (lambda: Amortized(iterations=3, alpha=0.3), False),
}
PRIMED = {"neumann-reused-alpha", "amortized-carried"}  # one clean solve first: the next reuses its state


def hvp_poisoned_at(index: int, value: float):
    calls = {"count": 0}

    def hvp(vector):
        product = HESSIAN @ vector[0]
        if calls["count"] == index:
            product = product.clone()
            product[2] = value
        calls["count"] += 1
        return (product,)

    return hvp, calls


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("name", list(SOLVERS))
def test_a_non_finite_product_fails_the_solve_without_raising(name: str, where: str, value: float) -> None:
    factory, warm = SOLVERS[name]
    initial = (WARM_START,) if warm else None
    clean_hvp, clean_calls = hvp_poisoned_at(-1, value)
    clean_solver = factory()
    if name in PRIMED:
        clean_solver.solve(clean_hvp, (B,), initial)  # the next solve reuses this λ_max estimate
    calls_before = clean_calls["count"]
    clean = clean_solver.solve(clean_hvp, (B,), initial)
    products = clean_calls["count"] - calls_before
    assert clean.converged and products >= 1

    solver = factory()
    if name in PRIMED:
        solver.solve(hvp_poisoned_at(-1, value)[0], (B,), initial)
    poisoned, _ = hvp_poisoned_at({"first": 0, "middle": products // 2, "last": products - 1}[where], value)
    result = solver.solve(poisoned, (B,), initial)
    assert not result.converged
    assert result.status is SolveStatus.NON_FINITE
    assert torch.equal(result.solution[0], torch.zeros(6, dtype=torch.float64))
    advice = solver.failure_advice(result)
    assert "NaN or inf" in advice and "precision" in advice and "loss scale" in advice


def test_exact_reports_a_non_finite_right_hand_side() -> None:
    result = Exact().solve(
        lambda v: (HESSIAN @ v[0],), (torch.tensor([1.0, float("nan"), 0, 0, 0, 0], dtype=torch.float64),)
    )
    assert result.status is SolveStatus.NON_FINITE and not result.converged
    assert torch.equal(result.solution[0], torch.zeros(6, dtype=torch.float64))


@pytest.mark.parametrize("name", list(SOLVERS))
def test_check_size_accepts_any_size_except_above_exacts_limit(name: str) -> None:
    solver: IHVPSolver = SOLVERS[name][0]()
    if not isinstance(solver, Exact):
        solver.check_size(10**9)  # accepted: returns without raising
        return
    solver.check_size(4096)
    with pytest.raises(ValueError, match=r"Exact\(max_size=4096\) refuses a system with P=4097 weights"):
        solver.check_size(4097)
