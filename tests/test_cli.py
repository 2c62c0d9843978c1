"""The lightning-hypergrad command: configs parse, round-trip and run; bad configs fail with a clear message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightning_hypergrad.cli import main

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
DEFAULT_JOB = Path(__file__).parents[1] / "configs" / "digits_weight_decay.yaml"
# Configs whose data ships with the package run in the tests; the others would download.
BUNDLED = [
    path for path in CONFIGS if any(data in path.read_text() for data in ("DigitsDataModule", "TabularDataModule"))
]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
SUMMARY_KEYS = {
    "train_loss",
    "train_accuracy",
    "validation_loss",
    "validation_accuracy",
    "test_loss",
    "test_accuracy",
    "hypersteps_taken",
    "hypersteps_skipped",
    "weights",
    "hyperparameters",
    "hyperparameter_summary",
    "global_step",
    "wall_time_seconds",
}


@pytest.fixture(autouse=True)
def run_in_tmp(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # configs write to ./runs


def print_config(arguments: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *arguments, "--print_config"])
    assert exit_info.value.code in (0, None)
    return capsys.readouterr().out


def run_fit(config: dict, tmp_path: Path, *extra: str) -> dict:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["fit", "--config", str(path), *QUIET, *extra])
    (summary_path,) = (tmp_path / "runs").glob(
        f"{config['trainer']['logger'][0]['init_args']['name']}/version_*/summary.json"
    )
    summary = json.loads(summary_path.read_text())
    summary_path.unlink()  # the next run in this directory gets its own version folder
    return summary


def test_there_are_configs() -> None:
    assert {path.name for path in BUNDLED} >= {
        "digits_weight_decay.yaml",
        "digits_weight_decay_global.yaml",
        "breast_cancer_feature_decay.yaml",
        "digits_noisy_labels.yaml",
    }
    assert "mnist_weight_decay.yaml" in {path.name for path in CONFIGS}


@pytest.mark.parametrize("config", CONFIGS, ids=[path.name for path in CONFIGS])
def test_print_config_round_trips(config: Path, tmp_path, capsys) -> None:
    first = print_config(["--config", str(config)], capsys)
    assert "lightning_hypergrad.HypergradientCallback" in first
    dumped = tmp_path / "dumped.yaml"
    dumped.write_text(first)
    assert print_config(["--config", str(dumped)], capsys) == first


@pytest.mark.parametrize("config", BUNDLED, ids=[path.name for path in BUNDLED])
def test_every_bundled_data_config_runs_a_few_steps_and_reports(config: Path, tmp_path) -> None:
    settings = yaml.safe_load(config.read_text())
    hyper = settings["trainer"]["callbacks"][0]["init_args"]
    # Past the warmup (early on, strong negative curvature makes Neumann diverge) and one hyperstep further.
    steps = hyper["warmup_steps"] + hyper["every_n_steps"] + 1
    settings["trainer"].update({"max_steps": steps, "limit_val_batches": 1})
    summary = run_fit(settings, tmp_path)
    assert SUMMARY_KEYS <= set(summary)
    hypersteps = (steps - hyper["warmup_steps"]) // hyper["every_n_steps"]  # 1, or 2 with every_n_steps=1
    assert summary["global_step"] == steps and summary["hypersteps_taken"] == hypersteps
    (run,) = (tmp_path / "runs").glob(f"{settings['trainer']['logger'][0]['init_args']['name']}/version_*")
    assert (run / "validation_loss.png").stat().st_size > 0
    assert (run / "hyperparameters.png").stat().st_size > 0
    assert (run / "metrics.csv").exists()


def test_the_default_job_writes_nothing_outside_its_run_directories(tmp_path) -> None:
    # `make demo` from a checkout: `lightning-hypergrad fit --config configs/digits_weight_decay.yaml`, here
    # shortened to its first hyperstep (warm-up 50, then every 5 steps).
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "digits_weight_decay.yaml").write_text(DEFAULT_JOB.read_text())
    before = {path.relative_to(tmp_path) for path in tmp_path.rglob("*")}
    main(["fit", "--config", "configs/digits_weight_decay.yaml", "--trainer.max_steps=55"])
    written = {path.relative_to(tmp_path) for path in tmp_path.rglob("*")} - before
    assert written and {path.parts[0] for path in written} == {"runs"}
    run = Path("runs", "digits_weight_decay", "version_0")
    assert {run / "summary.json", run / "config.yaml", run / "metrics.csv", run / "checkpoints"} <= written


def test_default_job_beats_the_same_config_without_the_callback(tmp_path) -> None:
    settings = yaml.safe_load((Path(__file__).parents[1] / "configs" / "digits_weight_decay.yaml").read_text())
    settings["trainer"]["max_epochs"] = 12  # a shortened default job
    tuned = run_fit(settings, tmp_path)
    settings["trainer"]["callbacks"] = []
    fixed = run_fit(settings, tmp_path)
    assert tuned["hypersteps_taken"] > 20 and tuned["hypersteps_skipped"] == 0
    assert fixed["hypersteps_taken"] == 0
    assert tuned["weights"] == tuned["hyperparameters"] == 9610  # one decay per weight
    assert tuned["validation_loss"] < fixed["validation_loss"]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("iterations: 20", "iterations: -1", "Neumann(iterations=-1): iterations must be an integer >= 1, got -1"),
        ("every_n_steps: 5", "every_n_step: 5", "every_n_step"),
        ("solvers.Neumann", "solvers.Newton", "lightning_hypergrad.solvers.Newton"),
        ("max_epochs: 40", "max_epoch: 40", "max_epoch"),
        (
            "initial_decay: 0.001",
            "initial_decay: -0.001",
            "WeightDecay(initial=-0.001): initial must be a finite number > 0",
        ),
    ],
)
def test_bad_configs_exit_nonzero_naming_the_key_or_value(old: str, new: str, message: str, tmp_path, capsys) -> None:
    text = (Path(__file__).parents[1] / "configs" / "digits_weight_decay.yaml").read_text()
    assert old in text
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace(old, new))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(path), *QUIET])
    assert exit_info.value.code not in (0, None)
    captured = capsys.readouterr()
    assert message in captured.err + str(exit_info.value.code)


def test_fit_help_lists_the_callback_and_solver_options(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "lightning_hypergrad.HypergradientCallback(solver=None," in text
    assert "lightning_hypergrad.solvers.Neumann(iterations=20, alpha='auto'" in text
    assert "lightning_hypergrad.solvers.ConjugateGradient(iterations=20, rtol=1e-06" in text


def test_short_names_select_the_shipped_task_and_datamodule(tmp_path) -> None:
    main(
        [
            "fit",
            "--model=WeightDecayClassifier",
            "--model.network=MLPClassifier",  # short names resolve for nested classes too
            "--model.network.hidden=[16]",
            "--data=DigitsDataModule",
            "--trainer.max_steps=2",
            "--trainer.logger=false",
            *QUIET,
        ]
    )
    summary = json.loads((tmp_path / "summary.json").read_text())  # no logger: the report lands in default_root_dir
    assert summary["weights"] == 64 * 16 + 16 + 16 * 10 + 10


def test_validate_and_test_subcommands_run(capsys) -> None:
    config = str(Path(__file__).parents[1] / "configs" / "digits_weight_decay.yaml")
    for subcommand in ("validate", "test"):
        main(
            [subcommand, "--config", config, "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1", *QUIET]
        )
    assert "test_loss" in capsys.readouterr().out


def test_module_entry_point() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "lightning_hypergrad", "--help"], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0
    assert "{fit,validate,test}" in completed.stdout


TASK_IN_WORKING_DIRECTORY = """
from lightning_hypergrad.tasks import WeightDecayClassifier


class MyTask(WeightDecayClassifier):
    pass
"""


def test_the_installed_command_finds_a_class_path_in_the_working_directory(tmp_path) -> None:
    (tmp_path / "my_task.py").write_text(TASK_IN_WORKING_DIRECTORY)
    config = yaml.safe_load((Path(__file__).parents[1] / "configs" / "digits_weight_decay.yaml").read_text())
    config["model"]["class_path"] = "my_task.MyTask"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    command = Path(sys.executable).with_name("lightning-hypergrad")  # the console script, not python -m
    completed = subprocess.run(
        [str(command), "fit", "--config", "config.yaml", "--print_config"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "class_path: my_task.MyTask" in completed.stdout
