"""The dense oracle: exact solves, singular systems, and its size limit."""

from __future__ import annotations

import pytest
import torch

from lightning_hypergrad.solvers import Exact, SolveStatus
from tests.helpers import symmetric_matrix


def test_solves_a_nonsingular_indefinite_system_exactly() -> None:
    hessian = symmetric_matrix(5, torch.tensor([-3.0, -0.5, 0.2, 1.0, 8.0]))
    b = torch.arange(1.0, 6.0, dtype=torch.float64)
    result = Exact().solve(lambda v: (hessian @ v[0],), (b,))
    torch.testing.assert_close(result.solution[0], torch.linalg.solve(hessian, b), rtol=1e-12, atol=1e-12)
    assert result.status is SolveStatus.TOLERANCE_REACHED
    assert result.hvp_count == 5
    assert float(result.residual_norm) < 1e-12


def test_singular_system_gets_the_minimum_norm_least_squares_solution() -> None:
    hessian = symmetric_matrix(4, torch.tensor([0.0, 1.0, 2.0, 4.0]))
    b = torch.ones(4, dtype=torch.float64)
    result = Exact().solve(lambda v: (hessian @ v[0],), (b,))
    torch.testing.assert_close(result.solution[0], torch.linalg.pinv(hessian) @ b, rtol=1e-10, atol=1e-12)
    null_direction = torch.linalg.eigh(hessian).eigenvectors[:, 0]
    assert abs(float(result.solution[0] @ null_direction)) < 1e-10
    torch.testing.assert_close(result.residual_norm, abs(b @ null_direction))


def test_refuses_problems_above_its_size_limit() -> None:
    with pytest.raises(ValueError, match=r"Exact\(max_size=10\) refuses a system with P=12 weights"):
        Exact(max_size=10).solve(lambda v: v, (torch.ones(3, 4),))
