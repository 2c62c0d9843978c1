"""Shared by the benchmarks: run a shipped config as the CLI would (quietly, one seed) and score its weights."""

from __future__ import annotations

import copy
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from lightning_hypergrad.cli import HypergradCLI

CONFIGS = Path(__file__).parents[1] / "configs"
QUIET = [
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.enable_checkpointing=false",
    "--trainer.num_sanity_val_steps=0",
    "--report.enabled=false",
]


@dataclass
class Outcome:
    """One method on one seed: final-weights scores, wall time, and anything else worth printing."""

    validation_loss: float
    validation_accuracy: float
    test_loss: float
    test_accuracy: float
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)


def train(settings: dict[str, Any], seed: int, data_seed: int | None = None) -> tuple[Outcome, Any]:
    """Fit the config ``settings`` and score the final weights.

    ``seed`` sets the initial weights and, unless ``data_seed`` is given, also the data (split, shuffling, label
    noise); the returned model is still attached to its trainer and datamodule.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(settings, handle)
    data = seed if data_seed is None else data_seed
    seeds = [f"--seed_everything={seed}", f"--data.init_args.seed={data}"]
    scratch = tempfile.mkdtemp(prefix="benchmark_run_")  # where the CLI saves its config.yaml
    cli = HypergradCLI(
        args=["--config", handle.name, *seeds, *QUIET, f"--trainer.default_root_dir={scratch}"], run=False
    )
    Path(handle.name).unlink()
    start = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    validation = cli.trainer.validate(cli.model, cli.datamodule, verbose=False)[0]
    seconds = time.perf_counter() - start
    test = cli.trainer.test(cli.model, cli.datamodule, verbose=False)[0]
    outcome = Outcome(
        validation["validation_loss"],
        validation["validation_accuracy"],
        test["test_loss"],
        test["test_accuracy"],
        seconds,
    )
    return outcome, cli.model


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((CONFIGS / name).read_text())


def without_tuning(settings: dict[str, Any], **model_arguments: Any) -> dict[str, Any]:
    """The same config with the hypergradient callback removed and the given model arguments fixed."""
    plain = copy.deepcopy(settings)
    plain["trainer"]["callbacks"] = [
        c for c in plain["trainer"].get("callbacks", []) if "HypergradientCallback" not in c["class_path"]
    ]
    plain["model"]["init_args"].update(model_arguments)
    return plain


def quiet() -> None:
    """One thread (the machine is shared; ratios stay comparable) and no per-run chatter."""
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
