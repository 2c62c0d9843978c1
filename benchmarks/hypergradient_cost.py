"""One hypergradient against the bare autograd floor, measured side by side in one run.

On the floor problem (``floor_problem.py``: MLP 64-1024-1024-10, 1.13 M weights, one decay per weight, batch
64), times the floor with K products (one validation gradient, one create_graph training gradient, K
Hessian-vector products, one mixed product, in bare autograd) and one ``hypergradient_with_solve`` per solver
with the same K products, interleaving repetitions and taking medians so that the machine's background load
hits all alike. A bare-autograd Neumann (the same series written directly, no library code) shows what the
series itself costs above the floor. On the CPU the clock is the process's CPU time (one thread), which other
processes on a shared machine do not inflate; on CUDA it is wall time. Prints ratios to the floor; the target
is ≤ 1.05×.
Bare-autograd CG does the same for conjugate gradient. ``--keep-freed-memory`` stops glibc from returning freed
tensors to the system, which removes the page faults that dominate the spread on the CPU (see
:func:`keep_freed_memory`); the fastest-run ratio is then the steadiest figure.
Run: python benchmarks/hypergradient_cost.py [--device cuda] [--width 1024] [--repeats 7] [--keep-freed-memory]
``--default-job`` instead prints CPU ms per call on the default job's small network (works against older
versions of the package too, for before/after comparisons).
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time

import torch
from floor_problem import WIDTH, FloorProblem

from lightning_hypergrad import hypergradient_with_solve
from lightning_hypergrad.solvers import ConjugateGradient, Neumann


def default_job_breakdown(repeats: int) -> None:
    """Per-call CPU time on the default job's network (MLP 64-128-10, one decay per weight, batch 64)."""
    import lightning as L

    from lightning_hypergrad.data import split_digits
    from lightning_hypergrad.models import MLPClassifier
    from lightning_hypergrad.solvers import Identity
    from lightning_hypergrad.tasks import WeightDecayClassifier

    L.seed_everything(0, verbose=False)
    model = WeightDecayClassifier(network=MLPClassifier(hidden=(128,)), decay_granularity="per_weight")
    split = split_digits()
    train_batch, validation_batch = (
        (split.train_inputs[:64], split.train_targets[:64]),
        (
            split.val_inputs[:64],
            split.val_targets[:64],
        ),
    )
    weights, hyperparameters = model.weight_parameters(), model.hyperparameters()
    optimizer = torch.optim.Adam(weights, 1e-3)

    def training_step() -> None:
        optimizer.zero_grad()
        model.training_loss(train_batch).backward()
        optimizer.step()

    def with_solver(solver):
        return lambda: hypergradient_with_solve(
            model.training_loss(train_batch), model.validation_loss(validation_batch), weights, hyperparameters, solver
        )

    def training_step_keeping_graph() -> None:
        # What reusing the weight step's graph for a hyperstep would make the step on that batch cost.
        optimizer.zero_grad()
        gradients = torch.autograd.grad(model.training_loss(train_batch), weights, create_graph=True)
        for weight, gradient in zip(weights, gradients):
            weight.grad = gradient.detach()
        optimizer.step()

    def training_gradient_with_graph() -> None:
        # What that reuse would save the hyperstep: the training loss and its create_graph gradient.
        torch.autograd.grad(model.training_loss(train_batch), weights, create_graph=True)

    cases = {
        "one training step (forward, backward, Adam)": training_step,
        "the same, backward with create_graph (reuse lever)": training_step_keeping_graph,
        "training loss + create_graph gradient (saved by reuse)": training_gradient_with_graph,
        "hypergradient, Identity (no products)": with_solver(Identity(0.1)),
        "hypergradient, Neumann(20, alpha=0.01)": with_solver(Neumann(20, 0.01)),
        "hypergradient, Neumann(20, 'auto')": with_solver(Neumann(20)),
    }
    timings: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, function in cases.items():
            start = time.process_time()
            function()
            timings[name].append(time.process_time() - start)
    print(f"\ndefault job's network (9,610 weights), CPU ms per call, median of {repeats} interleaved")
    for name, samples in timings.items():
        print(f"{name:<56} {1000 * statistics.median(samples):7.2f}")


def keep_freed_memory() -> None:
    """Make glibc's malloc keep freed memory in the process instead of returning it to the system.

    By default every weight-sized tensor (4.3 MiB here) is a fresh ``mmap``, and writing it first costs a page
    fault per 4 KiB: about a fifth of the floor's CPU time on this machine, and most of its run-to-run spread.
    Kept memory is reused the way PyTorch's caching allocator reuses it on GPUs, so the timings show the
    computation itself.
    """
    libc = ctypes.CDLL("libc.so.6")
    trim_threshold, mmap_threshold = -1, -3  # mallopt parameter numbers (malloc.h)
    if not (libc.mallopt(mmap_threshold, 32 * 2**20) and libc.mallopt(trim_threshold, 2**30)):
        raise RuntimeError("mallopt refused the settings; run without --keep-freed-memory")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--default-job", action="store_true", help="only the per-call breakdown on the default job")
    parser.add_argument("--width", type=int, default=WIDTH)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--keep-freed-memory", action="store_true", help="glibc malloc keeps freed memory (no page faults per tensor)"
    )
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    if arguments.keep_freed_memory:
        keep_freed_memory()
    if arguments.default_job:
        default_job_breakdown(max(arguments.repeats, 30))
        return
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
        "bare-autograd Neumann (no library)": lambda k: problem.bare_neumann(k, 0.05),
        "Neumann(iterations=K, alpha=0.05)": lambda k: library(Neumann(k, 0.05)),
        "bare-autograd CG (no library)": problem.bare_conjugate_gradient,
        "ConjugateGradient(iterations=K)": lambda k: library(ConjugateGradient(k, rtol=1e-30)),
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
    times: dict[tuple[str, int], list[float]] = {(name, k): [] for name in solvers for k in (1, 5, 20)}
    floors: dict[int, list[float]] = {k: [] for k in (1, 5, 20)}
    for k in (1, 5, 20):  # warm-up
        problem.floor(k)
        for make in solvers.values():
            make(k)
    for _ in range(arguments.repeats):
        for k in (1, 5, 20):
            for name, make in solvers.items():
                # Each library run is paired with a floor run just before it: load changes hit both alike.
                floor = timed(lambda k=k: problem.floor(k))
                floors[k].append(floor)
                times[(name, k)].append(timed(lambda make=make, k=k: make(k)))
                ratios[(name, k)].append(times[(name, k)][-1] / floor)

    print(
        f"device {device}, {sum(w.numel() for w in problem.weights)} weights and as many hyperparameters, "
        f"batch 64, {torch.get_num_threads()} thread(s), {arguments.repeats} repetitions, each paired with a floor run, "
        f"{'wall' if device.type == 'cuda' else 'CPU'} time"
        + (", freed memory kept by malloc" if arguments.keep_freed_memory else "")
    )
    print(
        "× floor: the median, least and largest of the paired ratios; fastest: the fastest run over the fastest floor"
    )
    print(f"{'computation':<38} {'K':>3} {'floor ms':>9} {'× floor: median':>16} {'min':>6} {'max':>6} {'fastest':>8}")
    for (name, k), values in ratios.items():
        print(
            f"{name:<38} {k:3d} {1000 * statistics.median(floors[k]):9.0f} {statistics.median(values):16.3f} "
            f"{min(values):6.3f} {max(values):6.3f} {min(times[(name, k)]) / min(floors[k]):8.3f}"
        )


if __name__ == "__main__":
    main()
