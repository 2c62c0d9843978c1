"""How close each solver's hypergradient comes to the exact one, on scikit-learn's digits.

Two trained models small enough for Exact() to form the dense Hessian: softmax regression (convex: H is positive
definite, every solver should converge to the exact answer) and an MLP with one hidden layer (non-convex: H has
negative eigenvalues, where truncated series and CG stop being approximations of H⁻¹ and become regularised
answers of their own). For each solver: cosine similarity and relative error to Exact(), Hessian-vector
products spent, the solve's status and time.

A third problem measures accuracy per product where it is hard: a tanh MLP 64-20-10 (1,510 weights, one decay
3e-3 per weight) trained to a tight minimum (full-batch L-BFGS, float64), where H is positive definite with a
condition number above 1e4. Cosine to the exact per-weight hypergradient for CG, Neumann and spectrally
preconditioned CG after a given number of products per solve; the preconditioner is built once, on a different
right-hand side (as the previous hyperstep would have), and its build products are listed separately.
Run: python benchmarks/solver_accuracy.py
"""

from __future__ import annotations

import math
import time

import lightning as L
import torch

from lightning_hypergrad import hypergradient_with_solve
from lightning_hypergrad.data import DigitsDataModule
from lightning_hypergrad.models import MLPClassifier
from lightning_hypergrad.solvers import ConjugateGradient, Exact, Identity, Neumann
from lightning_hypergrad.solvers.lanczos import extreme_eigenvalues
from lightning_hypergrad.tasks import WeightDecayClassifier


