"""Tuning at the scale users train: tuned fits against the plain fit, and each variant's hypergradient accuracy.

On the problems of ``scale_problems.py`` (ResNet-18 and a Transformer encoder, one decay per weight, batch 32,
generated data), fits ``--steps`` weight steps plainly and with each variant's ``HypergradientCallback``,
interleaving the repetitions so that the machine's background load hits all alike, and prints the median CPU
time (one thread; wall time on CUDA) of each as a ratio to the plain fit's. ``--cosines`` then fits every variant
once more, and at each of its hypersteps also computes a reference hypergradient at the same weights and on the
same batches with ``ConjugateGradient(--reference-iterations, rtol=1e-4)``: printed are the variant's cosine to it
and the reference's relative residual (how converged it is). No validation loop, logger or checkpoint runs.

Run: python benchmarks/scale_cost.py [--problems resnet18 transformer] [--steps 40] [--repeats 2] [--cosines]
[--variants NAME ...] [--device cuda]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import lightning as L
import torch
from scale_problems import GeneratedData, make_module, quiet_trainer

from lightning_hypergrad import HypergradientCallback, hypergradient_with_solve
from lightning_hypergrad.engine import vectors
from lightning_hypergrad.lightning.losses import evaluate_losses, hyperstep_context
from lightning_hypergrad.solvers import Amortized, ConjugateGradient, Identity, IHVPSolver, Neumann

VARIANTS: dict[str, Callable[[], HypergradientCallback] | None] = {
    "plain (no callback)": None,
    "HypergradientCallback() (defaults)": lambda: HypergradientCallback(),
    "Neumann(20, auto), every 10 (the old default)": lambda: HypergradientCallback(Neumann(20, "auto")),
    "Neumann(5, auto, lanczos_every=10), warm, every 10": lambda: HypergradientCallback(
        Neumann(5, "auto", lanczos_every=10), warm_start=True
    ),
    "Amortized(2), every 20": lambda: HypergradientCallback(Amortized(2), every_n_steps=20),
    "Amortized(3), every 20": lambda: HypergradientCallback(Amortized(3), every_n_steps=20),
    "Amortized(2), every 10, last layers only": lambda: HypergradientCallback(Amortized(2)),
    "defaults, recomputing": lambda: HypergradientCallback(reuse_training_graph=False),
    "Amortized(2), every 20, recomputing": lambda: HypergradientCallback(
        Amortized(2), every_n_steps=20, reuse_training_graph=False
    ),
    "Amortized(2), every 10, last layers only, recomputing": lambda: HypergradientCallback(
        Amortized(2), reuse_training_graph=False
    ),
    "Identity(), every 10": lambda: HypergradientCallback(Identity()),
}
names_of = {factory: name for name, factory in VARIANTS.items() if factory is not None}
DEFAULT_VARIANTS = [name for name in VARIANTS if "old default" not in name]


class Measured(IHVPSolver):
    """A solver that keeps ‖b‖ of its latest solve, for the reference's relative residual."""

    def __init__(self, solver: IHVPSolver) -> None:
        self.solver, self.b_norm = solver, math.nan

    def solve(self, hvp, b, initial=None):
        self.b_norm = float(vectors.norm(b))
        return self.solver.solve(hvp, b, initial)


class Referenced(HypergradientCallback):
    """A callback that, at every hyperstep, also computes a reference hypergradient at the same weights and
    batches, with ``make_reference()``'s solver (a converged CG by default, ``Exact()`` on small networks)."""

    def __init__(self, wrapped: HypergradientCallback, make_reference: Callable[[], IHVPSolver]) -> None:
        self.__dict__.update(wrapped.__dict__)
        self.make_reference, self.found = make_reference, []

    def compute_hypergradient(self, trainer, module, train_batch, validation_batch, graph=None):
        result = super().compute_hypergradient(trainer, module, train_batch, validation_batch, graph=graph)
        named = module.named_hyperparameters()
        with hyperstep_context(module):
            losses = list(
                # A new training loss at the same weights and batch, even when the variant reused the weight step's
                # graph: the variant's hyperstep has restored the BatchNorm buffers that graph saved.
                evaluate_losses(module, trainer.precision_plugin, train_batch, validation_batch, self.validation_mode)
            )
            reference = hypergradient_with_solve(
                losses.pop(0),
                losses.pop(0),
                module.weight_parameters(),
                [parameter for _, parameter in named],
                solver := Measured(self.make_reference()),
                damping=self.damping,
            )
        mine, exact = (vectors.flatten(found).double() for found in (result.hypergradients, reference.hypergradients))
        cosine = float(mine @ exact / (mine.norm() * exact.norm()).clamp_min(1e-30))
        relative = float(reference.solve.residual_norm) / solver.b_norm
        self.found.append((self.hyperstep_step, cosine, relative, reference.solve.status.value, result.solve.hvp_count))
        return result


