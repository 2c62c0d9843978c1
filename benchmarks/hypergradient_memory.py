"""Peak memory of one hypergradient against the bare autograd floor and against unrolled differentiation.

On the floor problem (``floor_problem.py``: MLP 64-1024-1024-10, 1.13 M weights, one decay per weight, batch
64). Each measurement runs in a fresh process and reports its peak resident memory (Linux ru_maxrss) above a
baseline process that builds the same problem and takes one training gradient, so the numbers compare like
with like. The floor holds v, the product in flight and its result; the target for the library is the floor
plus one weight-sized vector. Unrolled differentiation through K gradient steps keeps every step's graph.
Run: python benchmarks/hypergradient_memory.py
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys

import torch
from floor_problem import FloorProblem

MODES = ("floor", "neumann", "cg", "unrolled")


def child(mode: str, steps: int) -> None:
    from lightning_hypergrad import hypergradient_with_solve
    from lightning_hypergrad.solvers import ConjugateGradient, Neumann

    torch.set_num_threads(1)
    problem = FloorProblem(torch.device("cpu"))
    if mode == "baseline":
        torch.autograd.grad(problem.train_loss(), problem.weights)
    elif mode == "floor":
        problem.floor(steps)
    elif mode in ("neumann", "cg"):
        solver = Neumann(steps, alpha=0.05) if mode == "neumann" else ConjugateGradient(steps, rtol=1e-30)
        result = hypergradient_with_solve(
            problem.train_loss(), problem.val_loss(), problem.weights, problem.log_decays, solver
        )
        assert result.solve.hvp_count == steps, result.solve.status
    else:  # unrolled: differentiate the validation loss through `steps` gradient steps
        current = list(problem.weights)
        for _ in range(steps):
            gradients = torch.autograd.grad(problem.train_loss(current), current, create_graph=True)
            current = [w - 0.05 * g for w, g in zip(current, gradients)]
        torch.autograd.grad(problem.val_loss(current), problem.log_decays)
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
    vector = FloorProblem(torch.device("cpu")).vector_mib
    print(f"MLP 64-1024-1024-10 on digits, one decay per weight, batch 64; one weight-sized vector = {vector:.1f} MiB")
    print(f"peak RSS above a one-gradient baseline ({baseline:.0f} MiB), MiB (weight-sized vectors)")
    print(f"{'K':>4} " + " ".join(f"{mode:>16}" for mode in MODES) + f" {'Neumann−floor':>14} {'CG−floor':>10}")
    for steps in (1, 5, 20):
        peaks = {mode: measure(mode, steps) - baseline for mode in MODES}
        cells = " ".join(f"{peaks[m]:8.1f} ({peaks[m] / vector:4.1f})" for m in MODES)
        extra = [(peaks[m] - peaks["floor"]) / vector for m in ("neumann", "cg")]
        print(f"{steps:4d} {cells} {extra[0]:14.1f} {extra[1]:10.1f}")


if __name__ == "__main__":
    main()
