"""Wall time of the default digits job under different torch thread settings, side by side in one run.

Each setting runs in a fresh process (torch fixes its thread pool at start-up), the settings take turns, and
the script prints each one's median fit time relative to one thread. On a small model the per-operation work is
too little to share between threads, and on a machine whose cores are busy with other work extra threads wait
for each other. Run: python benchmarks/thread_settings.py [--epochs 20 --repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
SETTINGS = {"default": None, "1 thread": 1, "2 threads": 2}


def fit_seconds(epochs: int, threads: int | None) -> float:
    """One fit of the default job (per-weight decay, Neumann hypersteps) in this process; its wall time."""
    import lightning as L
    import torch

    from lightning_hypergrad import HypergradientCallback
    from lightning_hypergrad.data import DigitsDataModule
    from lightning_hypergrad.solvers import Neumann
    from lightning_hypergrad.tasks import WeightDecayClassifier

    if threads is not None:
        torch.set_num_threads(threads)
    L.seed_everything(0, verbose=False)
    callback = HypergradientCallback(Neumann(iterations=20), every_n_steps=5, warmup_steps=50)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = WeightDecayClassifier(decay_granularity="per_weight", initial_decay=1e-3)
    start = time.perf_counter()
    trainer.fit(model, DigitsDataModule())
    return time.perf_counter() - start


def run_child(epochs: int, threads: int | None) -> tuple[float, int]:
    """Fit time and torch's thread count, measured in a fresh interpreter."""
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); import torch; "
        "from benchmarks.thread_settings import fit_seconds; "
        f"seconds = fit_seconds({epochs}, {threads!r}); print(seconds, torch.get_num_threads())"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, count = completed.stdout.split()[-2:]
    return float(seconds), int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    counts: dict[str, int] = {}
    for _ in range(arguments.repeats):
        for name, threads in SETTINGS.items():
            seconds, counts[name] = run_child(arguments.epochs, threads)
            times[name].append(seconds)
    baseline = statistics.median(times["1 thread"])
    print(f"digits MLP, per-weight decay, {arguments.epochs} epochs, median of {arguments.repeats} fits per setting")
    for name in SETTINGS:
        median = statistics.median(times[name])
        print(f"{name:>10} ({counts[name]} torch threads): {median:6.1f} s = {median / baseline:.2f}x one thread")


if __name__ == "__main__":
    main()