class StepClock(L.Callback):
    """The clock's seconds of every training batch in the fit, and whether a hyperstep ran in it (the tuning
    callback's count of hypersteps moved): a hyperstep's cost as the fit sees it, allocator state included."""

    def __init__(self, tuning: HypergradientCallback | None, clock: Callable[[], float], cuda: bool) -> None:
        self.tuning, self.clock, self.cuda = tuning, clock, cuda
        self.batches: list[tuple[float, bool]] = []
        self.start, self.count = 0.0, 0

    def _hypersteps(self) -> int:
        return 0 if self.tuning is None else self.tuning.taken + self.tuning.skipped

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return self.clock()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.start, self.count = self._now(), self._hypersteps()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches.append((self._now() - self.start, self._hypersteps() > self.count))


def fit(problem: str, factory, steps: int, device: str, reference: int | None = None, damping: float = 0.0):
    """One fit of ``steps`` weight steps; returns the clock's seconds, the callback (``damping`` for all) and the
    fit's :class:`StepClock` (run after the callback, so a recomputed hyperstep counts in its batch)."""
    L.seed_everything(0, verbose=False)
    module, data = (
        make_module(problem, last_layers=factory is not None and "last layers" in names_of[factory]),
        GeneratedData(problem),
    )
    callback = None if factory is None else factory()
    if callback is not None:
        callback.damping = damping
    if callback is not None and reference is not None:
        callback = Referenced(callback, lambda: ConjugateGradient(reference, rtol=1e-4))
    clock = time.perf_counter if device == "cuda" else time.process_time
    step_clock = StepClock(callback, clock, device == "cuda")
    trainer = quiet_trainer(steps, [step_clock] if callback is None else [callback, step_clock], accelerator=device)
    if device == "cuda":
        torch.cuda.synchronize()
    start = clock()
    trainer.fit(module, data)
    if device == "cuda":
        torch.cuda.synchronize()
    return clock() - start, callback, step_clock


