"""The IFT hypergradient against closed forms, finite differences and an independent dense computation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_hypergrad import HypergradientWarning, hypergradient, hypergradient_with_solve
from lightning_hypergrad.solvers import (
    ConjugateGradient,
    Exact,
    Identity,
    IHVPSolver,
    Neumann,
    SolveResult,
    SolveStatus,
)
from tests.helpers import RidgeProblem, relative_error


@pytest.fixture
def ridge() -> RidgeProblem:
    return RidgeProblem.make()


@pytest.mark.parametrize(
    "solver",
    [
        Exact(),
        ConjugateGradient(iterations=5, rtol=1e-15),
        ConjugateGradient(5, 1e-15, preconditioner="spectral", preconditioner_rank=2, preconditioner_steps=5),
    ],
    ids=["exact", "cg-n", "preconditioned-cg-n"],
)
def test_ridge_matches_the_closed_form(ridge: RidgeProblem, solver) -> None:
    train_loss, val_loss, weights, log_decay = ridge.losses_at_minimizer()
    (result,) = hypergradient(train_loss, val_loss, [weights], [log_decay], solver)
    assert relative_error(result, ridge.exact_hypergradient()) <= 1e-8


def test_closed_form_agrees_with_differentiating_the_minimiser(ridge: RidgeProblem) -> None:
    # An independent check of the oracle itself: autograd through w*(λ) = H(λ)⁻¹ 2Xᵀy/n.
    log_decay = ridge.log_decay.clone().requires_grad_(True)
    n = ridge.train_inputs.shape[0]
    hessian = 2 * ridge.train_inputs.T @ ridge.train_inputs / n + 2 * torch.diag(log_decay.exp())
    minimizer = torch.linalg.solve(hessian, 2 * ridge.train_inputs.T @ ridge.train_targets / n)
    (expected,) = torch.autograd.grad(ridge.val_loss(minimizer), log_decay)
    assert relative_error(ridge.exact_hypergradient(), expected) <= 1e-12


@pytest.mark.parametrize("iterations", [1, 3, 10, 50])
def test_ridge_neumann_matches_the_truncated_series(ridge: RidgeProblem, iterations: int) -> None:
    alpha = 0.9 / float(torch.linalg.eigvalsh(ridge.hessian()).max())
    train_loss, val_loss, weights, log_decay = ridge.losses_at_minimizer()
    (result,) = hypergradient(train_loss, val_loss, [weights], [log_decay], Neumann(iterations, alpha))
    assert relative_error(result, ridge.truncated_neumann_hypergradient(iterations, alpha)) <= 1e-10


def test_ridge_neumann_converges_to_the_exact_hypergradient(ridge: RidgeProblem) -> None:
    alpha = 0.9 / float(torch.linalg.eigvalsh(ridge.hessian()).max())
    errors = []
    for iterations in [2, 4, 8, 16, 32, 64]:
        train_loss, val_loss, weights, log_decay = ridge.losses_at_minimizer()
        (result,) = hypergradient(train_loss, val_loss, [weights], [log_decay], Neumann(iterations, alpha))
        errors.append(relative_error(result, ridge.exact_hypergradient()))
    assert all(later < earlier for earlier, later in zip(errors, errors[1:]))
    assert errors[-1] <= 1e-8


@pytest.mark.parametrize("damping", [0.1, 2.0])
def test_damping_solves_with_the_shifted_hessian(ridge: RidgeProblem, damping: float) -> None:
    train_loss, val_loss, weights, log_decay = ridge.losses_at_minimizer()
    solver = ConjugateGradient(iterations=5, rtol=1e-15)
    (result,) = hypergradient(train_loss, val_loss, [weights], [log_decay], solver, damping=damping)
    shifted = ridge.hessian() + damping * torch.eye(ridge.features, dtype=torch.float64)
    solution = torch.linalg.solve(shifted, ridge.val_gradient(ridge.minimizer()))
    assert relative_error(result, ridge.hypergradient_from_solution(solution)) <= 1e-8


@pytest.mark.parametrize("damping", [-0.1, float("nan"), float("inf")])
def test_damping_must_be_finite_and_non_negative(ridge: RidgeProblem, damping: float) -> None:
    train_loss, val_loss, weights, log_decay = ridge.losses_at_minimizer()
    with pytest.raises(ValueError, match=r"damping=.*: damping must be a finite number >= 0"):
        hypergradient(train_loss, val_loss, [weights], [log_decay], Exact(), damping=damping)


def test_direct_term_enters_with_a_plus_sign(ridge: RidgeProblem) -> None:
    train_loss, val_loss, weights, log_decay = ridge.losses_at_minimizer()
    slopes = torch.linspace(-2.0, 3.0, ridge.features, dtype=torch.float64)
    val_loss_with_direct = val_loss + (slopes * log_decay).sum() + 0.5 * log_decay.pow(2).sum()
    (result,) = hypergradient(train_loss, val_loss_with_direct, [weights], [log_decay], Exact())
    expected = ridge.exact_hypergradient() + slopes + ridge.log_decay
    assert relative_error(result, expected) <= 1e-8


def test_direct_term_alone_when_the_weights_do_not_matter() -> None:
    weights = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    train_loss = (weights - 1).pow(2).sum()
    val_loss = scale.pow(3)  # dL_V/dλ = 3λ² = 12, no path through w
    (result,) = hypergradient(train_loss, val_loss, [weights], [scale], Exact())
    assert torch.equal(result, torch.tensor(12.0, dtype=torch.float64))


def test_hyperparameters_without_influence_get_exact_zeros_of_their_shape_and_dtype(ridge: RidgeProblem) -> None:
    train_loss, val_loss, weights, log_decay = ridge.losses_at_minimizer()
    unused_matrix = torch.ones(2, 3, dtype=torch.float32, requires_grad=True)
    unused_scalar = torch.tensor(1.0, dtype=torch.bfloat16, requires_grad=True)
    result = hypergradient(train_loss, val_loss, [weights], [unused_matrix, log_decay, unused_scalar], Exact())
    assert len(result) == 3
    assert result[0].shape == (2, 3) and result[0].dtype == torch.float32
    assert result[2].shape == () and result[2].dtype == torch.bfloat16
    assert torch.equal(result[0], torch.zeros(2, 3)) and torch.equal(result[2], torch.zeros((), dtype=torch.bfloat16))
    assert relative_error(result[1], ridge.exact_hypergradient()) <= 1e-8


def test_weights_outside_the_training_loss_and_losses_without_graph() -> None:
    used = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    idle = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    decay = torch.tensor([0.0], dtype=torch.float64, requires_grad=True)
    train_loss = (used - 2).pow(2).sum() + (decay.exp() * used.pow(2)).sum()
    val_loss = (used - 3).pow(2).sum()
    (result,) = hypergradient(train_loss, val_loss, [used, idle], [decay], Exact())
    assert torch.equal(result, torch.tensor([2.0], dtype=torch.float64))  # the docstring example's exact value
    constant = torch.tensor(1.0, dtype=torch.float64)
    (nothing,) = hypergradient(constant, constant, [used], [decay], Exact())
    assert torch.equal(nothing, torch.zeros(1, dtype=torch.float64))


def mixed_shape_problem(seed: int = 0):
    """A small tanh network with a per-weight decay for every tensor and a global input-noise scale."""
    torch.manual_seed(seed)
    network = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    weights = list(network.parameters())
    decays = [torch.full_like(w, -1.0).add_(0.1 * torch.randn_like(w)).requires_grad_(True) for w in weights]
    input_scale = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    train_inputs, val_inputs = torch.randn(16, 3, dtype=torch.float64), torch.randn(12, 3, dtype=torch.float64)
    train_targets, val_targets = torch.randn(16, 2, dtype=torch.float64), torch.randn(12, 2, dtype=torch.float64)

    def losses(flat_weights: torch.Tensor, flat_hparams: torch.Tensor):
        parts = torch.split(flat_weights, [w.numel() for w in weights])
        w = [p.reshape(t.shape) for p, t in zip(parts, weights)]
        hparts = torch.split(flat_hparams, [d.numel() for d in decays] + [1])
        lam = [p.reshape(t.shape) for p, t in zip(hparts, decays)]
        scale = hparts[-1].reshape(())

        def forward(x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(x @ w[0].T + w[1]) @ w[2].T + w[3]

        decay = sum((log_decay.exp() * p.pow(2)).sum() for log_decay, p in zip(lam, w))
        train = (forward(train_inputs * scale) - train_targets).pow(2).mean() + decay
        val = (forward(val_inputs) - val_targets).pow(2).mean() + 0.1 * scale.pow(2)
        return train, val

    return weights, decays, input_scale, losses


def test_mixed_shapes_match_an_independent_dense_ift_computation() -> None:
    weights, decays, input_scale, losses = mixed_shape_problem()
    flat_w = torch.cat([w.detach().reshape(-1) for w in weights])
    flat_h = torch.cat([d.detach().reshape(-1) for d in decays] + [input_scale.detach().reshape(1)])
    hessian = torch.autograd.functional.hessian(lambda w: losses(w, flat_h)[0], flat_w)
    mixed = torch.autograd.functional.jacobian(
        lambda h: torch.autograd.functional.jacobian(lambda w: losses(w, h)[0], flat_w, create_graph=True), flat_h
    )
    val_w = torch.autograd.functional.jacobian(lambda w: losses(w, flat_h)[1], flat_w)
    val_h = torch.autograd.functional.jacobian(lambda h: losses(flat_w, h)[1], flat_h)
    expected = val_h - mixed.T @ torch.linalg.solve(hessian, val_w)

    # The same losses built from the real tensors, so gradients flow to each of them.
    flat_w_live = torch.cat([w.reshape(-1) for w in weights])
    flat_h_live = torch.cat([d.reshape(-1) for d in decays] + [input_scale.reshape(1)])
    train_loss, val_loss = losses(flat_w_live, flat_h_live)
    result = hypergradient(train_loss, val_loss, weights, [*decays, input_scale], Exact())
    assert [r.shape for r in result] == [d.shape for d in decays] + [torch.Size([])]
    assert relative_error(torch.cat([r.reshape(-1) for r in result]), expected) <= 1e-10


def logistic_problem(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    options = {"dtype": torch.float64, "generator": generator}
    true_weights = torch.tensor([1.5, -2.0, 0.5], dtype=torch.float64)
    train_inputs, val_inputs = torch.randn(60, 3, **options), torch.randn(40, 3, **options)
    train_labels = (torch.rand(60, **options) < torch.sigmoid(train_inputs @ true_weights)).double()
    val_labels = (torch.rand(40, **options) < torch.sigmoid(val_inputs @ true_weights)).double()

    def train_loss(weights: torch.Tensor, log_decay: torch.Tensor) -> torch.Tensor:
        data = nn.functional.binary_cross_entropy_with_logits(train_inputs @ weights, train_labels)
        return data + 0.5 * (log_decay.exp() * weights.pow(2)).sum()

    def val_loss(weights: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(val_inputs @ weights, val_labels)

    def minimise(log_decay: torch.Tensor) -> torch.Tensor:
        weights = torch.zeros(3, dtype=torch.float64)
        for _ in range(50):  # Newton's method: quadratic convergence on a strongly convex problem
            gradient = torch.autograd.functional.jacobian(lambda w: train_loss(w, log_decay), weights)
            hessian = torch.autograd.functional.hessian(lambda w: train_loss(w, log_decay), weights)
            weights = weights - torch.linalg.solve(hessian, gradient)
        assert float(torch.linalg.vector_norm(gradient)) < 1e-13
        return weights

    return train_loss, val_loss, minimise


@pytest.mark.parametrize("solver", [Exact(), ConjugateGradient(iterations=3, rtol=1e-15)], ids=["exact", "cg-n"])
def test_finite_differences_of_the_bilevel_objective(solver) -> None:
    train_loss, val_loss, minimise = logistic_problem()
    log_decay = torch.tensor([-2.0, -1.0, 0.5], dtype=torch.float64)
    weights = minimise(log_decay).requires_grad_(True)
    hparam = log_decay.clone().requires_grad_(True)
    (result,) = hypergradient(train_loss(weights, hparam), val_loss(weights), [weights], [hparam], solver)

    epsilon = 1e-5
    central = torch.zeros(3, dtype=torch.float64)
    for index in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[index] = epsilon
        upper, lower = val_loss(minimise(log_decay + step)), val_loss(minimise(log_decay - step))
        central[index] = (upper - lower) / (2 * epsilon)
    assert relative_error(result, central) <= 1e-4
    assert (result.sign() == central.sign()).all()


def test_the_training_gradient_is_built_once_for_all_products(ridge: RidgeProblem, monkeypatch) -> None:
    calls = []
    original = torch.autograd.grad

    def spy(*args, **kwargs):
        calls.append(kwargs.get("create_graph", False))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", spy)
    train_loss, val_loss, weights, log_decay = ridge.losses_at_minimizer()
    result = hypergradient_with_solve(train_loss, val_loss, [weights], [log_decay], Neumann(iterations=7, alpha=0.1))
    assert calls.count(True) == 1
    # validation gradient + training gradient + 7 Hessian-vector products + 1 mixed product
    assert len(calls) == 1 + 1 + 7 + 1
    assert result.solve.hvp_count == 7


def test_graphs_and_grad_fields_are_left_alone(ridge: RidgeProblem) -> None:
    train_loss, val_loss, weights, log_decay = ridge.losses_at_minimizer()
    weights.grad = torch.full_like(weights, 7.0)
    result = hypergradient(train_loss, val_loss, [weights], [log_decay], ConjugateGradient(5, 1e-12))
    assert all(not r.requires_grad and r.grad_fn is None for r in result)
    assert torch.equal(weights.grad, torch.full_like(weights, 7.0))
    assert log_decay.grad is None
    # The caller's graphs are still usable afterwards.
    (train_loss + val_loss).backward()
    assert log_decay.grad is not None


def test_results_report_the_solve_and_the_stationarity_gap(ridge: RidgeProblem) -> None:
    train_loss, val_loss, weights, log_decay = ridge.losses_at_minimizer()
    result = hypergradient_with_solve(train_loss, val_loss, [weights], [log_decay], ConjugateGradient(5, 1e-14))
    assert result.solve.status is SolveStatus.TOLERANCE_REACHED
    assert float(result.train_gradient_norm) < 1e-12  # w is the exact minimiser
    torch.testing.assert_close(
        result.solve.solution[0], torch.linalg.solve(ridge.hessian(), ridge.val_gradient(ridge.minimizer()))
    )
    torch.testing.assert_close(result.direct[0], torch.zeros(ridge.features, dtype=torch.float64))


def test_warm_start_reaches_the_answer_without_iterations(ridge: RidgeProblem) -> None:
    train_loss, val_loss, weights, log_decay = ridge.losses_at_minimizer()
    first = hypergradient_with_solve(train_loss, val_loss, [weights], [log_decay], ConjugateGradient(5, 1e-12))
    second = hypergradient_with_solve(
        train_loss, val_loss, [weights], [log_decay], ConjugateGradient(5, 1e-12), initial=first.solve.solution
    )
    assert second.solve.iterations == 0
    torch.testing.assert_close(second.hypergradients[0], first.hypergradients[0], rtol=1e-12, atol=1e-14)


def test_a_divergent_solve_warns_and_keeps_only_the_direct_term(ridge: RidgeProblem) -> None:
    train_loss, val_loss, weights, log_decay = ridge.losses_at_minimizer()
    alpha = 3.0 / float(torch.linalg.eigvalsh(ridge.hessian()).max())
    val_loss = val_loss + log_decay.sum()
    with pytest.warns(HypergradientWarning, match=r"solve failed \(diverged"):
        (result,) = hypergradient(train_loss, val_loss, [weights], [log_decay], Neumann(iterations=50, alpha=alpha))
    assert torch.equal(result, torch.ones(ridge.features, dtype=torch.float64))


def test_reduced_precision_weights_accumulate_in_float32() -> None:
    torch.manual_seed(0)
    weights64 = torch.randn(6, dtype=torch.float64)
    decay64 = torch.full((6,), -1.0, dtype=torch.float64)
    inputs = torch.randn(32, 6, dtype=torch.float64)
    targets = inputs @ torch.randn(6, dtype=torch.float64)

    def run(dtype: torch.dtype):
        weights = weights64.to(dtype).requires_grad_(True)
        decay = decay64.to(dtype).requires_grad_(True)
        train = (inputs.to(dtype) @ weights - targets.to(dtype)).pow(2).mean() + (decay.exp() * weights.pow(2)).sum()
        val = (inputs.to(dtype) @ weights).pow(2).mean()
        return hypergradient(train, val, [weights], [decay], Neumann(iterations=10, alpha=0.05))[0]

    reduced, reference = run(torch.bfloat16), run(torch.float64)
    assert reduced.dtype == torch.bfloat16
    cosine = torch.nn.functional.cosine_similarity(reduced.double(), reference, dim=0)
    assert float(cosine) > 0.99


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (
            {"train_loss": torch.ones(3, requires_grad=True)},
            ValueError,
            r"train_loss must be a scalar tensor, got shape \(3,\)",
        ),
        ({"val_loss": 1.0}, TypeError, "val_loss must be a scalar tensor, got float"),
        ({"params": []}, ValueError, "params is empty"),
        (
            {"hparams": torch.ones(2, requires_grad=True)},
            TypeError,
            "hparams must be a sequence of tensors, got a single tensor",
        ),
        ({"params": [torch.ones(2)]}, ValueError, r"params\[0\] \(shape \(2,\)\) does not require grad"),
        ({"solver": "neumann"}, TypeError, "solver must be an IHVPSolver .* got str"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(ridge: RidgeProblem, arguments, error, message) -> None:
    train_loss, val_loss, weights, log_decay = ridge.losses_at_minimizer()
    call = {"train_loss": train_loss, "val_loss": val_loss, "params": [weights], "hparams": [log_decay], "solver": None}
    call.update(arguments)
    with pytest.raises(error, match=message):
        hypergradient(**call)


def test_a_tensor_cannot_be_both_weight_and_hyperparameter(ridge: RidgeProblem) -> None:
    train_loss, val_loss, weights, log_decay = ridge.losses_at_minimizer()
    with pytest.raises(ValueError, match=r"hparams\[1\] also appear in params"):
        hypergradient(train_loss, val_loss, [weights], [log_decay, weights], Identity())


@pytest.mark.parametrize("loss_scale", [2.0**-8, 2.0**10, 3.7])
def test_loss_scaling_leaves_the_hypergradient_unchanged(ridge: RidgeProblem, loss_scale: float) -> None:
    train_loss, val_loss, weights, log_decay = ridge.losses_at_minimizer()
    (result,) = hypergradient(train_loss, val_loss, [weights], [log_decay], Exact(), loss_scale=loss_scale)
    assert relative_error(result, ridge.exact_hypergradient()) <= 1e-10


def half_precision_regression(scale: float, compute: torch.dtype):
    """float32 parameters computed in ``compute`` precision (as under autocast), with a tiny validation loss."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(32, 4, generator=generator)
    targets = inputs @ torch.randn(4, generator=generator)
    val_inputs = torch.randn(16, 4, generator=generator)
    val_targets = val_inputs @ torch.randn(4, generator=generator)
    weights = torch.randn(4, generator=generator).requires_grad_(True)
    log_decay = torch.full((4,), -1.0, requires_grad=True)
    low = weights.to(compute)
    train_loss = (inputs.to(compute) @ low - targets.to(compute)).pow(2).float().mean() + (
        log_decay.exp() * weights**2
    ).sum()
    # 1e-8 · loss: its gradients (~1e-8) lie below float16's smallest subnormal (6e-8) and flush to zero.
    val_loss = 1e-8 * (val_inputs.to(compute) @ low - val_targets.to(compute)).pow(2).float().mean()
    return hypergradient_with_solve(train_loss, val_loss, [weights], [log_decay], Neumann(10, 0.05), loss_scale=scale)


