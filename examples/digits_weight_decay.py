"""Tune one weight-decay hyperparameter per weight of an MLP on scikit-learn's digits, with the bare engine.

Trains the same network twice from the same seed: once with fixed weight decay, once with the decays tuned by
implicit-differentiation hypergradients every few steps. Prints the validation and test loss of both.

    python examples/digits_weight_decay.py [--steps 1500] [--solver neumann|cg|identity]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from lightning_hypergrad import hypergradient_with_solve
from lightning_hypergrad.data.digits import split_digits
from lightning_hypergrad.solvers import ConjugateGradient, Identity, Neumann

SOLVERS = {
    "neumann": lambda: Neumann(iterations=20),
    "cg": lambda: ConjugateGradient(iterations=20),
    "identity": Identity,
}


def run(tune: bool, steps: int, solver_name: str, seed: int = 0) -> dict[str, float]:
    torch.manual_seed(seed)
    data = split_digits(seed=seed)
    network = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    weights = list(network.parameters())
    # One log weight-decay per weight, all started at exp(-3) per squared weight (scaled by 1/n below).
    log_decays = [torch.full_like(w, -3.0, requires_grad=True) for w in weights]
    weight_optimizer = torch.optim.Adam(weights, lr=1e-3)
    hyper_optimizer = torch.optim.Adam(log_decays, lr=0.03)
    solver = SOLVERS[solver_name]()
    batch_size, hyper_every, warmup = 64, 10, 200
    generator = torch.Generator().manual_seed(seed)
    loss_function = nn.CrossEntropyLoss()

    def training_loss(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        penalty = sum((decay.exp() * w.pow(2)).sum() for decay, w in zip(log_decays, weights))
        return loss_function(network(inputs), targets) + penalty / len(data.train_inputs)

    def batch(inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(len(inputs), (batch_size,), generator=generator)
        return inputs[index], targets[index]

    skipped = 0
    for step in range(1, steps + 1):
        weight_optimizer.zero_grad()
        training_loss(*batch(data.train_inputs, data.train_targets)).backward()
        weight_optimizer.step()
        if tune and step > warmup and step % hyper_every == 0:
            result = hypergradient_with_solve(
                training_loss(*batch(data.train_inputs, data.train_targets)),
                loss_function(network(data.val_inputs), data.val_targets),
                weights,
                log_decays,
                solver,
            )
            if not result.solve.converged:
                skipped += 1
                continue
            hyper_optimizer.zero_grad()
            for decay, gradient in zip(log_decays, result.hypergradients):
                decay.grad = gradient
            hyper_optimizer.step()

    with torch.no_grad():
        return {
            "val_loss": float(loss_function(network(data.val_inputs), data.val_targets)),
            "test_loss": float(loss_function(network(data.test_inputs), data.test_targets)),
            "test_accuracy": float((network(data.test_inputs).argmax(1) == data.test_targets).float().mean()),
            "mean_log_decay": float(torch.cat([d.detach().reshape(-1) for d in log_decays]).mean()),
            "skipped_hypersteps": skipped,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--solver", choices=sorted(SOLVERS), default="neumann")
    arguments = parser.parse_args()
    for tune in (False, True):
        start = time.perf_counter()
        metrics = run(tune, arguments.steps, arguments.solver)
        label = f"tuned ({arguments.solver})" if tune else "fixed decay"
        summary = ", ".join(
            f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}" for key, value in metrics.items()
        )
        print(f"{label:>18}: {summary}, seconds={time.perf_counter() - start:.1f}")


if __name__ == "__main__":
    main()
