"""Peak tensor memory of one hypergradient against the bare autograd floor and against unrolled differentiation.

On the floor problem (``floor_problem.py``: MLP 64-1024-1024-10, 1.13 M weights, one decay per weight, batch
64). Each computation runs under ``torch.profiler`` with memory profiling; the peak of live tensor bytes (every
allocation and free, in time order) above what was live before it is reported in MiB and in weight-sized
float32 vectors. Counting tensor bytes, not resident memory, makes the numbers exact and repeatable on a shared
machine.

The floor keeps v, the product in flight and its result. It is measured twice: building and dropping its own
losses (their forward graphs outside g's graph are freed early), and with the losses its caller built and
keeps, as every call of ``hypergradient(train_loss, val_loss, ...)`` has them; the second is the floor the
library is measured against. Above it a Neumann solve needs at least its running sum (the target: floor + one
vector), CG its iterate, its residual and b (kept to recompute b − Hx before it claims its tolerance) besides the
direction that plays the floor's v (floor + three). Unrolled
differentiation through K gradient steps keeps every step's graph. A second table shows the other paths at K = 5,
and the library called with losses that nobody else keeps, against the floor that drops its own.
Run: python benchmarks/hypergradient_memory.py
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from floor_problem import FloorProblem

from lightning_hypergrad import hypergradient_with_solve
from lightning_hypergrad.solvers import ConjugateGradient, Neumann


def peak_bytes(function: Callable[[], object]) -> int:
    """The peak of live tensor bytes while ``function`` runs, above the start (``tests/engine/test_hypergradient_memory.py``
    counts with this too)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profile:
        function()
    live = peak = 0
    for event in sorted(profile.events(), key=lambda event: event.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def peak_mib(function: Callable[[], object]) -> float:
    """:func:`peak_bytes` in MiB."""
    return peak_bytes(function) / 2**20


def main() -> None:
    torch.set_num_threads(1)
    problem = FloorProblem(torch.device("cpu"))

    def library(solver, initial=None, **options) -> None:
        train_loss, val_loss = problem.train_loss(), problem.val_loss()  # kept through the call, as the callback does
        result = hypergradient_with_solve(
            train_loss, val_loss, problem.weights, problem.log_decays, solver, initial=initial, **options
        )
        assert result.solve.converged, result.solve.status

    def held_floor(products: int) -> None:
        train_loss, val_loss = problem.train_loss(), problem.val_loss()
        problem.floor(products, train_loss, val_loss)

    def not_kept(solver) -> None:  # the losses passed as temporaries: the function holds the only reference
        hypergradient_with_solve(problem.train_loss(), problem.val_loss(), problem.weights, problem.log_decays, solver)

    def unrolled(steps: int) -> None:
        current = list(problem.weights)
        for _ in range(steps):
            gradients = torch.autograd.grad(problem.train_loss(current), current, create_graph=True)
            current = [w - 0.05 * g for w, g in zip(current, gradients)]
        torch.autograd.grad(problem.val_loss(current), problem.log_decays)

    cases = {
        "floor, own losses": problem.floor,
        "floor": held_floor,
        "Neumann": lambda k: library(Neumann(k, alpha=0.05)),
        "CG": lambda k: library(ConjugateGradient(k, rtol=1e-30)),
        "unrolled": unrolled,
        "Neumann, not kept": lambda k: not_kept(Neumann(k, alpha=0.05)),
        "CG, not kept": lambda k: not_kept(ConjugateGradient(k, rtol=1e-30)),
    }
    shown = list(cases)[:5]
    vector = problem.vector_mib
    print(f"MLP 64-1024-1024-10 on digits, one decay per weight, batch 64; one weight-sized vector = {vector:.1f} MiB")
    print("peak live tensor memory of one hypergradient, MiB (weight-sized vectors); floor = with the caller's losses;")
    print("'not kept': the library called with losses nobody else keeps, above the floor that drops its own losses")
    above = ("Neumann−floor", "CG−floor", "Neumann, not kept", "CG, not kept")
    print(f"{'K':>4} " + " ".join(f"{name:>17}" for name in shown) + " " + " ".join(f"{name:>17}" for name in above))
    for steps in (1, 5, 20):
        peaks = {
            name: peak_mib(lambda function=function, steps=steps: function(steps)) for name, function in cases.items()
        }
        cells = " ".join(f"{peaks[name]:9.1f} ({peaks[name] / vector:4.1f})" for name in shown)
        extra = [(peaks[name] - peaks["floor"]) / vector for name in ("Neumann", "CG")]
        extra += [(peaks[name] - peaks["floor, own losses"]) / vector for name in ("Neumann, not kept", "CG, not kept")]
        print(f"{steps:4d} {cells} " + " ".join(f"{value:17.2f}" for value in extra))

    warm = tuple(0.01 * torch.randn_like(w) for w in problem.weights)
    reused = Neumann(5, lanczos_every=10)
    library(reused)  # estimates λ_max; the measured call reuses it
    variants = {
        "Neumann(5, 0.05), warm start": lambda: library(Neumann(5, alpha=0.05), warm),
        "Neumann(5, 0.05), damping 0.01": lambda: library(Neumann(5, alpha=0.05), damping=0.01),
        "Neumann(5, 0.05), loss_scale 1024": lambda: library(Neumann(5, alpha=0.05), loss_scale=1024.0),
        "Neumann(5, 'auto'), 10 Lanczos steps": lambda: library(Neumann(5)),
        "Neumann(5, 'auto'), λ_max reused": lambda: library(reused),
        "ConjugateGradient(5), warm start": lambda: library(ConjugateGradient(5, rtol=1e-30), warm),
    }
    floor = peak_mib(lambda: held_floor(5))
    print(f"\nK = 5, other paths (floor {floor:.1f} MiB = {floor / vector:.1f} vectors)")
    for name, function in variants.items():
        print(f"{name:<45} floor + {(peak_mib(function) - floor) / vector:5.2f} vectors")


if __name__ == "__main__":
    main()