def cost(problem: str, names: list[str], steps: int, repeats: int, device: str, damping: float) -> None:
    fit(problem, None, 3, device)  # warm-up: imports, allocator and first-call costs stay out of the timing
    seconds: dict[str, list[float]] = {name: [] for name in names}
    products: dict[str, int] = {}
    batches: dict[str, list[tuple[float, bool]]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            elapsed, callback, step_clock = fit(problem, VARIANTS[name], steps, device, damping=damping)
            seconds[name].append(elapsed)
            batches[name] += step_clock.batches[2:]  # the first batches pay the fit's first-call costs
            if callback is not None:
                products[name] = int(sum(entry["hvp_count"] for entry in callback.history))
    plain = statistics.median(seconds["plain (no callback)"])
    plain_step = statistics.median(duration for duration, _ in batches["plain (no callback)"])
    clock = "wall" if device == "cuda" else "CPU"
    print(f"\n{problem}: plain fit {plain:.1f} s {clock} ({steps} steps, median of {repeats}, interleaved, 1 thread)")
    print(f"its weight step {plain_step * 1e3:.0f} ms (median over its batches); per variant, in the fit: the median")
    print("weight step without a hyperstep, and what a batch with a hyperstep costs beyond it, in plain weight steps")
    print(f"{'variant':<62} {'× plain':>8} {'range':>12} {'products':>9} {'step ms':>8} {'hyperstep':>10}")
    for name in names:
        low, high = min(seconds[name]) / plain, max(seconds[name]) / plain
        count = products.get(name, 0)
        steps_only = statistics.median(duration for duration, hyper in batches[name] if not hyper)
        with_hyperstep = [duration for duration, hyper in batches[name] if hyper]
        extra = (statistics.median(with_hyperstep) - steps_only) / plain_step if with_hyperstep else 0.0
        print(
            f"{name:<62} {statistics.median(seconds[name]) / plain:8.2f} {low:5.2f}–{high:<5.2f} {count:9d} "
            f"{steps_only * 1e3:8.0f} {extra:10.2f}"
        )


def cosines(problem: str, names: list[str], steps: int, device: str, iterations: int, damping: float) -> None:
    print(
        f"\n{problem}: cosine to ConjugateGradient({iterations}, rtol=1e-4) at the same weights, per hyperstep, "
        f"damping {damping:g} for all"
    )
    print(f"{'variant':<62} {'step':>5} {'products':>9} {'cosine':>8} {'ref. residual/‖v‖':>18} {'ref. status':>20}")
    for name in names:
        if VARIANTS[name] is None:
            continue
        _, callback, _ = fit(problem, VARIANTS[name], steps, device, reference=iterations, damping=damping)
        for step, cosine, relative, status, count in callback.found:
            print(f"{name:<62} {step:5d} {count:9d} {cosine:8.4f} {relative:18.3g} {status:>20}")


def breakdown(problem: str, repeats: int = 3) -> None:
    """CPU time of a hyperstep's parts against one training step (forward, backward, Adam step), one thread."""
    module, data = make_module(problem), GeneratedData(problem)
    weights, hyperparameters = module.weight_parameters(), module.hyperparameters()
    optimizer = torch.optim.Adam(weights, lr=1e-3)
    batch, validation_batch = next(iter(data.train_dataloader())), next(iter(data.val_dataloader()))

    def clocked(work) -> float:
        work()
        start = time.process_time()
        for _ in range(repeats):
            work()
        return (time.process_time() - start) / repeats

    def training_step() -> None:  # as the fit's: backward into the weights only, not into λ
        optimizer.zero_grad()
        module.training_loss(batch).backward(inputs=weights)
        optimizer.step()

    def validation_gradient() -> None:
        module.eval()
        torch.autograd.grad(module.validation_loss(validation_batch), weights)
        module.train()

    def training_step_keeping_graph() -> None:  # the weight step a reused hyperstep takes its graph from
        optimizer.zero_grad()
        gradients = torch.autograd.grad(module.training_loss(batch), weights, create_graph=True)
        for weight, gradient in zip(weights, gradients):
            weight.grad = gradient.detach()
        optimizer.step()

    step = clocked(training_step)
    kept = clocked(training_step_keeping_graph)
    with hyperstep_context(module):
        graph = clocked(lambda: torch.autograd.grad(module.training_loss(batch), weights, create_graph=True))
        gradient = torch.autograd.grad(module.training_loss(batch), weights, create_graph=True)
        vector = [torch.randn_like(weight) for weight in weights]
        product = clocked(lambda: torch.autograd.grad(gradient, weights, vector, retain_graph=True))
        mixed = clocked(lambda: torch.autograd.grad(gradient, hyperparameters, vector, retain_graph=True))
        validation = clocked(validation_gradient)
    gradients = [torch.randn_like(weight) for weight in weights]
    entrywise = clocked(lambda: bool(torch.stack([part.isfinite().all() for part in gradients]).all()))
    by_sums = clocked(lambda: vectors.all_finite(gradients))
    hyper_steps = {}
    for foreach in (False, True):
        copies = [torch.nn.Parameter(value.detach().clone()) for value in hyperparameters]
        for copy in copies:
            copy.grad = torch.randn_like(copy)
        hyper_steps[foreach] = clocked(torch.optim.Adam(copies, lr=1e-2, foreach=foreach).step)
    print(f"\n{problem}: CPU time per call / one training step ({step * 1e3:.0f} ms), mean of {repeats}")
    for name, seconds in [
        ("training gradient with create_graph (forward + backward)", graph),
        ("a training step whose backward keeps its graph", kept),
        ("one Hessian-vector product", product),
        ("the mixed product (w.r.t. λ)", mixed),
        ("validation gradient (eval mode)", validation),
        ("finite check of the gradients, isfinite().all() per part", entrywise),
        ("finite check of the gradients, vectors.all_finite (sums)", by_sums),
        ("hyper Adam step, one tensor at a time", hyper_steps[False]),
        ("hyper Adam step, foreach=True (the default's)", hyper_steps[True]),
    ]:
        print(f"{name:<58} {seconds / step:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="+", default=["resnet18", "transformer"])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cosines", action="store_true")
    parser.add_argument("--no-cost", action="store_true", help="only the cosines")
    parser.add_argument("--breakdown", action="store_true", help="also a hyperstep's parts in training steps")
    parser.add_argument("--reference-iterations", type=int, default=60)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--damping", type=float, default=0.0, help="μ of every variant and of the reference")
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    names = ["plain (no callback)", *[name for name in arguments.variants if name != "plain (no callback)"]]
    for problem in arguments.problems:
        if arguments.breakdown:
            breakdown(problem)
        if not arguments.no_cost:
            cost(problem, names, arguments.steps, arguments.repeats, arguments.device, arguments.damping)
        if arguments.cosines:
            cosines(
                problem, names, arguments.steps, arguments.device, arguments.reference_iterations, arguments.damping
            )


if __name__ == "__main__":
    main()
