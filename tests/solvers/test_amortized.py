"""Amortized: the estimate carried across solves converges to H⁻¹b while H moves, survives a checkpoint
bit-exactly, and is dropped (never passed on) after NaN/inf or a change of shapes. Float64 against exact solves."""

from __future__ import annotations

import io

import pytest
import torch

from lightning_hypergrad import HypergradientWarning
from lightning_hypergrad.solvers import Amortized, SolveStatus
from tests.helpers import symmetric_matrix

EIGENVALUES = torch.tensor([0.2, 0.5, 0.9, 1.4, 2.0, 3.0, 4.5, 6.0])
HESSIAN = symmetric_matrix(8, EIGENVALUES)
DRIFT = symmetric_matrix(8, torch.linspace(-1.0, 1.0, 8), seed=1)
B = torch.linspace(-1.0, 2.0, 8, dtype=torch.float64)


def moving(t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """H_t and b_t: moving by O(1/t) per solve towards HESSIAN and B (a slowly moving, converging system)."""
    weight = 0.3 / (1 + 0.05 * t)
    return HESSIAN + weight * DRIFT, B + weight * torch.cos(torch.arange(8.0, dtype=torch.float64))


def relative_error(solution: torch.Tensor, hessian: torch.Tensor, b: torch.Tensor) -> float:
    exact = torch.linalg.solve(hessian, b)
    return float((solution - exact).norm() / exact.norm())


@pytest.mark.parametrize("alpha", [None, 0.25], ids=["minimal-residual", "fixed-alpha"])
def test_on_a_slowly_moving_quadratic_the_carried_estimate_converges_to_the_exact_solve(alpha) -> None:
    solver = Amortized(iterations=2, alpha=alpha)
    errors = []
    for t in range(600):
        hessian, b = moving(t)
        result = solver.solve(lambda v, h=hessian: (h @ v[0],), (b,))
        assert result.converged and result.hvp_count == 2
        errors.append(relative_error(result.solution[0], hessian, b))
    assert errors[0] > 0.3  # one solve from zero is far from H⁻¹b (condition number 30)
    assert max(errors[-50:]) < 1e-3  # H still moves by ~2e-5 per solve; the estimate keeps up (2e-4, 5e-4)
    hessian, b = moving(600)
    for _ in range(400):  # once H and b stop, the same iteration converges to rounding (3e-16, 1e-15)
        result = solver.solve(lambda v: (hessian @ v[0],), (b,))
    assert relative_error(result.solution[0], hessian, b) < 1e-14
    assert solver.last_start == "carried"


def test_a_cold_solve_is_k_minimal_residual_steps_and_a_carried_one_rescales_first() -> None:
    solver = Amortized(iterations=3)
    hvp = lambda v: (HESSIAN @ v[0],)  # noqa: E731
    x, r = torch.zeros(8, dtype=torch.float64), B.clone()
    for _ in range(3):  # by hand: α = rᵀHr / ‖Hr‖², x += α r, r −= α H r
        q = HESSIAN @ r
        step = (r @ q) / (q @ q)
        x, r = x + step * r, r - step * q
    first = solver.solve(hvp, (B,))
    torch.testing.assert_close(first.solution[0], x, rtol=1e-14, atol=1e-14)
    assert first.iterations == 3 and first.hvp_count == 3 and solver.last_start == "cold: no estimate yet"
    # The second solve, of 2b: the start is s·x with s = (2b)ᵀHx / ‖Hx‖², then two steps.
    p = HESSIAN @ x
    scale = (2 * B) @ p / (p @ p)
    x, r = scale * x, 2 * B - scale * p
    for _ in range(2):
        q = HESSIAN @ r
        step = (r @ q) / (q @ q)
        x, r = x + step * r, r - step * q
    second = solver.solve(hvp, (2 * B,))
    torch.testing.assert_close(second.solution[0], x, rtol=1e-14, atol=1e-14)
    assert second.iterations == 2 and second.hvp_count == 3 and solver.last_start == "carried"
    torch.testing.assert_close(second.residual_norm, (2 * B - HESSIAN @ x).norm())  # the returned iterate's residual


def test_the_residual_never_grows_even_with_negative_curvature() -> None:
    indefinite = symmetric_matrix(8, torch.tensor([-2.0, -0.5, 0.1, 0.4, 1.0, 2.0, 3.0, 5.0]))
    solver = Amortized(iterations=2)
    residuals = []
    for _ in range(100):
        result = solver.solve(lambda v: (indefinite @ v[0],), (B,))
        assert result.converged
        residuals.append(float((B - indefinite @ result.solution[0]).norm()))
    assert all(later <= earlier * (1 + 1e-12) for earlier, later in zip(residuals, residuals[1:]))
    assert residuals[-1] < residuals[0]


def test_the_state_survives_a_checkpoint_bit_exactly() -> None:
    def run(solver: Amortized, times: range) -> list[torch.Tensor]:
        solutions = []
        for t in times:
            hessian, b = moving(t)
            h = hessian.float()
            solutions.append(solver.solve(lambda v, h=h: (h @ v[0],), (b.float(),)).solution[0])
        return solutions

    uninterrupted = run(Amortized(iterations=2), range(12))
    first = Amortized(iterations=2)
    before = run(first, range(5))
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = Amortized(iterations=2)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.state_dict()["solves"] == 5
    after = run(resumed, range(5, 12))
    for expected, got in zip(uninterrupted, before + after, strict=True):
        assert torch.equal(expected, got)
    assert resumed.estimate[0].dtype == torch.float32  # the estimate stays in working precision
    fresh = Amortized()
    fresh.load_state_dict({})  # an older checkpoint without the key: start from zero
    assert fresh.estimate is None


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_a_non_finite_product_fails_the_solve_and_drops_the_estimate(value: float) -> None:
    solver = Amortized(iterations=2)
    hvp = lambda v: (HESSIAN @ v[0],)  # noqa: E731
    for _ in range(5):
        solver.solve(hvp, (B,))
    assert solver.estimate is not None

    def poisoned(v):
        product = HESSIAN @ v[0]
        product[3] = value
        return (product,)

    result = solver.solve(poisoned, (B,))
    assert not result.converged and result.status is SolveStatus.NON_FINITE
    assert torch.equal(result.solution[0], torch.zeros(8, dtype=torch.float64))
    assert solver.estimate is None
    assert "next solve starts from zero" in solver.failure_advice(result)
    after = solver.solve(hvp, (B,))
    assert after.converged and solver.last_start == "cold: estimate dropped"
    torch.testing.assert_close(after.solution[0], Amortized(iterations=2).solve(hvp, (B,)).solution[0])


def test_a_fixed_alpha_that_overshoots_diverges_and_drops_the_estimate() -> None:
    solver = Amortized(iterations=4, alpha=1.0)  # αλ_max = 6 > 2: the residual grows by 5× per step
    result = solver.solve(lambda v: (HESSIAN @ v[0],), (B,))
    assert not result.converged and result.status is SolveStatus.DIVERGED
    assert solver.estimate is None
    assert "lower alpha" in solver.failure_advice(result)


def test_an_estimate_of_other_shapes_is_dropped_with_a_warning() -> None:
    solver = Amortized(iterations=2)
    solver.solve(lambda v: (HESSIAN @ v[0],), (B,))
    small = HESSIAN[:4, :4]
    with pytest.warns(HypergradientWarning, match=r"shapes \[\(8,\)\] but b has \[\(4,\)\]"):
        result = solver.solve(lambda v: (small @ v[0],), (B[:4],))
    assert result.converged and solver.last_start == "cold: the estimate's shapes no longer match b's"
    torch.testing.assert_close(
        result.solution[0], Amortized(iterations=2).solve(lambda v: (small @ v[0],), (B[:4],)).solution[0]
    )
    with pytest.warns(HypergradientWarning, match="2 parts|shapes"):
        solver.solve(lambda v: (v[0], v[1]), (B[:4], B))  # a part more: dropped again


def test_with_alpha_copies_refine_the_same_estimate() -> None:
    solver = Amortized(iterations=2)
    copy = solver.with_alpha(0.1)
    copy.solve(lambda v: (HESSIAN @ v[0],), (B,))
    assert solver.estimate is not None and solver.last_start == "cold: no estimate yet"
    assert copy.alpha == 0.1 and solver.alpha is None
