"""Conjugate gradient: exact in n steps, early stopping, breakdown reporting."""

from __future__ import annotations

import pytest
import torch

from lightning_hypergrad.solvers import ConjugateGradient, SolveStatus
from tests.helpers import symmetric_matrix


def test_exact_in_n_iterations_on_an_spd_system() -> None:
    eigenvalues = torch.logspace(-1, 1, 8)
    hessian = symmetric_matrix(8, eigenvalues)
    b = torch.randn(8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    result = ConjugateGradient(iterations=8, rtol=1e-14).solve(lambda v: (hessian @ v[0],), (b,))
    exact = torch.linalg.solve(hessian, b)
    assert float(torch.linalg.vector_norm(result.solution[0] - exact) / torch.linalg.vector_norm(exact)) < 1e-10
    assert result.converged
    torch.testing.assert_close(
        result.residual_norm, torch.linalg.vector_norm(b - hessian @ result.solution[0]), atol=1e-12, rtol=1e-6
    )


def test_stops_early_when_the_tolerance_is_met() -> None:
    # Three distinct eigenvalues: CG's Krylov space holds the exact solution after three steps.
    hessian = symmetric_matrix(30, torch.tensor([1.0] * 10 + [2.0] * 10 + [5.0] * 10))
    b = torch.randn(30, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    result = ConjugateGradient(iterations=25, rtol=1e-10).solve(lambda v: (hessian @ v[0],), (b,))
    assert result.status is SolveStatus.TOLERANCE_REACHED
    assert result.iterations == 3
    assert result.hvp_count == 4  # and one more to recompute b − Hx before claiming the tolerance
    assert float(result.residual_norm) <= 1e-10 * float(torch.linalg.vector_norm(b))


def test_running_out_of_iterations_is_a_usable_truncation() -> None:
    hessian = symmetric_matrix(10, torch.logspace(-2, 2, 10))
    b = torch.ones(10, dtype=torch.float64)
    result = ConjugateGradient(iterations=3, rtol=1e-12).solve(lambda v: (hessian @ v[0],), (b,))
    assert result.status is SolveStatus.ITERATIONS_EXHAUSTED
    assert result.converged
    assert result.iterations == 3
    # CG's residual need not shrink, but its error in the H-norm does (it minimises it over the Krylov space).
    exact = torch.linalg.solve(hessian, b)
    error = result.solution[0] - exact
    assert float(error @ hessian @ error) < float(exact @ hessian @ exact)
    torch.testing.assert_close(result.residual_norm, torch.linalg.vector_norm(b - hessian @ result.solution[0]))


@pytest.mark.parametrize(
    "eigenvalues",
    [[1.0] * 15 + [4.0] * 15, [-2.0] + [1.0] * 14 + [4.0] * 15],
    ids=["converges-in-two", "negative-curvature"],
)
def test_masked_iterations_match_per_step_checks(eigenvalues) -> None:
    # check_every only changes when the host looks: between looks, finished runs freeze their iterate on the device.
    hessian = symmetric_matrix(30, torch.tensor(eigenvalues))
    b = torch.ones(30, dtype=torch.float64)
    calls = {1: 0, 7: 0}

    def counting(check_every: int):
        def hvp(vector):
            calls[check_every] += 1
            return (hessian @ vector[0],)

        return hvp

    every_step = ConjugateGradient(iterations=10, rtol=1e-10, check_every=1).solve(counting(1), (b,))
    rarely = ConjugateGradient(iterations=10, rtol=1e-10, check_every=7).solve(counting(7), (b,))
    assert every_step.iterations == rarely.iterations
    assert every_step.status is rarely.status
    # One product beyond the steps: the one that met negative curvature, or the one that recomputed b − Hx.
    recomputed = every_step.status is SolveStatus.TOLERANCE_REACHED
    assert calls[1] == every_step.iterations + 1
    assert calls[7] == 7 + recomputed  # the masked iterations still ran, changing nothing
    torch.testing.assert_close(every_step.solution[0], rarely.solution[0], rtol=0, atol=0)
    torch.testing.assert_close(every_step.residual_norm, rarely.residual_norm, rtol=0, atol=0)


def test_negative_curvature_at_the_first_step_fails_with_zeros() -> None:
    hessian = torch.diag(torch.tensor([-2.0, 1.0, 3.0], dtype=torch.float64))
    b = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    result = ConjugateGradient(iterations=3).solve(lambda v: (hessian @ v[0],), (b,))
    assert result.status is SolveStatus.NEGATIVE_CURVATURE
    assert not result.converged
    assert torch.equal(result.solution[0], torch.zeros(3, dtype=torch.float64))


def test_non_finite_products_are_reported_as_such() -> None:
    result = ConjugateGradient(iterations=4).solve(lambda v: (v[0] * float("nan"),), (torch.ones(3),))
    assert result.status is SolveStatus.NON_FINITE and not result.converged
    assert torch.isfinite(result.solution[0]).all()


def test_solves_over_parts_of_mixed_shapes_as_one_system() -> None:
    hessian = symmetric_matrix(6, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    b = torch.arange(6, dtype=torch.float64)

    def hvp(vector: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        product = hessian @ torch.cat([vector[0].reshape(-1), vector[1]])
        return product[:4].reshape(2, 2), product[4:]

    result = ConjugateGradient(iterations=6, rtol=1e-14).solve(hvp, (b[:4].reshape(2, 2), b[4:]))
    solution = torch.cat([result.solution[0].reshape(-1), result.solution[1]])
    torch.testing.assert_close(solution, torch.linalg.solve(hessian, b), rtol=1e-10, atol=1e-12)


def test_negative_curvature_after_a_step_keeps_the_truncated_iterate() -> None:
    hessian = torch.diag(torch.tensor([-2.0, 1.0, 3.0], dtype=torch.float64))
    b = torch.tensor([0.5, 1.0, 1.0], dtype=torch.float64)
    result = ConjugateGradient(iterations=3).solve(lambda v: (hessian @ v[0],), (b,))
    assert result.status is SolveStatus.NEGATIVE_CURVATURE
    assert result.converged
    assert result.iterations == 1
    expected = (b @ b) / (b @ hessian @ b) * b  # the first CG step from zero, before the breakdown
    torch.testing.assert_close(result.solution[0], expected, rtol=1e-14, atol=0)


def test_negative_curvature_from_a_warm_start_returns_the_warm_start() -> None:
    # The warm start's residual points along the negative eigenvector: CG stops before its first step and keeps
    # the start it was given (which beats zero), not zeros.
    hessian = torch.diag(torch.tensor([-2.0, 1.0, 3.0], dtype=torch.float64))
    b = torch.tensor([1.0, 1.0, 3.0], dtype=torch.float64)
    start = torch.tensor([0.1, 1.0, 1.0], dtype=torch.float64)  # residual b − H start = (1.2, 0, 0)
    solver = ConjugateGradient(iterations=3)
    result = solver.solve(lambda v: (hessian @ v[0],), (b,), initial=(start,))
    assert result.status is SolveStatus.NEGATIVE_CURVATURE
    assert result.converged and result.iterations == 0
    assert torch.equal(result.solution[0], start)
    assert solver.failure_advice(result) == ""


def test_failure_advice_for_negative_curvature_suggests_damping() -> None:
    hessian = torch.diag(torch.tensor([-2.0, 1.0, 3.0], dtype=torch.float64))
    solver = ConjugateGradient(iterations=3)
    result = solver.solve(lambda v: (hessian @ v[0],), (torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64),))
    assert not result.converged
    assert "damping > 0" in solver.failure_advice(result)
    assert "alpha" not in solver.failure_advice(result)


def test_preconditioned_cg_is_exact_in_n_iterations_and_beats_plain_cg() -> None:
    # Two clusters at the top of a wide spectrum: deflating them leaves an easy system.
    eigenvalues = torch.tensor([1e-2, 2e-2, 3e-2, 5e-2, 8e-2, 0.1, 0.12, 0.15, 50.0, 60.0, 80.0, 100.0])
    hessian = symmetric_matrix(12, eigenvalues)
    b = torch.ones(12, dtype=torch.float64)
    exact = torch.linalg.solve(hessian, b)
    solver = ConjugateGradient(
        iterations=12, rtol=1e-13, preconditioner="spectral", preconditioner_rank=4, preconditioner_steps=12
    )
    result = solver.solve(lambda v: (hessian @ v[0],), (b,))
    assert result.converged and result.status is SolveStatus.TOLERANCE_REACHED
    torch.testing.assert_close(result.solution[0], exact, rtol=1e-10, atol=1e-12)
    assert result.hvp_count == 12 + result.iterations + 1  # building it cost 12 products, b − Hx one
    after = [solver.solve(lambda v: (hessian @ v[0],), (b,)) for _ in range(2)]
    assert [r.hvp_count for r in after] == [r.iterations + 1 for r in after]  # reused: no rebuild
    # M⁻¹H has the 8 small eigenvalues and σ (the top four mapped onto it): 9 distinct values, 9 steps.
    assert result.iterations <= 9
    plain = ConjugateGradient(iterations=8, rtol=1e-30).solve(lambda v: (hessian @ v[0],), (b,))
    error = float(torch.linalg.vector_norm(plain.solution[0] - exact) / torch.linalg.vector_norm(exact))
    assert error > 1e-2


def test_preconditioner_state_round_trips() -> None:
    hessian = symmetric_matrix(6, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    b = torch.ones(6, dtype=torch.float64)
    solver = ConjugateGradient(iterations=3, preconditioner="spectral", preconditioner_rank=2, preconditioner_steps=4)
    solver.solve(lambda v: (hessian @ v[0],), (b,))
    restored = ConjugateGradient(iterations=3, preconditioner="spectral", preconditioner_rank=2, preconditioner_steps=4)
    restored.load_state_dict(solver.state_dict())
    first, second = (s.solve(lambda v: (hessian @ v[0],), (b,)) for s in (solver, restored))
    assert first.hvp_count == second.hvp_count == 3
    torch.testing.assert_close(first.solution[0], second.solution[0], rtol=0, atol=0)


def test_a_preconditioner_built_for_other_shapes_is_rebuilt_at_once() -> None:
    # As after resuming into a module whose trainable weights differ: the stored basis is never paired by position.
    hessian = symmetric_matrix(6, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 60.0]))
    b = torch.ones(6, dtype=torch.float64)

    def split_hvp(vector: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        product = hessian @ torch.cat([vector[0].reshape(-1), vector[1]])
        return product[:4].reshape(2, 2), product[4:]

    solver = ConjugateGradient(iterations=6, preconditioner="spectral", preconditioner_rank=2, preconditioner_steps=4)
    solver.solve(lambda v: (hessian @ v[0],), (b,))  # a basis for one part of 6
    result = solver.solve(split_hvp, (b[:4].reshape(2, 2), b[4:]))
    assert [tuple(part.shape) for part in solver.state_dict()["spectral"]["basis"]] == [(2, 2, 2), (2, 2)]
    assert result.status is SolveStatus.TOLERANCE_REACHED
    assert result.hvp_count == 4 + result.iterations + 1  # rebuilt: 4 Lanczos products, then CG and its check
    solution = torch.cat([result.solution[0].reshape(-1), result.solution[1]])
    torch.testing.assert_close(solution, torch.linalg.solve(hessian, b), rtol=1e-10, atol=1e-12)


def test_reset_state_drops_the_preconditioner() -> None:
    hessian = symmetric_matrix(6, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    solver = ConjugateGradient(iterations=3, preconditioner="spectral", preconditioner_rank=2, preconditioner_steps=4)
    solver.solve(lambda v: (hessian @ v[0],), (torch.ones(6, dtype=torch.float64),))
    solver.reset_state()
    assert solver.state_dict() == {"spectral": None, "solves_since_build": 0}


def test_unknown_preconditioner_is_refused() -> None:
    with pytest.raises(ValueError, match=r"ConjugateGradient\(preconditioner='jacobi'\): allowed values are"):
        ConjugateGradient(preconditioner="jacobi")


def ill_conditioned_float32_system(size: int = 300, condition: float = 1e3) -> tuple[torch.Tensor, torch.Tensor]:
    """A float32 SPD matrix with eigenvalues spread log-uniformly over ``[1, condition]``, and a right-hand side."""
    eigenvalues = torch.logspace(0, torch.log10(torch.tensor(condition)).item(), size, dtype=torch.float64)
    hessian = symmetric_matrix(size, eigenvalues, seed=1).to(torch.float32)
    return hessian, torch.randn(size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    ("rtol", "status"),
    [
        (1e-4, SolveStatus.TOLERANCE_REACHED),
        (1e-6, SolveStatus.ITERATIONS_EXHAUSTED),
        (1e-8, SolveStatus.ITERATIONS_EXHAUSTED),
    ],
)
def test_float32_cg_claims_its_tolerance_only_when_the_true_residual_meets_it(rtol: float, status) -> None:
    # In float32 the recurrence's residual drifts below the true one b − Hx: on this system CG used to claim rtol
    # 1e-6 with a true residual 22× the tolerance (2300× at 1e-8), which float32 cannot reach. The float64
    # reference is the exact residual of the returned solution on the float32 system that was solved.
    hessian, b = ill_conditioned_float32_system()
    products = []

    def hvp(vector: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        products.append(1)
        return (hessian @ vector[0],)

    result = ConjugateGradient(iterations=600, rtol=rtol).solve(hvp, (b,))
    solution = result.solution[0]
    reference = float(torch.linalg.vector_norm(b.double() - hessian.double() @ solution.double()))
    tolerance = rtol * float(torch.linalg.vector_norm(b.double()))
    assert result.status is status and result.converged
    if status is SolveStatus.TOLERANCE_REACHED:
        assert reference <= tolerance
    else:
        assert reference > tolerance and float(result.residual_norm) > tolerance and result.iterations == 600
    # The reported residual is b − Hx recomputed in float32, not the recurrence's; float32's own rounding of
    # b − Hx is up to ~30% of a residual this close to its floor (the recurrence's was off by up to 30×).
    recomputed = torch.linalg.vector_norm(b - hessian @ solution)
    torch.testing.assert_close(result.residual_norm, recomputed, rtol=1e-5, atol=0)
    assert abs(float(result.residual_norm) - reference) <= 0.3 * reference
    assert result.hvp_count == len(products) > result.iterations  # the recomputations are counted