def test_loss_scaling_rescues_float16_gradients_from_underflow() -> None:
    reference = half_precision_regression(1.0, torch.float32).hypergradients[0]
    assert float(reference.abs().max()) > 1e-8
    unscaled = half_precision_regression(1.0, torch.float16).hypergradients[0]
    assert torch.equal(unscaled, torch.zeros(4))  # everything underflowed
    scaled = half_precision_regression(2.0**16, torch.float16).hypergradients[0]
    assert float(torch.nn.functional.cosine_similarity(scaled, reference, dim=0)) > 0.99


def test_a_loss_scale_that_overflows_is_reported_not_applied() -> None:
    result = half_precision_regression(2.0**24, torch.float16)
    assert not result.solve.converged
    assert all(torch.isfinite(part).all() for part in result.solve.solution)


def test_average_is_applied_to_every_exchanged_vector(ridge: RidgeProblem) -> None:
    calls = []

    def average(vector):
        calls.append([tuple(part.shape) for part in vector])
        return vector

    train_loss, val_loss, weights, log_decay = ridge.losses_at_minimizer()
    features = ridge.features
    solver = Neumann(iterations=4, alpha="auto", lanczos_steps=3)
    result = hypergradient_with_solve(train_loss, val_loss, [weights], [log_decay], solver, average=average)
    # the validation gradient with the direct term and the losses' two finiteness flags, 3 Lanczos + 4 series
    # products, the mixed term: K + 2 exchanges (+ Lanczos), of which K + 1 (+ Lanczos) of weight size
    assert calls == [[(features,), (features,), (2,)]] + [[(features,)]] * 7 + [[(features,)]]
    train_loss, val_loss, weights, log_decay = ridge.losses_at_minimizer()
    unaveraged = hypergradient_with_solve(train_loss, val_loss, [weights], [log_decay], solver)
    torch.testing.assert_close(result.hypergradients[0], unaveraged.hypergradients[0], rtol=1e-12, atol=0)


