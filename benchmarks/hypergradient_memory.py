"""Peak tensor memory of one hypergradient against the bare autograd floor and against unrolled differentiation.

On the floor problem (``floor_problem.py``: MLP 64-1024-1024-10, 1.13 M weights, one decay per weight, batch
64). Each computation runs under ``torch.profiler`` with memory profiling; the peak of live tensor bytes (every
allocation and free, in time order) above what was live before it is reported in MiB and in weight-sized
float32 vectors. Counting tensor bytes, not resident memory, makes the numbers exact and repeatable on a shared
machine. The floor keeps v, the product in flight and its result; a Neumann solve needs at least its running
sum on top (the target: floor + one vector), CG its iterate, residual and direction. Unrolled differentiation
through K gradient steps keeps every step's graph.
Run: python benchmarks/hypergradient_memory.py
"""

from __future__ import annotations

import torch
from floor_problem import FloorProblem

from lightning_hypergrad import hypergradient_with_solve
from lightning_hypergrad.solvers import ConjugateGradient, Neumann


def peak_mib(function) -> float:
    """The peak of live tensor bytes while ``function`` runs, above the start, in MiB."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profile:
        function()
    live = peak = 0
    for event in sorted(profile.events(), key=lambda event: event.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak / 2**20


def main() -> None:
    torch.set_num_threads(1)
    problem = FloorProblem(torch.device("cpu"))

    def library(solver) -> None:
        result = hypergradient_with_solve(
            problem.train_loss(), problem.val_loss(), problem.weights, problem.log_decays, solver
        )
        assert result.solve.hvp_count == solver.iterations, result.solve.status

    def unrolled(steps: int) -> None:
        current = list(problem.weights)
        for _ in range(steps):
            gradients = torch.autograd.grad(problem.train_loss(current), current, create_graph=True)
            current = [w - 0.05 * g for w, g in zip(current, gradients)]
        torch.autograd.grad(problem.val_loss(current), problem.log_decays)

    cases = {
        "floor": problem.floor,
        "Neumann": lambda k: library(Neumann(k, alpha=0.05)),
        "CG": lambda k: library(ConjugateGradient(k, rtol=1e-30)),
        "unrolled": unrolled,
    }
    vector = problem.vector_mib
    print(f"MLP 64-1024-1024-10 on digits, one decay per weight, batch 64; one weight-sized vector = {vector:.1f} MiB")
    print("peak live tensor memory of one hypergradient, MiB (weight-sized vectors)")
    print(f"{'K':>4} " + " ".join(f"{name:>16}" for name in cases) + f" {'Neumann−floor':>14} {'CG−floor':>9}")
    for steps in (1, 5, 20):
        peaks = {
            name: peak_mib(lambda function=function, steps=steps: function(steps)) for name, function in cases.items()
        }
        cells = " ".join(f"{peaks[name]:8.1f} ({peaks[name] / vector:4.1f})" for name in cases)
        extra = [(peaks[name] - peaks["floor"]) / vector for name in ("Neumann", "CG")]
        print(f"{steps:4d} {cells} {extra[0]:14.1f} {extra[1]:9.1f}")


if __name__ == "__main__":
    main()
