"""The cheap synchronisation's bias, as benchmarks/cheap_sync_bias.py prints it for docs/distributed.md.

Two gloo processes on the CPU. The exact mode must equal one process on all the data; the cheap mode must agree
with it for a penalty hyperparameter under ``Identity`` (mixed term independent of the batch) and differ for a
learned input scale (mixed term built from each process's batch).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from lightning_hypergrad import hypergradient
from lightning_hypergrad.solvers import Exact, Identity

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))  # spawned workers import the script by name
import cheap_sync_bias as benchmark


def single_process(problem: str, value: float, solver) -> float:
    whole = benchmark.data()
    weights = benchmark.minimiser(whole, problem, value).requires_grad_(True)
    hyperparameter = torch.tensor(value, dtype=torch.float64, requires_grad=True)
    train_loss, val_loss = benchmark.losses(whole, problem, weights, hyperparameter)
    return float(hypergradient(train_loss, val_loss, [weights], [hyperparameter], solver)[0])


def test_exact_and_cheap_synchronisation_on_two_processes() -> None:
    results = benchmark.measure()
    for problem, value in (("penalty", -2.0), ("input scale", 1.5)):
        exact, _ = results[f"{problem}|Exact()"]
        assert abs(exact - single_process(problem, value, Exact())) <= 1e-10 * abs(exact)
        exact, cheap = results[f"{problem}|Identity(alpha=1.0)"]
        assert abs(exact - single_process(problem, value, Identity(alpha=1.0))) <= 1e-10 * abs(exact)
        if problem == "penalty":
            assert abs(cheap - exact) <= 1e-12 * abs(exact)  # no bias: the mixed term does not see the data
        else:
            assert abs(cheap - exact) >= 0.1 * abs(exact)  # biased although Identity is linear in its input
    exact, cheap = results["penalty|Exact()"]
    assert abs(cheap - exact) >= 0.1 * abs(exact)  # a real solve is biased even for the penalty
    sizes = results["all-reduce sizes"]
    assert len(sizes) == results["hvp count"] + 2 == 32