def trained(hidden: tuple[int, ...]) -> tuple[WeightDecayClassifier, DigitsDataModule]:
    L.seed_everything(0, verbose=False)
    model = WeightDecayClassifier(
        network=MLPClassifier(hidden=hidden), decay_granularity="per_tensor", initial_decay=1e-2
    )
    data = DigitsDataModule(batch_size=64)
    trainer = L.Trainer(
        max_epochs=60,
        precision="64-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, data)
    return model, data


def compare(title: str, hidden: tuple[int, ...]) -> None:
    model, data = trained(hidden)
    train_batch = (data.split.train_inputs.double(), data.split.train_targets)
    validation_batch = (data.split.val_inputs.double(), data.split.val_targets)

    def run(solver, damping: float = 0.0):
        start = time.perf_counter()
        result = hypergradient_with_solve(
            model.training_loss(train_batch),
            model.validation_loss(validation_batch),
            model.weight_parameters(),
            model.hyperparameters(),
            solver,
            damping=damping,
        )
        seconds = time.perf_counter() - start
        return torch.cat([part.reshape(-1) for part in result.hypergradients]), result, seconds

    exact, reference, _ = run(Exact())
    weights = model.weight_parameters()
    gradient = torch.autograd.grad(model.training_loss(train_batch), weights, create_graph=True)

    def hvp(vector):
        return torch.autograd.grad(gradient, weights, vector, retain_graph=True)

    smallest, largest = extreme_eigenvalues(hvp, tuple(torch.randn_like(w) for w in weights), 100)
    print(
        f"\n{title}: {sum(w.numel() for w in weights)} weights, full-batch float64 losses, "
        f"‖∂L_T/∂w‖ = {float(reference.train_gradient_norm):.1e}, Hessian spectrum ≈ [{float(smallest):.2e}, {float(largest):.2e}]"
    )
    print(f"{'solver':<42} {'cosine':>8} {'rel. error':>11} {'products':>9} {'status':>20} {'ms':>7}")
    candidates = [("Identity(alpha=0.1)", Identity(alpha=0.1), 0.0)]
    candidates += [(f"Neumann(iterations={k}, alpha='auto')", Neumann(iterations=k), 0.0) for k in (5, 20, 100, 400)]
    candidates += [
        (f"ConjugateGradient(iterations={k})", ConjugateGradient(iterations=k, rtol=1e-10), 0.0) for k in (5, 20, 100)
    ]
    candidates += [("ConjugateGradient(100), damping=0.05", ConjugateGradient(iterations=100, rtol=1e-10), 0.05)]
    for name, solver, damping in candidates:
        estimate, result, seconds = run(solver, damping)
        cosine = float(torch.nn.functional.cosine_similarity(estimate, exact, dim=0))
        error = float(torch.linalg.vector_norm(estimate - exact) / torch.linalg.vector_norm(exact))
        status = result.solve.status.value
        print(f"{name:<42} {cosine:8.4f} {error:11.2e} {result.solve.hvp_count:9d} {status:>20} {1000 * seconds:7.1f}")


def converged_tanh_mlp():
    """A tanh MLP 64-20-10 at a tight minimum of CE + Σ ½ e^λ w² (λ = log 3e-3 per weight), float64."""
    split = DigitsDataModule(batch_size=64)
    split.setup("fit")
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(64, 20), torch.nn.Tanh(), torch.nn.Linear(20, 10)).double()
    weights = list(network.parameters())
    log_decays = [torch.full_like(w, math.log(3e-3), requires_grad=True) for w in weights]
    inputs, targets = split.split.train_inputs.double(), split.split.train_targets
    val_inputs, val_targets = split.split.val_inputs.double(), split.split.val_targets

    def train_loss():
        penalty = sum((0.5 * d.exp() * w.pow(2)).sum() for d, w in zip(log_decays, weights))
        return torch.nn.functional.cross_entropy(network(inputs), targets) + penalty

    def val_loss(count: int | None = None):
        return torch.nn.functional.cross_entropy(network(val_inputs[:count]), val_targets[:count])

    optimizer = torch.optim.LBFGS(
        weights,
        max_iter=5000,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        loss = train_loss()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weights, log_decays, train_loss, val_loss, network, (inputs, targets)


def diagonal_pcg(matrix: torch.Tensor, right: torch.Tensor, diagonal: torch.Tensor, steps: int) -> torch.Tensor:
    """Dense Jacobi-preconditioned CG from zero, ``steps`` products (a reference, not library code)."""
    solution, residual = torch.zeros_like(right), right.clone()
    preconditioned = residual / diagonal
    direction, inner = preconditioned.clone(), residual @ preconditioned
    for _ in range(steps):
        product = matrix @ direction
        step = inner / (direction @ product)
        solution, residual = solution + step * direction, residual - step * product
        preconditioned = residual / diagonal
        new_inner = residual @ preconditioned
        direction, inner = preconditioned + new_inner / inner * direction, new_inner
    return solution


def per_product_accuracy() -> None:
    weights, log_decays, train_loss, val_loss, network, (train_inputs, train_targets) = converged_tanh_mlp()
    network_names = list(network.named_parameters())

    def hypergradient_of(solver, count: int | None = None):
        result = hypergradient_with_solve(train_loss(), val_loss(count), weights, log_decays, solver)
        return torch.cat([part.reshape(-1) for part in result.hypergradients]), result

    exact, reference = hypergradient_of(Exact())
    gradient = torch.autograd.grad(train_loss(), weights, create_graph=True)

    def hvp(vector):
        return torch.autograd.grad(gradient, weights, vector, retain_graph=True)

    smallest, largest = extreme_eigenvalues(hvp, tuple(torch.randn_like(w) for w in weights), 200)
    print(
        f"\nconverged tanh MLP 64-20-10: {sum(w.numel() for w in weights)} weights, one decay per weight, "
        f"‖∂L_T/∂w‖ = {float(reference.train_gradient_norm):.1e}, Hessian spectrum ≈ [{float(smallest):.2e}, "
        f"{float(largest):.2e}] (condition ≈ {float(largest / smallest):.1e})"
    )
    print(f"{'solver':<58} {'products/solve':>14} {'cosine to exact':>16}")
    for products in (10, 20, 30, 50, 100):
        cosine = torch.nn.functional.cosine_similarity(
            hypergradient_of(ConjugateGradient(products, rtol=1e-30))[0], exact, dim=0
        )
        print(f"{'ConjugateGradient':<58} {products:14d} {float(cosine):16.4f}")
    for products in (20, 30, 100):
        estimate, result = hypergradient_of(Neumann(products - 10, alpha="auto", lanczos_steps=10))
        cosine = torch.nn.functional.cosine_similarity(estimate, exact, dim=0)
        print(f"{'Neumann(alpha=auto, 10 Lanczos steps)':<58} {result.solve.hvp_count:14d} {float(cosine):16.4f}")
    # The best any diagonal preconditioner can do: the exact Hessian diagonal (dense PCG, for reference only).
    flat_weights = torch.cat([w.detach().reshape(-1) for w in weights])
    shapes = [w.shape for w in weights]

    def unflat(vector):
        return [part.reshape(shape) for part, shape in zip(torch.split(vector, [s.numel() for s in shapes]), shapes)]

    def flat_train_loss(flat):
        inputs_to_network = dict(zip([n for n, _ in network_names], unflat(flat)))
        logits = torch.func.functional_call(network, inputs_to_network, (train_inputs,))
        penalty = sum((0.5 * d.detach().exp() * w.pow(2)).sum() for d, w in zip(log_decays, unflat(flat)))
        return torch.nn.functional.cross_entropy(logits, train_targets) + penalty

    dense = torch.func.hessian(flat_train_loss)(flat_weights)
    right = torch.cat([g.reshape(-1) for g in torch.autograd.grad(val_loss(), weights)])
    mixed_scale = torch.cat([(d.exp() * w).detach().reshape(-1) for d, w in zip(log_decays, weights)])
    for products in (10, 20, 30):
        solution = diagonal_pcg(dense, right, torch.diagonal(dense), products)
        cosine = torch.nn.functional.cosine_similarity(-mixed_scale * solution, exact, dim=0)
        print(f"{'CG, exact Hessian diagonal preconditioner (reference)':<58} {products:14d} {float(cosine):16.4f}")
    for rank, steps in ((10, 20), (15, 20), (20, 30), (25, 40)):
        for products in (10, 20, 30):
            solver = ConjugateGradient(
                products, rtol=1e-30, preconditioner="spectral", preconditioner_rank=rank, preconditioner_steps=steps
            )
            hypergradient_of(solver, count=100)  # the previous hyperstep: another validation batch builds M⁻¹
            estimate, result = hypergradient_of(solver)
            cosine = torch.nn.functional.cosine_similarity(estimate, exact, dim=0)
            name = f"CG, spectral preconditioner (rank {rank}, built from {steps} products)"
            print(f"{name:<58} {result.solve.hvp_count:14d} {float(cosine):16.4f}")


def main() -> None:
    torch.set_num_threads(1)
    compare("softmax regression 64-10 (convex)", ())
    compare("MLP 64-32-10 (non-convex)", (32,))
    per_product_accuracy()


if __name__ == "__main__":
    main()
