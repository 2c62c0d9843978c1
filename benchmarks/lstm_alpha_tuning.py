"""The tiny LSTM language model of ``tests/lightning/test_lstm_default_alpha.py`` tuned through the callback with
``Neumann()`` (its defaults): per hyperstep, the Lanczos estimates ``alpha="auto"`` uses against an 80-step run, and the outcome.

For each hyperstep prints θ_min, θ_max after 10 Lanczos steps (what ``auto`` computes; α = 1/θ_max), the extremes
after 80 steps from the same start, λ_max/θ_max (≥ 2 would make ``auto`` diverge along the top eigenvector) and
λ_min/θ_max (each Neumann term grows by 1 − α·λ_min along the most negative direction). With ``--proposed`` α is
instead ``min(1/θ_max, ln 2 / (K·|θ_min|))`` (growth along negative curvature at most 2× over K terms), the rule
suggested to the solver's owner. Run: python benchmarks/lstm_alpha_tuning.py [--proposed]
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parents[1]))

import lightning_hypergrad.solvers.neumann as neumann_module
from lightning_hypergrad import HypergradientCallback
from lightning_hypergrad.solvers import Neumann
from tests.lightning.test_lstm_default_alpha import TinyLanguageModel, markov_windows
from tests.lightning_helpers import make_trainer

TERMS = 20  # Neumann()'s default iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proposed", action="store_true")
    parser.add_argument("--epochs", type=int, default=5)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    estimate = neumann_module.extreme_eigenvalues

    def measured(hvp, start, steps):
        low, high = estimate(hvp, start, steps)
        long_low, long_high = estimate(hvp, start, 80)
        print(
            f"theta(10) = [{float(low):.4g}, {float(high):.4g}], theta(80) = [{float(long_low):.4g}, "
            f"{float(long_high):.4g}]: lambda_max/theta_max = {float(long_high / high):.2f}, "
            f"lambda_min/theta_max = {float(long_low / high):.2f}"
        )
        if arguments.proposed:
            high = torch.maximum(high, TERMS * (-low).clamp_min(0) / math.log(2.0))
        return low, high

    neumann_module.extreme_eigenvalues = measured  # observe the solver's own estimate, unchanged otherwise
    L.seed_everything(0, verbose=False)
    callback = HypergradientCallback(Neumann(), every_n_steps=5)  # the callback's default solver is Amortized()
    train = DataLoader(markov_windows(320, 40, seed=1), batch_size=32, shuffle=True)
    validation = DataLoader(markov_windows(96, 40, seed=2), batch_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_trainer([callback], max_epochs=arguments.epochs).fit(TinyLanguageModel(), train, validation)
    for entry in callback.history:
        print(
            f"step {entry['step']}: alpha {entry['alpha']:.3g}, residual {entry['solver_residual']:.3g}, "
            f"applied {entry['applied']}"
        )
    print(f"taken {callback.taken}, skipped {callback.skipped}")


if __name__ == "__main__":
    main()
