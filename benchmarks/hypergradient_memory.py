"""Peak memory of one hypergradient as the number of Neumann terms grows, against unrolled differentiation.

The implicit hypergradient keeps a few weight-sized vectors whatever K is; differentiating through K unrolled
gradient steps keeps every step's graph. Each measurement runs in a fresh process and reports its peak resident
memory above a baseline process that builds the same model and takes one training gradient (Linux ru_maxrss),
so the ratios compare like with like. Run: python benchmarks/hypergradient_memory.py
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys

import torch

WIDTH = 1024  # MLP 64-1024-1024-10: about 1.1 M weights, 4.5 MB per float32 vector


def child(mode: str, steps: int) -> None:
    from lightning_hypergrad import hypergradient
    from lightning_hypergrad.data import split_digits
    from lightning_hypergrad.models import MLPClassifier
    from lightning_hypergrad.solvers import Neumann

    torch.manual_seed(0)
    network = MLPClassifier(hidden=(WIDTH, WIDTH))
    weights = list(network.parameters())
    log_decay = torch.tensor(-6.0, requires_grad=True)
    split = split_digits()
    inputs, targets = split.train_inputs[:64], split.train_targets[:64]
    val_inputs, val_targets = split.val_inputs[:64], split.val_targets[:64]

    def train_loss(parameters):
        logits = torch.func.functional_call(
            network, dict(zip([n for n, _ in network.named_parameters()], parameters)), (inputs,)
        )
        penalty = 0.5 * log_decay.exp() * sum(p.pow(2).sum() for p in parameters)
        return torch.nn.functional.cross_entropy(logits, targets) + penalty

    def val_loss(parameters):
        logits = torch.func.functional_call(
            network, dict(zip([n for n, _ in network.named_parameters()], parameters)), (val_inputs,)
        )
        return torch.nn.functional.cross_entropy(logits, val_targets)

    if mode == "baseline":
        torch.autograd.grad(train_loss(weights), weights)
    elif mode == "neumann":
        hypergradient(train_loss(weights), val_loss(weights), weights, [log_decay], Neumann(steps, alpha=0.1))
    else:  # unrolled: differentiate through `steps` gradient steps
        current = weights
        for _ in range(steps):
            gradients = torch.autograd.grad(train_loss(current), current, create_graph=True)
            current = [w - 0.1 * g for w, g in zip(current, gradients)]
        torch.autograd.grad(val_loss(current), log_decay)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def measure(mode: str, steps: int) -> float:
    output = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(steps)], capture_output=True, text=True, check=True
    ).stdout
    return int(output.split()[-1]) / 1024  # MiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "STEPS"))
    arguments = parser.parse_args()
    if arguments.child:
        child(arguments.child[0], int(arguments.child[1]))
        return
    baseline = measure("baseline", 0)
    vector_mib = (
        sum(
            p.numel()
            for p in torch.nn.Sequential(
                torch.nn.Linear(64, WIDTH), torch.nn.Linear(WIDTH, WIDTH), torch.nn.Linear(WIDTH, 10)
            ).parameters()
        )
        * 4
        / 2**20
    )
    print(f"MLP 64-{WIDTH}-{WIDTH}-10 on digits, batch 64; one weight-sized float32 vector = {vector_mib:.1f} MiB")
    print(f"peak RSS above a one-gradient baseline ({baseline:.0f} MiB), in MiB and in weight-sized vectors")
    print(f"{'K':>5} {'Neumann (implicit)':>20} {'unrolled K steps':>18}")
    for steps in (5, 20, 80):
        neumann = measure("neumann", steps) - baseline
        unrolled = measure("unrolled", steps) - baseline
        print(
            f"{steps:5d} {neumann:10.1f} ({neumann / vector_mib:5.1f}) {unrolled:9.1f} ({unrolled / vector_mib:5.1f})"
        )


if __name__ == "__main__":
    main()
