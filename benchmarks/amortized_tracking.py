"""How closely the amortized solve tracks the full solve along a real trajectory, and where it lags.

The default job's settings (digits, one decay per weight, weights on Adam 1e-3, λ on Adam 0.05, a hyperstep every
5 weight steps after 50) on an MLP small enough for an exact reference (64-16-10: 1,210 weights and decays). At
every hyperstep of each variant's own fit, the exact hypergradient at the same weights and batches (``Exact()``:
the dense Hessian from 1,210 products and its pseudo-inverse, so negative curvature is no obstacle), and the
variant's cosine to it. Two events probe the lag: after weight step ``--lr-step`` the weights' learning rate is
multiplied by 10, after ``--decay-step`` every decay is multiplied by 10. Prints each variant's cosine at chosen
hypersteps: the first ones (the cold start), just before and after each event, and the median of the rest.
``--damping`` gives every variant and the reference ``H + μI``.

Run: python benchmarks/amortized_tracking.py [--steps 300] [--lr-step 150] [--decay-step 225] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import statistics

import lightning as L
import torch
from scale_cost import Referenced
from scale_problems import quiet_trainer

from lightning_hypergrad import HypergradientCallback
from lightning_hypergrad.data import DigitsDataModule
from lightning_hypergrad.models import MLPClassifier
from lightning_hypergrad.solvers import Amortized, Exact, Identity, Neumann
from lightning_hypergrad.tasks import WeightDecayClassifier

VARIANTS = {
    "Amortized(2)": lambda: Amortized(2),
    "Amortized(4)": lambda: Amortized(4),
    "Neumann(20, auto, lanczos_every=10)": lambda: Neumann(20, "auto", lanczos_every=10),
    "Identity()": lambda: Identity(),
}


class Events(L.Callback):
    """After weight step ``lr_step`` the weights' learning rate ×10; after ``decay_step`` every decay ×10."""

    def __init__(self, lr_step: int, decay_step: int) -> None:
        self.lr_step, self.decay_step = lr_step, decay_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.lr_step:
            for group in trainer.optimizers[0].param_groups:
                group["lr"] *= 10
        if trainer.global_step == self.decay_step:
            with torch.no_grad():
                for parameter in pl_module.hyperparameters():
                    parameter.add_(math.log(10))  # log-parametrised decays


def track(solver, steps: int, lr_step: int, decay_step: int, seed: int, damping: float) -> list[tuple[int, float]]:
    """(weight step, cosine to the exact hypergradient) at each hyperstep of one fit (``damping`` for both)."""
    L.seed_everything(seed, verbose=False)
    module = WeightDecayClassifier(network=MLPClassifier(hidden=(16,)), decay_granularity="per_weight")
    callback = HypergradientCallback(
        solver,
        hyper_optimizer=lambda parameters: torch.optim.Adam(parameters, lr=0.05),
        every_n_steps=5,
        warmup_steps=50,
        damping=damping,
        reuse_training_graph=False,  # each hyperstep after its weight step, where the events below land
    )
    referenced = Referenced(callback, lambda: Exact(max_size=2000))
    trainer = quiet_trainer(steps, [referenced, Events(lr_step, decay_step)])
    trainer.fit(module, DigitsDataModule(batch_size=64, seed=seed))
    return [(step, cosine) for step, cosine, *_ in referenced.found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr-step", type=int, default=150)
    parser.add_argument("--decay-step", type=int, default=225)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--damping", type=float, default=0.0, help="μ of every variant and of the reference")
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    first = 55
    shown = [first, first + 5, first + 10, arguments.lr_step, arguments.lr_step + 5, arguments.lr_step + 10]
    shown += [arguments.decay_step, arguments.decay_step + 5, arguments.decay_step + 10]
    print(
        f"cosine to Exact() at the hyperstep after weight step N (learning rate ×10 after step {arguments.lr_step}, "
        f"decays ×10 after step {arguments.decay_step}; seed {arguments.seed}; damping {arguments.damping:g} for all)"
    )
    print(f"{'variant':<38}" + "".join(f"{step:>8d}" for step in shown) + f"{'rest':>8}")
    for name, make in VARIANTS.items():
        found = dict(
            track(make(), arguments.steps, arguments.lr_step, arguments.decay_step, arguments.seed, arguments.damping)
        )
        rest = [cosine for step, cosine in found.items() if step not in shown]
        cells = "".join(f"{found.get(step, math.nan):8.4f}" for step in shown)
        print(f"{name:<38}{cells}{statistics.median(rest) if rest else math.nan:8.4f}")


if __name__ == "__main__":
    main()
