"""Neumann series: exact truncated values, convergence, step-size selection and divergence."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_hypergrad.solvers import Neumann, SolveStatus
from lightning_hypergrad.solvers.lanczos import extreme_eigenvalues
from tests.helpers import symmetric_matrix

EIGENVALUES = torch.tensor([0.3, 0.7, 1.1, 2.0, 4.0, 5.0])


def system(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    hessian = symmetric_matrix(6, EIGENVALUES, seed=seed)
    b = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    return hessian, b


def truncated_series(hessian: torch.Tensor, b: torch.Tensor, iterations: int, alpha: float) -> torch.Tensor:
    identity = torch.eye(len(b), dtype=torch.float64)
    remainder = torch.linalg.matrix_power(identity - alpha * hessian, iterations + 1)
    return torch.linalg.solve(hessian, (identity - remainder) @ b)


@pytest.mark.parametrize("iterations", [1, 2, 7, 30])
def test_matches_the_closed_form_truncated_series(iterations: int) -> None:
    hessian, b = system()
    result = Neumann(iterations=iterations, alpha=0.15).solve(lambda v: (hessian @ v[0],), (b,))
    expected = truncated_series(hessian, b, iterations, 0.15)
    torch.testing.assert_close(result.solution[0], expected, rtol=1e-12, atol=1e-12)
    assert result.iterations == iterations
    assert result.hvp_count == iterations
    assert result.status is SolveStatus.ITERATIONS_EXHAUSTED and result.converged
    # residual_norm is ‖(I − αH)^K b‖: the residual of the partial sum with K terms.
    previous = truncated_series(hessian, b, iterations - 1, 0.15)
    torch.testing.assert_close(result.residual_norm, torch.linalg.vector_norm(b - hessian @ previous))


def test_converges_to_the_inverse_as_terms_grow() -> None:
    hessian, b = system()
    exact = torch.linalg.solve(hessian, b)
    errors = []
    for iterations in [5, 20, 80, 640]:
        result = Neumann(iterations=iterations, alpha=0.18).solve(lambda v: (hessian @ v[0],), (b,))
        errors.append(float(torch.linalg.vector_norm(result.solution[0] - exact) / torch.linalg.vector_norm(exact)))
    assert all(later < earlier for earlier, later in zip(errors, errors[1:]))
    assert errors[-1] < 1e-10


# Caught once the overshooting component dominates the terms: at once for large steps, after ~20 for 2.05.
@pytest.mark.parametrize(("factor", "iterations"), [(2.05, 20), (2.05, 60), (3.0, 5), (3.0, 20), (10.0, 2), (10.0, 60)])
def test_step_above_two_over_lambda_max_reports_divergence_with_finite_output(factor: float, iterations: int) -> None:
    hessian, b = system()
    alpha = factor / float(EIGENVALUES.max())
    result = Neumann(iterations=iterations, alpha=alpha).solve(lambda v: (hessian @ v[0],), (b,))
    assert result.status is SolveStatus.DIVERGED
    assert not result.converged
    assert torch.isfinite(result.solution[0]).all()
    assert torch.equal(result.solution[0], torch.zeros(6, dtype=torch.float64))


def test_overflow_to_infinity_is_caught() -> None:
    hessian, b = system()
    solver = Neumann(iterations=200, alpha=1e3)
    result = solver.solve(lambda v: (hessian.float() @ v[0],), (b.float(),))
    assert result.status is SolveStatus.DIVERGED and not result.converged  # it grew before it overflowed
    assert "diverged with alpha=1000, which must stay below 2/λ_max" in solver.failure_advice(result)
    assert torch.isfinite(result.solution[0]).all()


def test_strong_negative_curvature_along_b_reports_divergence() -> None:
    hessian = symmetric_matrix(4, torch.tensor([-1.0, 1.0, 2.0, 3.0]))
    b = torch.ones(4, dtype=torch.float64)
    result = Neumann(iterations=60, alpha=0.3).solve(lambda v: (hessian @ v[0],), (b,))
    assert result.status is SolveStatus.DIVERGED  # (1 + 0.3)^60 ≫ max_growth


@pytest.mark.parametrize("max_growth", [1.1, 10.0])
def test_growth_limit_is_configurable(max_growth: float) -> None:
    hessian = symmetric_matrix(4, torch.tensor([-0.5, 1.0, 2.0, 3.0]))
    b = torch.ones(4, dtype=torch.float64)
    result = Neumann(iterations=10, alpha=0.3, max_growth=max_growth).solve(lambda v: (hessian @ v[0],), (b,))
    growth = float(result.residual_norm) / float(torch.linalg.vector_norm(b))
    assert 1.1 < growth < 10.0  # (1 + 0.15)^10 ≈ 4 along the negative direction
    assert result.converged is (max_growth == 10.0)


def test_mild_negative_curvature_keeps_the_unrolled_truncated_series() -> None:
    # A saddle direction with small negative curvature: the series grows slowly; the truncated sum is still
    # H⁻¹ (I − (I − αH)^{K+1}) b, the hypergradient of K + 1 unrolled gradient steps.
    hessian = symmetric_matrix(4, torch.tensor([-0.05, 1.0, 2.0, 3.0]))
    b = torch.ones(4, dtype=torch.float64)
    result = Neumann(iterations=15, alpha=0.3).solve(lambda v: (hessian @ v[0],), (b,))
    assert result.converged
    torch.testing.assert_close(result.solution[0], truncated_series(hessian, b, 15, 0.3), rtol=1e-12, atol=1e-12)


def test_auto_alpha_uses_a_lanczos_estimate_and_converges() -> None:
    hessian, b = system()
    solver = Neumann(iterations=200, alpha="auto", lanczos_steps=4)
    result = solver.solve(lambda v: (hessian @ v[0],), (b,))
    lambda_max = float(EIGENVALUES.max())
    assert result.converged
    assert result.hvp_count == 200 + 4
    # The Ritz value approaches λ_max from below: αλ_max lands in [1, 2).
    assert result.alpha is not None and 1 <= result.alpha * lambda_max < 2
    assert 1 / result.alpha >= 0.9 * lambda_max
    torch.testing.assert_close(
        result.solution[0], truncated_series(hessian, b, 200, result.alpha), rtol=1e-12, atol=1e-12
    )


def test_lanczos_ritz_values_lie_inside_the_spectrum_and_reach_its_ends() -> None:
    hessian, b = system()
    lowest = float(EIGENVALUES.min())  # 0.3 as stored in float32
    for steps in range(1, 7):
        smallest, largest = extreme_eigenvalues(lambda v: (hessian @ v[0],), (b,), steps)
        assert lowest - 1e-12 <= float(smallest) <= float(largest) <= 5.0 + 1e-12
    # six steps span the whole 6-dimensional space: the Ritz values are the eigenvalues
    assert abs(float(smallest) - lowest) < 1e-10 and abs(float(largest) - 5.0) < 1e-10


def test_lanczos_beats_power_iteration_where_b_barely_excites_the_top() -> None:
    # b's component along the top eigenvector is 1e-3: three power steps stay far below λ_max, Lanczos does not.
    hessian = torch.diag(torch.tensor([1.0, 1.2, 1.5, 1.8, 4.0], dtype=torch.float64))
    b = torch.tensor([1.0, 1.0, 1.0, 1.0, 1e-3], dtype=torch.float64)
    power = b.clone()
    for _ in range(3):
        power = hessian @ power / torch.linalg.vector_norm(power)
    power_estimate = float(torch.linalg.vector_norm(power))
    lanczos_estimate = float(extreme_eigenvalues(lambda v: (hessian @ v[0],), (b,), 4)[1])
    assert power_estimate < 2.0 < lanczos_estimate <= 4.0 + 1e-12


def test_negative_curvature_shows_in_the_smallest_ritz_value() -> None:
    hessian = symmetric_matrix(5, torch.tensor([-0.5, 0.5, 1.0, 2.0, 3.0]))
    smallest, largest = extreme_eigenvalues(lambda v: (hessian @ v[0],), (torch.ones(5, dtype=torch.float64),), 5)
    assert abs(float(smallest) + 0.5) < 1e-10 and abs(float(largest) - 3.0) < 1e-10


def test_lanczos_from_a_zero_start_estimates_zero_and_auto_alpha_solves_to_zero() -> None:
    hessian, _ = system()
    zero = torch.zeros(hessian.shape[0], dtype=torch.float64)
    smallest, largest = extreme_eigenvalues(lambda v: (hessian @ v[0],), (zero,), 3)
    assert float(smallest) == float(largest) == 0.0  # not NaN: the recurrence breaks down at once
    result = Neumann(iterations=3).solve(lambda v: (hessian @ v[0],), (zero,))
    assert result.converged and result.alpha == 1.0 and torch.equal(result.solution[0], zero)


def test_auto_alpha_refuses_a_hessian_that_vanishes_along_b() -> None:
    result = Neumann(iterations=3).solve(lambda v: (torch.zeros_like(v[0]),), (torch.ones(3, dtype=torch.float64),))
    assert result.status is SolveStatus.DIVERGED
    assert torch.equal(result.solution[0], torch.zeros(3, dtype=torch.float64))


def test_warm_start_solves_the_residual_system() -> None:
    hessian, b = system()
    start = torch.linalg.solve(hessian, b) + 0.01 * torch.linspace(-1, 1, 6, dtype=torch.float64)
    result = Neumann(iterations=9, alpha=0.15).solve(lambda v: (hessian @ v[0],), (b,), initial=(start,))
    expected = start + truncated_series(hessian, b - hessian @ start, 9, 0.15)
    torch.testing.assert_close(result.solution[0], expected, rtol=1e-12, atol=1e-12)
    assert result.hvp_count == 10


@pytest.mark.parametrize("iterations", [4, 5, 10, 20, 60])
def test_an_overshoot_hidden_behind_shrinking_terms_is_detected(iterations: int) -> None:
    # αλ = 2.1 along a small component: the terms shrink overall, yet the series diverges along it.
    hessian = torch.diag(torch.tensor([0.1, 1.0, 2.0], dtype=torch.float64))
    b = torch.tensor([1.0, 1.0, 0.05], dtype=torch.float64)
    solver = Neumann(iterations=iterations, alpha=1.05)
    result = solver.solve(lambda v: (hessian @ v[0],), (b,))
    assert result.status is SolveStatus.DIVERGED and not result.converged
    assert "lower alpha or use alpha='auto'" in solver.failure_advice(result)
    below = Neumann(iterations=iterations, alpha=0.99).solve(lambda v: (hessian @ v[0],), (b,))
    assert below.converged  # the test proves αλ > 2: no false alarm just below the limit


def test_lanczos_started_on_an_eigenvector_stays_in_the_spectrum() -> None:
    hessian = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    for index in range(3):
        start = torch.zeros(3, dtype=torch.float64)
        start[index] = 1.0
        smallest, largest = extreme_eigenvalues(lambda v: (hessian @ v[0],), (start,), 5)
        assert float(smallest) == float(largest) == index + 1.0


def test_lanczos_returns_nan_for_non_finite_products_instead_of_raising() -> None:
    hvp = lambda v: (v[0] * float("nan"),)  # noqa: E731
    smallest, largest = extreme_eigenvalues(hvp, (torch.ones(3, dtype=torch.float64),), 3)
    assert torch.isnan(smallest) and torch.isnan(largest)


def test_a_reused_estimate_saves_the_lanczos_products() -> None:
    hessian, b = system()
    solver = Neumann(iterations=10, alpha="auto", lanczos_steps=4, lanczos_every=3)
    counts = [solver.solve(lambda v: (hessian @ v[0],), (b,)).hvp_count for _ in range(4)]
    assert counts == [14, 10, 10, 14]
    fresh = Neumann(iterations=10, alpha="auto", lanczos_steps=4).solve(lambda v: (hessian @ v[0],), (b,))
    reused = solver.solve(lambda v: (hessian @ v[0],), (b,))
    assert reused.alpha == fresh.alpha
    torch.testing.assert_close(reused.solution[0], fresh.solution[0], rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("iterations", [5, 10, 20])
@pytest.mark.parametrize("sharpening", [2.5, 3.0, 10.0])
def test_a_reused_estimate_never_overshoots_undetected_after_the_weights_move(
    seed: int, iterations: int, sharpening: float
) -> None:
    # The weights moved into sharper curvature since λ_max was estimated: the cached α now exceeds 2/λ_max.
    # (Series of fewer than 5 terms can miss it, as docs/solvers.md says.)
    hessian, b = system(seed)
    solver = Neumann(iterations=iterations, alpha="auto", lanczos_steps=6, lanczos_every=100)
    solver.solve(lambda v: (hessian @ v[0],), (b,))
    stale_alpha = 1 / solver.state_dict()["largest_eigenvalue"]
    sharper = sharpening * hessian
    lambda_max = sharpening * float(EIGENVALUES.max())
    assert stale_alpha * lambda_max > 2
    result = solver.solve(lambda v: (sharper @ v[0],), (b,))
    assert result.converged
    assert result.hvp_count == 2 * iterations + 6  # the stale series, a new estimate, the series again
    assert result.alpha * lambda_max < 2
    expected = truncated_series(sharper, b, iterations, result.alpha)
    torch.testing.assert_close(result.solution[0], expected, rtol=1e-10, atol=1e-12)


def test_the_estimate_survives_a_state_dict_round_trip() -> None:
    hessian, b = system()
    solver = Neumann(iterations=5, alpha="auto", lanczos_every=10)
    first = solver.solve(lambda v: (hessian @ v[0],), (b,))
    restored = Neumann(iterations=5, alpha="auto", lanczos_every=10)
    restored.load_state_dict(solver.state_dict())
    assert restored.solve(lambda v: (hessian @ v[0],), (b,)).alpha == first.alpha
    assert restored.state_dict() == {
        "largest_eigenvalue": 1 / first.alpha,
        "smallest_eigenvalue": solver.state_dict()["smallest_eigenvalue"],
        "solves_since_estimate": 2,
    }


def test_failure_advice_fits_the_step_size_setting() -> None:
    # One Lanczos step from a b almost orthogonal to the top eigenvector sees θ ≈ 1 ≪ λ_max = 100: it diverges.
    hessian = torch.diag(torch.tensor([1.0, 100.0], dtype=torch.float64))
    b = torch.tensor([1.0, 1e-3], dtype=torch.float64)
    auto = Neumann(iterations=40, lanczos_steps=1)
    result = auto.solve(lambda v: (hessian @ v[0],), (b,))
    assert not result.converged
    advice = auto.failure_advice(result)
    assert "raise lanczos_steps" in advice and "damping" in advice and "use alpha='auto'" not in advice
    assert auto.failure_advice(Neumann(iterations=3).solve(lambda v: (hessian @ v[0],), (0 * b,))) == ""


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_the_documented_miss_of_very_short_series(iterations: int) -> None:
    # docs/theory.md and docs/solvers.md say K ≤ 3 misses this overshoot; keep them honest.
    hessian = torch.diag(torch.tensor([0.1, 1.0, 2.0], dtype=torch.float64))
    b = torch.tensor([1.0, 1.0, 0.05], dtype=torch.float64)
    result = Neumann(iterations=iterations, alpha=1.05).solve(lambda v: (hessian @ v[0],), (b,))
    assert result.converged
    torch.testing.assert_close(result.solution[0], truncated_series(hessian, b, iterations, 1.05))


def test_auto_alpha_is_capped_by_negative_curvature_and_stays_the_truncated_series() -> None:
    # λ_min = −3: with α = 1/θ_max the component along it would grow by (1 + 3/3)^40; the cap keeps it near 2×.
    hessian = symmetric_matrix(4, torch.tensor([-3.0, 1.0, 2.0, 3.0]))
    b = torch.ones(4, dtype=torch.float64)
    result = Neumann(iterations=40, lanczos_steps=4).solve(lambda v: (hessian @ v[0],), (b,))
    assert result.converged
    torch.testing.assert_close(result.alpha, math.log(2) / (40 * 3.0), rtol=1e-9, atol=0)
    torch.testing.assert_close(result.solution[0], truncated_series(hessian, b, 40, result.alpha))
    assert float(result.residual_norm) <= 2.0 * float(b.norm())