@pytest.mark.parametrize("iterations", [0, 1, 4, 12])
def test_neumann_equals_differentiating_through_unrolled_gradient_descent(ridge: RidgeProblem, iterations: int) -> None:
    # Lorraine et al., Theorem 1: K + 1 gradient steps from the optimum, differentiated by autograd, give the
    # K-product Neumann hypergradient (K = 0 is the Identity(α) solver).
    alpha = 0.2
    log_decay = ridge.log_decay.clone().requires_grad_(True)
    weights = ridge.minimizer().requires_grad_(True)  # w_0 = w*, not a function of λ
    for _ in range(iterations + 1):
        (gradient,) = torch.autograd.grad(ridge.train_loss(weights, log_decay), weights, create_graph=True)
        weights = weights - alpha * gradient
    (unrolled,) = torch.autograd.grad(ridge.val_loss(weights), log_decay)

    train_loss, val_loss, w, hparam = ridge.losses_at_minimizer()
    solver = Identity(alpha) if iterations == 0 else Neumann(iterations, alpha)
    (implicit,) = hypergradient(train_loss, val_loss, [w], [hparam], solver)
    assert relative_error(implicit, unrolled) <= 1e-10


def test_identity_equals_one_unrolled_step_only_at_a_stationary_point(ridge: RidgeProblem) -> None:
    alpha = 0.2
    for offset, agrees in ((0.0, True), (0.5, False)):
        start = ridge.minimizer() + offset  # offset 0: w* itself, where ∂L_T/∂w = 0
        log_decay = ridge.log_decay.clone().requires_grad_(True)
        weights = start.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(ridge.train_loss(weights, log_decay), weights, create_graph=True)
        (unrolled,) = torch.autograd.grad(ridge.val_loss(weights - alpha * gradient), log_decay)
        weights = start.clone().requires_grad_(True)
        losses = ridge.train_loss(weights, log_decay), ridge.val_loss(weights)
        (implicit,) = hypergradient(*losses, [weights], [log_decay], Identity(alpha))
        assert (relative_error(implicit, unrolled) <= 1e-10) is agrees, offset


def test_a_solver_written_by_a_user_gets_b_as_a_sequence_and_the_exact_answer(ridge: RidgeProblem) -> None:
    class DenseSolver(IHVPSolver):
        """Knows nothing of the library's helpers: reads b, forms H column by column, solves densely."""

        def solve(self, hvp, b, initial=None) -> SolveResult:
            (part,) = b  # any sequence of tensors
            identity = torch.eye(part.numel(), dtype=part.dtype)
            hessian = torch.stack([hvp((column,))[0] for column in identity], dim=1)
            solution = torch.linalg.solve(hessian, part)
            return SolveResult((solution,), 0, torch.zeros(()), True, SolveStatus.TOLERANCE_REACHED, part.numel())

    train_loss, val_loss, weights, log_decay = ridge.losses_at_minimizer()
    (result,) = hypergradient(train_loss, val_loss, [weights], [log_decay], DenseSolver())
    assert relative_error(result, ridge.exact_hypergradient()) <= 1e-10
