"""One hypergradient against the bare autograd floor, measured side by side in one run.

On the floor problem (``floor_problem.py``: MLP 64-1024-1024-10, 1.13 M weights, one decay per weight, batch
64), times the floor with K products (one validation gradient, one create_graph training gradient, K
Hessian-vector products, one mixed product, in bare autograd) and one ``hypergradient_with_solve`` per solver
with the same K products, interleaving repetitions and taking medians so that the machine's background load
hits all alike. On the CPU the clock is the process's CPU time (one thread), which other processes on a
shared machine do not inflate; on CUDA it is wall time. Prints ratios to the floor; the target is ≤ 1.05×.
Run: python benchmarks/hypergradient_cost.py [--device cuda] [--width 1024] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from floor_problem import WIDTH, FloorProblem

from lightning_hypergrad import hypergradient_with_solve
from lightning_hypergrad.solvers import ConjugateGradient, Neumann


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=WIDTH)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    device = torch.device(arguments.device)
    problem = FloorProblem(device, arguments.width)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def library(solver) -> None:
        result = hypergradient_with_solve(
            problem.train_loss(), problem.val_loss(), problem.weights, problem.log_decays, solver
        )
        assert result.solve.converged and result.solve.hvp_count == solver.iterations, result.solve

    solvers = {
        "Neumann(iterations=K, alpha=0.05)": lambda k: Neumann(k, 0.05),
        "ConjugateGradient(iterations=K)": lambda k: ConjugateGradient(k, rtol=1e-30),
    }

    # On the CPU, this process's CPU time: other processes on a shared machine do not inflate it (one thread).
    clock = time.perf_counter if device.type == "cuda" else time.process_time

    def timed(function) -> float:
        synchronize()
        start = clock()
        function()
        synchronize()
        return clock() - start

    ratios: dict[tuple[str, int], list[float]] = {(name, k): [] for name in solvers for k in (1, 5, 20)}
    floors: dict[int, list[float]] = {k: [] for k in (1, 5, 20)}
    for k in (1, 5, 20):  # warm-up
        problem.floor(k)
        for make in solvers.values():
            library(make(k))
    for _ in range(arguments.repeats):
        for k in (1, 5, 20):
            for name, make in solvers.items():
                # Each library run is paired with a floor run just before it: load changes hit both alike.
                floor = timed(lambda k=k: problem.floor(k))
                floors[k].append(floor)
                ratios[(name, k)].append(timed(lambda make=make, k=k: library(make(k))) / floor)

    print(
        f"device {device}, {sum(w.numel() for w in problem.weights)} weights and as many hyperparameters, "
        f"batch 64, {torch.get_num_threads()} thread(s), {arguments.repeats} repetitions, each paired with a floor run, "
        f"{'wall' if device.type == 'cuda' else 'CPU'} time"
    )
    print(f"{'computation':<36} {'K':>3} {'floor ms':>9} {'× floor: median':>16} {'min':>6} {'max':>6}")
    for (name, k), values in ratios.items():
        print(
            f"{name:<36} {k:3d} {1000 * statistics.median(floors[k]):9.0f} {statistics.median(values):16.3f} "
            f"{min(values):6.3f} {max(values):6.3f}"
        )


if __name__ == "__main__":
    main()
