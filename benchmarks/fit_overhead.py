"""Wall time of tuned fits against the plain fit of the same config, with the tuned validation loss beside it.

For each config, runs ``trainer.fit`` as configured (tuned), with a few levers changed (variants), and with
no callbacks (plain: the weights alone, same data, epochs and seed), interleaving the repetitions so that the
machine's background load hits all alike. Prints each variant's median wall time as a ratio to the plain fit's
median, and the validation loss of the final weights (the module's ``test_step`` on the validation split).
Loggers, checkpoints, progress bars and the end-of-fit report are off in every run; one torch thread.

Variants of the default config measure the levers: how often λ_max is re-estimated (``lanczos_every``), series
length, few products with a warm start (each solve continues the previous one) and a larger hyper learning rate,
how often to hyperstep (``every_n_steps``), reusing the weight step's graph (``reuse_training_graph``), and ``Identity`` (no Hessian products at all: what remains is the
per-hyperstep cost of the losses, gradients, mixed product, update and bookkeeping).
``--seeds`` adds a quality pass: every variant fitted once per seed (``seed_everything`` and the data split),
printing mean validation and test loss and the mean paired difference to the first tuned variant with its
standard error, since one seed's validation loss moves by more than the differences between variants.
Run: python benchmarks/fit_overhead.py [--repeats 3] [--configs configs/digits_weight_decay.yaml ...] [--no-variants]
[--seeds 0 1 2 3 4 5 6 7 8 9]
(``--no-variants`` also runs against older versions of the package, whose solvers lack ``lanczos_every``.)
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from lightning_hypergrad.cli import HypergradCLI

ROOT = Path(__file__).resolve().parent.parent
QUIET = [
    "--trainer.logger=false",
    "--trainer.enable_checkpointing=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--report.enabled=false",
]
DEFAULT_CONFIGS = ["configs/digits_weight_decay.yaml", "configs/digits_weight_decay_global.yaml"]


def callback_args(config: dict) -> dict:
    (callback,) = [c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("HypergradientCallback")]
    return callback["init_args"]


def variants(config: dict, default: bool) -> dict[str, dict | None]:
    """Name → config (None: the plain fit). The default config also gets its levers varied."""
    found: dict[str, dict | None] = {"plain (no callback)": None, "as configured": config}
    if not default:
        return found

    def changed(solver: dict | None = None, **callback: object) -> dict:
        varied = copy.deepcopy(config)
        arguments = callback_args(varied)
        arguments.update(callback)
        if solver is not None:
            arguments["solver"] = solver
        return varied

    neumann = "lightning_hypergrad.solvers.Neumann"
    conjugate_gradient = "lightning_hypergrad.solvers.ConjugateGradient"
    adam = {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.08}}
    found["Neumann(20, auto), λ_max every solve"] = changed(
        {"class_path": neumann, "init_args": {"iterations": 20, "alpha": "auto", "lanczos_every": 1}}
    )
    found["Neumann(10, auto), λ_max every 10 solves"] = changed(
        {"class_path": neumann, "init_args": {"iterations": 10, "alpha": "auto", "lanczos_every": 10}}
    )
    found["Neumann(5, auto), warm start, hyper Adam 0.08"] = changed(
        {"class_path": neumann, "init_args": {"iterations": 5, "alpha": "auto", "lanczos_every": 10}},
        warm_start=True,
        hyper_optimizer=adam,
    )
    found["CG(5), warm start, hyper Adam 0.08"] = changed(
        {"class_path": conjugate_gradient, "init_args": {"iterations": 5}}, warm_start=True, hyper_optimizer=adam
    )
    amortized = "lightning_hypergrad.solvers.Amortized"
    found["Amortized(2) (the callback's default solver)"] = changed({"class_path": amortized, "init_args": {}})
    found["Amortized(6)"] = changed({"class_path": amortized, "init_args": {"iterations": 6}})
    found["as configured, every 10 steps"] = changed(every_n_steps=10)
    found["as configured, recomputing (reuse_training_graph=False)"] = changed(reuse_training_graph=False)
    found["Identity(0.1) (no products)"] = changed(
        {"class_path": "lightning_hypergrad.solvers.Identity", "init_args": {"alpha": 0.1}}
    )
    return found


def run(config: dict | None, base: dict, directory: Path, seed: int | None = None) -> tuple[float, float, float, float]:
    """Fit once; returns wall and CPU seconds of ``trainer.fit`` and the validation and test loss of the final
    weights. ``seed`` replaces the config's ``seed_everything`` and the data module's split seed."""
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(base if config is None else config))
    extra = ["--trainer.callbacks=[]"] if config is None else []
    if seed is not None:
        extra += [f"--seed_everything={seed}", f"--data.init_args.seed={seed}"]
    # The run directory holds what the CLI writes (its saved config), so nothing lands in the working directory.
    cli = HypergradCLI(
        args=["--config", str(path), f"--trainer.default_root_dir={directory}", *QUIET, *extra], run=False
    )
    start, start_cpu = time.perf_counter(), time.process_time()
    cli.trainer.fit(cli.model, cli.datamodule)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    losses = [
        float(cli.trainer.test(cli.model, dataloaders=loader, verbose=False)[0]["test_loss"])
        for loader in (cli.datamodule.val_dataloader(), cli.datamodule.test_dataloader())
    ]
    return seconds, cpu_seconds, *losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    parser.add_argument("--no-variants", action="store_true", help="only the plain and the configured fit")
    parser.add_argument("--seeds", type=int, nargs="*", default=[], help="also fit every variant once per seed")
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    for index, name in enumerate(arguments.configs):
        base = yaml.safe_load((ROOT / name).read_text())
        cases = variants(base, default=index == 0 and name == DEFAULT_CONFIGS[0] and not arguments.no_variants)
        times: dict[str, list[float]] = {case: [] for case in cases}
        cpu_times: dict[str, list[float]] = {case: [] for case in cases}
        losses: dict[str, list[float]] = {case: [] for case in cases}
        with tempfile.TemporaryDirectory() as directory:
            for config in cases.values():  # warm-up: imports, allocator and first-call costs stay out of the timing
                run(config, base, Path(directory))
            for _ in range(arguments.repeats):
                for case, config in cases.items():
                    seconds, cpu_seconds, loss, _ = run(config, base, Path(directory))
                    times[case].append(seconds)
                    cpu_times[case].append(cpu_seconds)
                    losses[case].append(loss)
        plain = statistics.median(times["plain (no callback)"])
        plain_cpu = statistics.median(cpu_times["plain (no callback)"])
        print(
            f"\n{name}: plain fit {plain:.1f} s wall, {plain_cpu:.1f} s CPU "
            f"(median of {arguments.repeats}, interleaved, 1 thread)"
        )
        print(f"{'variant':<58} {'× plain (wall)':>15} {'range':>11} {'× plain (CPU)':>14} {'validation loss':>16}")
        for case in cases:
            ratio = statistics.median(times[case]) / plain
            low, high = min(times[case]) / plain, max(times[case]) / plain
            cpu_ratio = statistics.median(cpu_times[case]) / plain_cpu
            print(
                f"{case:<58} {ratio:15.2f} {low:5.2f}–{high:<5.2f} {cpu_ratio:14.2f} "
                f"{statistics.median(losses[case]):16.4f}"
            )
        if arguments.seeds:
            quality_over_seeds(cases, base, arguments.seeds)


def quality_over_seeds(cases: dict[str, dict | None], base: dict, seeds: list[int]) -> None:
    """Mean validation and test loss over ``seeds``, and each variant's mean paired difference to the first
    tuned variant (± its standard error)."""
    found: dict[str, list[tuple[float, float]]] = {case: [] for case in cases}
    with tempfile.TemporaryDirectory() as directory:
        for seed in seeds:
            for case, config in cases.items():
                found[case].append(run(config, base, Path(directory), seed)[2:])
    reference = list(cases)[1]
    print(f"\nover seeds {seeds}: mean loss; paired difference to '{reference}' (mean ± standard error)")
    print(f"{'variant':<58} {'validation':>10} {'test':>8} {'Δ validation':>18} {'Δ test':>18}")
    for case, pairs in found.items():
        columns = []
        for index in (0, 1):
            differences = [mine[index] - theirs[index] for mine, theirs in zip(pairs, found[reference])]
            error = statistics.stdev(differences) / len(differences) ** 0.5 if len(differences) > 1 else math.nan
            columns.append(f"{statistics.mean(differences):+9.4f} ± {error:.4f}")
        means = [statistics.mean(pair[index] for pair in pairs) for index in (0, 1)]
        print(f"{case:<58} {means[0]:10.4f} {means[1]:8.4f} {columns[0]:>18} {columns[1]:>18}")


if __name__ == "__main__":
    main()
