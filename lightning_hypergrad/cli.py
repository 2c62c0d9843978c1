"""The ``lightning-hypergrad`` command: LightningCLI over the package's tasks, models and datamodules."""

from __future__ import annotations

import inspect
import os
import re
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

# Imported so their classes resolve by short name (e.g. --model WeightDecayClassifier).
import lightning_hypergrad.data
import lightning_hypergrad.models
import lightning_hypergrad.solvers
import lightning_hypergrad.tasks  # noqa: F401
from lightning_hypergrad.lightning import adapter
from lightning_hypergrad.lightning.contract import check_bilevel_module
from lightning_hypergrad.lightning.module import BilevelLightningModule
from lightning_hypergrad.report import SPLITS, RunReport


class HypergradCLI(LightningCLI):
    """LightningCLI with ``fit``, ``validate`` and ``test``; ``fit`` ends with an evaluation and a report.

    After ``fit`` the final weights are evaluated on the train, validation and test splits (the module's
    ``test_step``), and ``summary.json``, ``validation_loss.png`` and ``hyperparameters.png`` are written to the
    run's log directory (``--report.enabled false`` turns this off; under ``fast_dev_run``, its ``fast_dev_run``
    subdirectory, see :meth:`report_directory`). Under DDP every process evaluates; rank 0 writes.

    Args:
        args: the command line as a list of strings (``None``: ``sys.argv``), as for ``LightningCLI``.
        run: run the subcommand (``False``: only parse and instantiate, for tests and benchmarks).
    """

    def __init__(self, args: ArgsType = None, run: bool = True) -> None:
        super().__init__(
            BilevelLightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,  # modules configure their weights' optimizer; the callback its own
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"fit": {"epilog": options_epilog()}},
            args=args,
            run=run,
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {key: value for key, value in LightningCLI.subcommands().items() if key in ("fit", "validate", "test")}

    def instantiate_classes(self) -> None:
        # A value rejected by a constructor (say Neumann(iterations=-1)) is a configuration error: report the
        # constructor's message and exit, instead of a traceback from inside jsonargparse.
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as error:
            text = str(error)
            # jsonargparse nests the constructor's message inside its union report; lead with the innermost one.
            specific = re.findall(r"^\s*-?\s*(\w+\(\w+=.*\): .*)$", text, flags=re.MULTILINE)
            headline = specific[0] if specific else text.splitlines()[0]
            raise SystemExit(
                f"lightning-hypergrad: invalid configuration: {headline}\n\nFull report:\n{text}"
            ) from None

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RunReport, "report")

    def before_fit(self) -> None:
        """Check the module's bilevel contract before any data is loaded.

        The same check the callback makes: a broken ``hyperparameters()`` fails here with the module's name rather
        than deep inside the first training step.
        """
        check_bilevel_module(self.model)
        for report in (c for c in self.trainer.callbacks if isinstance(c, RunReport)):
            report.deferred_to_caller = True  # after_fit writes it, once every split has been evaluated

    def after_fit(self) -> None:
        """Evaluate the final weights on every split and write the end-of-fit report (on every process)."""
        report = next((c for c in self.trainer.callbacks if isinstance(c, RunReport)), None)
        if report is None or not report.enabled or self.trainer.interrupted:
            return
        # Every process evaluates and reaches the report (trainer.test and trainer.log_dir are collective).
        report.write(self.trainer, self.model, self.evaluate_splits(), self.report_directory())

    def evaluate_splits(self) -> dict[str, dict[str, float]]:
        """Loss and accuracy of the final weights on each split the datamodule (else the module) defines, through
        the module's ``test_step``; a split without a dataloader is left out."""
        owner = self.datamodule if self.datamodule is not None else self.model
        hooks = {"train": "train_dataloader", "validation": "val_dataloader", "test": "test_dataloader"}
        metrics: dict[str, dict[str, float]] = {}
        for split in SPLITS:
            if not adapter.overrides(owner, hooks[split]):  # Lightning's placeholder raises; no such split
                continue
            loader = getattr(owner, hooks[split])()
            results: list[dict[str, Any]] = self.trainer.test(self.model, dataloaders=loader, verbose=False)
            metrics[split] = {key.removeprefix("test_"): float(value) for key, value in results[0].items()}
        return metrics

    def report_directory(self) -> Path | None:
        """Where the report goes when the Trainer's own log directory would be the working directory: under
        ``fast_dev_run`` (which swaps the loggers for a stand-in) ``<configured logger's root>/fast_dev_run``,
        else ``<default_root_dir>/fast_dev_run``. None otherwise: the report uses ``trainer.log_dir``."""
        if not self.trainer.fast_dev_run:
            return None
        configured = self._get(self.config_init, "trainer", default={}).get("logger")
        first = configured[0] if isinstance(configured, list) and configured else configured
        root = getattr(first, "root_dir", None) or getattr(first, "save_dir", None) or self.trainer.default_root_dir
        return Path(root) / "fast_dev_run"


def options_epilog() -> str:
    """The hyperstep's options for ``fit --help``: the callback's and every solver's constructor arguments."""
    from lightning_hypergrad.lightning.callback import HypergradientCallback
    from lightning_hypergrad.solvers import ConjugateGradient, Exact, Identity, Neumann

    lines = [
        "Hypergradient options: add lightning_hypergrad.HypergradientCallback to trainer.callbacks "
        "(class_path/init_args); its solver is one of lightning_hypergrad.solvers. Signatures:",
    ]
    for owner in (HypergradientCallback, Neumann, ConjugateGradient, Identity, Exact):
        arguments = ", ".join(
            f"{name}={parameter.default!r}" for name, parameter in inspect.signature(owner).parameters.items()
        )
        path = "lightning_hypergrad" if owner is HypergradientCallback else "lightning_hypergrad.solvers"
        lines.append(f"{path}.{owner.__name__}({arguments});")
    lines.append("each option explained: fit --trainer.callbacks.help lightning_hypergrad.HypergradientCallback")
    return " ".join(lines)


def main(args: ArgsType = None) -> None:
    """Entry point of ``lightning-hypergrad`` and ``python -m lightning_hypergrad``.

    The working directory goes first on the import path, as ``python -m`` puts it there, so a YAML ``class_path``
    naming a module of the current directory (``my_task.MyTask`` for ``./my_task.py``) resolves from the installed
    command too.
    """
    working_directory = os.getcwd()
    if working_directory not in sys.path and "" not in sys.path:
        sys.path.insert(0, working_directory)
    HypergradCLI(args=args)
