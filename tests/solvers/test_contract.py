"""Every solver, one table: the contract of IHVPSolver.solve."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from lightning_hypergrad.solvers import (
    Amortized,
    ConjugateGradient,
    Exact,
    Identity,
    IHVPSolver,
    Neumann,
    SolveResult,
    SolveStatus,
)
from lightning_hypergrad.solvers.base import Donated
from tests.helpers import symmetric_matrix

SOLVERS = {
    "neumann": lambda: Neumann(iterations=5, alpha=1.0),
    "neumann-auto": lambda: Neumann(iterations=5, alpha="auto", lanczos_steps=3),
    "conjugate-gradient": lambda: ConjugateGradient(iterations=5, rtol=1e-10),
    "identity": lambda: Identity(alpha=1.0),
    "exact": lambda: Exact(),
    "amortized": lambda: Amortized(iterations=2),
    "amortized-alpha": lambda: Amortized(iterations=3, alpha=1.0),
}

# Parts of every shape the weights of a network have, in every floating dtype.
SHAPES_AND_DTYPES = [((3, 4), torch.float64), ((5,), torch.float32), ((), torch.float32), ((2, 1, 3), torch.bfloat16)]


@pytest.fixture(params=list(SOLVERS), ids=list(SOLVERS))
def solver(request: pytest.FixtureRequest) -> IHVPSolver:
    return SOLVERS[request.param]()


def right_hand_side(seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(shape, generator=generator).to(dtype) for shape, dtype in SHAPES_AND_DTYPES)


def test_identity_hessian_returns_b_exactly_with_shapes_and_dtypes(solver: IHVPSolver) -> None:
    b = right_hand_side()
    result = solver.solve(lambda v: v, b)
    assert isinstance(result, SolveResult)
    assert result.converged
    assert len(result.solution) == len(b)
    for solution_part, b_part in zip(result.solution, b):
        assert solution_part.shape == b_part.shape
        assert solution_part.dtype == b_part.dtype
        assert torch.equal(solution_part, b_part)


def test_result_fields_are_typed_and_detached(solver: IHVPSolver) -> None:
    b = tuple(part.requires_grad_(True) for part in right_hand_side() if part.dtype != torch.bfloat16)
    result = solver.solve(lambda v: tuple(2 * part for part in v), b)
    assert isinstance(result.iterations, int)
    assert isinstance(result.hvp_count, int)
    assert isinstance(result.status, SolveStatus)
    assert result.residual_norm.ndim == 0
    assert torch.isfinite(result.residual_norm)
    assert all(not part.requires_grad for part in result.solution)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.iterations = 0  # type: ignore[misc]


def test_products_are_taken_in_at_least_float32(solver: IHVPSolver) -> None:
    seen_dtypes = set()

    def hvp(vector: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        seen_dtypes.update(part.dtype for part in vector)
        return tuple(part.to(torch.bfloat16) for part in vector)  # a reduced-precision product is promoted back

    b = tuple(torch.ones(4, dtype=torch.bfloat16) for _ in range(2))
    result = solver.solve(hvp, b)
    if not isinstance(solver, Identity):
        assert seen_dtypes == {torch.float32}
    assert all(part.dtype == torch.bfloat16 for part in result.solution)
    assert all(torch.equal(part, torch.ones(4, dtype=torch.bfloat16)) for part in result.solution)


def test_zero_right_hand_side_gives_zero_solution(solver: IHVPSolver) -> None:
    hessian = symmetric_matrix(4, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    result = solver.solve(lambda v: (hessian @ v[0],), (torch.zeros(4, dtype=torch.float64),))
    assert result.converged
    assert torch.equal(result.solution[0], torch.zeros(4, dtype=torch.float64))


def test_warm_start_at_the_solution_stays_there(solver: IHVPSolver) -> None:
    hessian = symmetric_matrix(4, torch.tensor([0.5, 0.6, 0.7, 0.8]))
    b = torch.arange(1.0, 5.0, dtype=torch.float64)
    exact = torch.linalg.solve(hessian, b)
    result = solver.solve(lambda v: (hessian @ v[0],), (b,), initial=(exact,))
    assert result.converged
    torch.testing.assert_close(result.solution[0], exact, rtol=1e-12, atol=1e-12)


def test_a_warm_start_worse_than_zero_is_ignored(solver: IHVPSolver) -> None:
    hessian = symmetric_matrix(4, torch.tensor([0.5, 0.6, 0.7, 0.8]))
    b = torch.arange(1.0, 5.0, dtype=torch.float64)
    if isinstance(solver, Amortized):
        # Amortized rescales its start to the best multiple (≥ 0), so "worse than zero" is a start pointing
        # against H⁻¹b; ignoring it leaves a cold solve with one product fewer (the start's).
        cold = Amortized(solver.iterations - 1, solver.alpha).solve(lambda v: (hessian @ v[0],), (b,))
        initial = (-torch.linalg.solve(hessian, b),)
    else:
        cold = solver.solve(lambda v: (hessian @ v[0],), (b,))
        initial = (torch.full((4,), 100.0, dtype=torch.float64),)
    stale = solver.solve(lambda v: (hessian @ v[0],), (b,), initial=initial)
    torch.testing.assert_close(stale.solution[0], cold.solution[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("solver", [Identity(alpha=1.0), Neumann(iterations=5, alpha=1.0)], ids=["identity", "neumann"])
def test_a_warm_start_with_a_small_residual_can_still_end_farther_from_the_solution(solver: IHVPSolver) -> None:
    # The start's error lies along the eigenvalue 1e-4: its residual is 100x smaller than b's, so it is kept,
    # and each of the K + 1 terms removes only a 1e-4 share of that error. The cold solve is exact here.
    hessian = torch.diag(torch.tensor([1.0, 1e-4], dtype=torch.float64))
    b = (torch.tensor([1.0, 0.0], dtype=torch.float64),)
    cold = solver.solve(lambda v: (hessian @ v[0],), b)
    warm = solver.solve(lambda v: (hessian @ v[0],), b, initial=(torch.tensor([1.0, 100.0], dtype=torch.float64),))
    assert torch.equal(cold.solution[0], torch.tensor([1.0, 0.0], dtype=torch.float64))
    terms = 1 + (solver.iterations if isinstance(solver, Neumann) else 0)
    expected = torch.tensor([1.0, 100.0 * (1 - 1e-4) ** terms], dtype=torch.float64)
    torch.testing.assert_close(warm.solution[0], expected, rtol=1e-12, atol=0.0)


def test_warm_start_must_match_b(solver: IHVPSolver) -> None:
    with pytest.raises(ValueError, match="initial must be shaped like b"):
        solver.solve(lambda v: v, (torch.ones(3),), initial=(torch.ones(4),))


def test_the_callers_b_and_warm_start_are_left_as_they_were(solver: IHVPSolver) -> None:
    hessian = symmetric_matrix(4, torch.tensor([0.5, 0.6, 0.7, 0.8]))
    b = [torch.arange(1.0, 5.0, dtype=torch.float64)]  # a list: a container the solver could empty, but must not
    initial = (torch.full((4,), 0.1, dtype=torch.float64),)
    expected_b, expected_initial = b[0].clone(), initial[0].clone()
    for start in (None, initial):
        result = solver.solve(lambda v: (hessian @ v[0],), b, initial=start)
        assert result.converged
        assert len(b) == 1 and torch.equal(b[0], expected_b) and torch.equal(initial[0], expected_initial)


def test_a_donated_b_is_emptied_and_solved_like_any_other(solver: IHVPSolver) -> None:
    hessian = symmetric_matrix(4, torch.tensor([0.5, 0.6, 0.7, 0.8]))
    part = torch.arange(1.0, 5.0, dtype=torch.float64)
    expected = copy.deepcopy(solver).solve(lambda v: (hessian @ v[0],), (part,))
    donated = Donated([part])
    result = solver.solve(lambda v: (hessian @ v[0],), donated)
    assert donated == []  # the solver held the only reference to b while it needed it
    assert torch.equal(part, torch.arange(1.0, 5.0, dtype=torch.float64))  # and never wrote over it
    torch.testing.assert_close(result.solution[0], expected.solution[0], rtol=0, atol=0)


def test_products_that_alias_their_input_or_each_other_are_never_written_over(solver: IHVPSolver) -> None:
    # H swaps two equal parts (so H b = b and x = b); its products are b's own tensors, passed straight through.
    part = torch.arange(1.0, 4.0, dtype=torch.float64)
    b = (part, part)
    result = solver.solve(lambda v: (v[1], v[0]), b)
    assert result.converged
    assert torch.equal(part, torch.arange(1.0, 4.0, dtype=torch.float64))
    for solution_part in result.solution:
        torch.testing.assert_close(solution_part, part, rtol=1e-12, atol=1e-12)

    def shared(v: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        total = 0.5 * (v[0] + v[1])  # H = ½[[I, I], [I, I]]: one fresh tensor returned for both parts
        return total, total

    result = solver.solve(shared, b)
    assert torch.equal(part, torch.arange(1.0, 4.0, dtype=torch.float64))
    for solution_part in result.solution:
        torch.testing.assert_close(solution_part, part, rtol=1e-12, atol=1e-12)


def test_hvp_returning_the_wrong_structure_is_refused(solver: IHVPSolver) -> None:
    b = (torch.ones(3), torch.ones(2))
    with pytest.raises(ValueError, match="hvp returned 1 tensors for a vector of 2 parts"):
        solver.solve(lambda v: v[:1], b, initial=b)  # a warm start makes even Identity take a product
    with pytest.raises(ValueError, match=r"hvp returned shape \(2,\) for part 0 of shape \(3,\)"):
        solver.solve(lambda v: (v[1], v[0]), b, initial=b)


def test_repr_shows_the_configuration(solver: IHVPSolver) -> None:
    text = repr(solver)
    assert text.startswith(type(solver).__name__ + "(")
    for key, value in vars(solver).items():
        if key.startswith("_"):  # state carried between solves, not configuration
            continue
        assert f"{key}={value!r}" in text


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: Neumann(iterations=0), r"Neumann\(iterations=0\): iterations must be an integer >= 1, got 0"),
        (lambda: Neumann(iterations=-3), r"Neumann\(iterations=-3\): iterations must be an integer >= 1, got -3"),
        (lambda: Neumann(alpha=0.0), r"Neumann\(alpha=0.0\): alpha must be a finite number > 0, got 0.0"),
        (lambda: Neumann(alpha=-0.1), r"Neumann\(alpha=-0.1\): alpha must be a finite number > 0, got -0.1"),
        (lambda: Neumann(alpha=float("nan")), r"Neumann\(alpha=nan\): alpha must be a finite number > 0"),
        (
            lambda: Neumann(alpha="fast"),
            r"Neumann\(alpha='fast'\): alpha must be a finite number > 0 or the string 'auto'",
        ),
        (lambda: Neumann(lanczos_steps=0), r"lanczos_steps must be an integer >= 1, got 0"),
        (lambda: Neumann(max_growth=0.0), r"Neumann\(max_growth=0.0\): max_growth must be a finite number > 0"),
        (
            lambda: ConjugateGradient(iterations=0),
            r"ConjugateGradient\(iterations=0\): iterations must be an integer >= 1",
        ),
        (
            lambda: ConjugateGradient(rtol=0.0),
            r"ConjugateGradient\(rtol=0.0\): rtol must be a finite number > 0, got 0.0",
        ),
        (lambda: ConjugateGradient(rtol=-1e-6), r"ConjugateGradient\(rtol=-1e-06\): rtol must be a finite number > 0"),
        (lambda: ConjugateGradient(check_every=0), r"check_every must be an integer >= 1, got 0"),
        (lambda: Identity(alpha=0), r"Identity\(alpha=0\): alpha must be a finite number > 0, got 0"),
        (lambda: Identity(alpha=float("inf")), r"Identity\(alpha=inf\): alpha must be a finite number > 0"),
        (lambda: Exact(max_size=0), r"Exact\(max_size=0\): max_size must be an integer >= 1, got 0"),
        (lambda: Amortized(iterations=0), r"Amortized\(iterations=0\): iterations must be an integer >= 1, got 0"),
        (lambda: Amortized(alpha=-1.0), r"Amortized\(alpha=-1.0\): alpha must be a finite number > 0, got -1.0"),
        (lambda: Amortized(max_growth=0), r"Amortized\(max_growth=0\): max_growth must be a finite number > 0"),
    ],
)
def test_constructors_reject_bad_values(factory, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        factory()


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: Neumann(iterations=2.5), r"Neumann\(iterations=2.5\): iterations must be an integer >= 1, got float"),
        (lambda: Neumann(iterations=True), r"iterations must be an integer >= 1, got bool"),
        (lambda: ConjugateGradient(rtol="small"), r"rtol must be a finite number > 0, got str"),
        (lambda: Amortized(alpha="auto"), r"Amortized\(alpha='auto'\): alpha must be a finite number > 0, got str"),
    ],
)
def test_constructors_reject_wrong_types(factory, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        factory()
