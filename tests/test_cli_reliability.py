"""The CLI's end-of-fit report where it used to fail: no test split, fast_dev_run, and DDP (in test_ddp_layouts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset

from lightning_hypergrad.cli import main
from lightning_hypergrad.data.digits import split_digits

CONFIG = Path(__file__).parents[1] / "configs" / "digits_weight_decay.yaml"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


class TrainAndValidationOnly(LightningDataModule):
    """A datamodule with no test split: Lightning's placeholder test_dataloader raises."""

    def __init__(self, batch_size: int = 64) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.split = split_digits()

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.split.train_inputs, self.split.train_targets), batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.split.val_inputs, self.split.val_targets), batch_size=self.batch_size)


def short_config(directory: Path, **trainer: object) -> Path:
    """The default job cut to 4 steps with one hyperstep (by Identity, early on), written to ``directory``."""
    settings = yaml.safe_load(CONFIG.read_text())
    settings["trainer"].update({"max_steps": 4, "limit_val_batches": 1, **trainer})
    identity = {"class_path": "lightning_hypergrad.solvers.Identity", "init_args": {"alpha": 0.01}}  # never fails
    settings["trainer"]["callbacks"][0]["init_args"].update({"warmup_steps": 1, "every_n_steps": 2, "solver": identity})
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.fixture(autouse=True)
def run_in_tmp(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # configs write to ./runs


def test_the_report_leaves_out_a_split_the_datamodule_does_not_define(tmp_path) -> None:
    data = f"--data={__name__}.TrainAndValidationOnly"
    main(["fit", "--config", str(short_config(tmp_path)), data, *QUIET])
    (summary_path,) = (tmp_path / "runs" / "digits_weight_decay").glob("version_*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert {"train_loss", "validation_loss"} <= set(summary) and "test_loss" not in summary
    assert summary["hypersteps_taken"] == 1


def test_fast_dev_run_writes_the_report_under_the_run_not_the_working_directory(tmp_path) -> None:
    main(["fit", "--config", str(short_config(tmp_path)), "--trainer.fast_dev_run=true", *QUIET])
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "validation_loss.png").exists()
    summary = json.loads((tmp_path / "runs" / "digits_weight_decay" / "fast_dev_run" / "summary.json").read_text())
    assert summary["global_step"] == 1 and "test_loss" in summary


def fit_through_the_cli_on_every_process(directory: Path) -> None:
    """Run from each DDP process (as torchrun or Lightning's launcher would), in ``directory``."""
    config = short_config(directory, strategy="ddp", devices=2, max_steps=4)
    main(["fit", "--config", str(config), *QUIET])


def test_reduce_lr_on_plateau_as_the_hyper_scheduler_runs_from_yaml(tmp_path) -> None:
    config = short_config(tmp_path, max_steps=8)
    settings = yaml.safe_load(config.read_text())
    settings["trainer"]["callbacks"][0]["init_args"]["hyper_lr_scheduler"] = {
        "class_path": "torch.optim.lr_scheduler.ReduceLROnPlateau",
        "init_args": {"patience": 0, "factor": 0.5},
    }
    config.write_text(yaml.safe_dump(settings))
    main(["fit", "--config", str(config), *QUIET])
    (summary_path,) = (tmp_path / "runs" / "digits_weight_decay").glob("version_*/summary.json")
    assert json.loads(summary_path.read_text())["hypersteps_taken"] == 3  # steps 3, 5 and 7
