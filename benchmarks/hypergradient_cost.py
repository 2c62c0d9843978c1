"""What a hypergradient costs, in units of one training gradient, measured side by side in one run.

For the default job's network (MLP 64-128-10 on digits, one weight decay per weight), times one training-loss
gradient (forward + backward, the unit) and one hypergradient per solver, interleaving repetitions and taking
medians so that the machine's background load hits all alike. Prints ratios, not absolute times. The paper's
claim is that a K-term Neumann hypergradient costs about K + 3 gradient evaluations (each Hessian-vector
product is about two backward passes through the retained graph, one of which the create_graph gradient
already paid). Run: python benchmarks/hypergradient_cost.py [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch

from lightning_hypergrad import hypergradient_with_solve
from lightning_hypergrad.data import split_digits
from lightning_hypergrad.models import MLPClassifier
from lightning_hypergrad.solvers import ConjugateGradient, Identity, Neumann
from lightning_hypergrad.tasks import WeightDecayClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15)
    arguments = parser.parse_args()
    device = torch.device(arguments.device)
    L.seed_everything(0, verbose=False)
    model = WeightDecayClassifier(network=MLPClassifier(hidden=(128,)), decay_granularity="per_weight").to(device)
    split = split_digits()
    train_batch = (split.train_inputs[:64].to(device), split.train_targets[:64].to(device))
    validation_batch = (split.val_inputs[:64].to(device), split.val_targets[:64].to(device))
    weights, hyperparameters = model.weight_parameters(), model.hyperparameters()

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def training_gradient() -> int:
        torch.autograd.grad(model.training_loss(train_batch), weights)
        return 0

    def hypergradient_with(solver):
        def compute() -> int:
            result = hypergradient_with_solve(
                model.training_loss(train_batch),
                model.validation_loss(validation_batch),
                weights,
                hyperparameters,
                solver,
            )
            return result.solve.hvp_count

        return compute

    cases = {
        "training gradient (the unit)": training_gradient,
        "Identity(alpha=0.1)": hypergradient_with(Identity(0.1)),
    }
    for k in (5, 20, 50):
        cases[f"Neumann(iterations={k}, alpha=0.1)"] = hypergradient_with(Neumann(k, 0.1))
    cases["Neumann(iterations=20, alpha='auto')"] = hypergradient_with(Neumann(20))
    cases["ConjugateGradient(iterations=20)"] = hypergradient_with(ConjugateGradient(20, 1e-30))

    timings: dict[str, list[float]] = {name: [] for name in cases}
    products = {name: function() for name, function in cases.items()}  # also the warm-up
    for _ in range(arguments.repeats):
        for name, function in cases.items():
            synchronize()
            start = time.perf_counter()
            function()
            synchronize()
            timings[name].append(time.perf_counter() - start)

    unit = statistics.median(timings["training gradient (the unit)"])
    identity = statistics.median(timings["Identity(alpha=0.1)"])
    print(
        f"device {device}, {sum(w.numel() for w in weights)} weights and as many hyperparameters, batch 64, "
        f"median of {arguments.repeats}"
    )
    print(f"{'computation':<46} {'× gradient':>11} {'products':>9} {'× gradient per product':>23}")
    for name in cases:
        ratio = statistics.median(timings[name]) / unit
        count = products[name]
        per_product = (statistics.median(timings[name]) - identity) / unit / count if count else float("nan")
        print(f"{name:<46} {ratio:11.2f} {count:9d} {per_product:23.2f}")


if __name__ == "__main__":
    main()
