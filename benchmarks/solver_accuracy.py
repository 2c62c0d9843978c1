"""How close each solver's hypergradient comes to the exact one, on scikit-learn's digits.

Two trained models small enough for Exact() to form the dense Hessian: softmax regression (convex: H is positive
definite, every solver should converge to the exact answer) and an MLP with one hidden layer (non-convex: H has
negative eigenvalues, where truncated series and CG stop being approximations of H⁻¹ and become regularised
answers of their own). For each solver: cosine similarity and relative error to Exact(), Hessian-vector
products spent, the solve's status and time. Run: python benchmarks/solver_accuracy.py
"""

from __future__ import annotations

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


def main() -> None:
    compare("softmax regression 64-10 (convex)", ())
    compare("MLP 64-32-10 (non-convex)", (32,))


if __name__ == "__main__":
    main()
