"""The callback and its solver build from LightningCLI YAML (class_path / init_args)."""

from __future__ import annotations

import torch
import yaml
from lightning.pytorch.cli import LightningCLI

from lightning_hypergrad import BilevelLightningModule, HypergradientCallback
from lightning_hypergrad.data import DigitsDataModule
from lightning_hypergrad.solvers import ConjugateGradient, Neumann

CONFIG = """
seed_everything: 0
trainer:
  max_steps: 6
  accelerator: cpu
  logger: false
  enable_checkpointing: false
  enable_progress_bar: false
  enable_model_summary: false
  num_sanity_val_steps: 0
  limit_val_batches: 1
  callbacks:
    - class_path: lightning_hypergrad.HypergradientCallback
      init_args:
        solver:
          class_path: lightning_hypergrad.solvers.Neumann
          init_args:
            iterations: 7
            alpha: 0.25
        hyper_optimizer:
          class_path: torch.optim.SGD
          init_args:
            lr: 0.5
        every_n_steps: 3
        warmup_steps: 0
        validation_mode: train
model:
  class_path: lightning_hypergrad.tasks.WeightDecayClassifier
  init_args:
    decay_granularity: per_tensor
    initial_decay: 0.01
data:
  class_path: lightning_hypergrad.data.DigitsDataModule
  init_args:
    batch_size: 32
"""


def build(tmp_path, text: str, extra: list[str] | None = None) -> LightningCLI:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return LightningCLI(
        BilevelLightningModule,
        DigitsDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=["--config", str(path), *(extra or [])],
        save_config_callback=None,
    )


def test_callback_and_solver_build_from_yaml_and_fit(tmp_path) -> None:
    cli = build(tmp_path, CONFIG)
    (callback,) = [c for c in cli.trainer.callbacks if isinstance(c, HypergradientCallback)]
    assert isinstance(callback.solver, Neumann)
    assert (callback.solver.iterations, callback.solver.alpha) == (7, 0.25)
    assert (callback.every_n_steps, callback.validation_mode) == (3, "train")
    cli.trainer.fit(cli.model, cli.datamodule)
    assert isinstance(callback.hyper_optimizer, torch.optim.SGD)
    assert callback.hyper_optimizer.param_groups[0]["lr"] == 0.5
    assert callback.taken == 2


def test_yaml_round_trips_through_the_parser(tmp_path) -> None:
    cli = build(tmp_path, CONFIG)
    dumped = yaml.safe_load(cli.parser.dump(cli.config))
    callback = dumped["trainer"]["callbacks"][0]
    assert callback["class_path"] == "lightning_hypergrad.HypergradientCallback"
    assert callback["init_args"]["solver"] == {
        "class_path": "lightning_hypergrad.solvers.Neumann",
        "init_args": {"iterations": 7, "alpha": 0.25, "lanczos_steps": 10, "max_growth": 10.0, "lanczos_every": 1},
    }
    again = build(tmp_path, yaml.safe_dump(dumped))
    (rebuilt,) = [c for c in again.trainer.callbacks if isinstance(c, HypergradientCallback)]
    assert vars(rebuilt.solver) == vars(Neumann(iterations=7, alpha=0.25))


def test_a_solver_can_be_swapped_from_the_command_line(tmp_path) -> None:
    swapped = CONFIG.replace("lightning_hypergrad.solvers.Neumann", "lightning_hypergrad.solvers.ConjugateGradient")
    swapped = swapped.replace("iterations: 7\n            alpha: 0.25", "iterations: 4\n            rtol: 0.001")
    cli = build(tmp_path, swapped)
    (callback,) = [c for c in cli.trainer.callbacks if isinstance(c, HypergradientCallback)]
    assert isinstance(callback.solver, ConjugateGradient) and callback.solver.rtol == 0.001
