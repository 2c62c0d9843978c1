"""The ``lightning-hypergrad`` command: LightningCLI over the package's tasks, models and datamodules."""

from __future__ import annotations

import inspect
import re
from typing import Any

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

# Imported so their classes resolve by short name (e.g. --model WeightDecayClassifier).
import lightning_hypergrad.data
import lightning_hypergrad.models
import lightning_hypergrad.solvers
import lightning_hypergrad.tasks  # noqa: F401
from lightning_hypergrad.contract import check_bilevel_module
from lightning_hypergrad.module import BilevelLightningModule
from lightning_hypergrad.report import SPLITS, RunReport


class HypergradCLI(LightningCLI):
    """LightningCLI with ``fit``, ``validate`` and ``test``; ``fit`` ends with an evaluation and a report.

    After ``fit`` the final weights are evaluated on the train, validation and test splits (the module's
    ``test_step``), and ``summary.json``, ``validation_loss.png`` and ``hyperparameters.png`` are written to the
    run's log directory (``--report.enabled false`` turns this off).
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
        report = next((c for c in self.trainer.callbacks if isinstance(c, RunReport)), None)
        if report is None or not report.enabled or self.trainer.interrupted:
            return
        report.write(self.trainer, self.model, self.evaluate_splits())

    def evaluate_splits(self) -> dict[str, dict[str, float]]:
        """Loss and accuracy of the final weights on each split, through the module's ``test_step``."""
        datamodule = self.datamodule
        loaders = {
            "train": datamodule.train_dataloader,
            "validation": datamodule.val_dataloader,
            "test": datamodule.test_dataloader,
        }
        metrics: dict[str, dict[str, float]] = {}
        for split in SPLITS:
            try:
                loader = loaders[split]()
            except NotImplementedError:  # Lightning's placeholder: the datamodule has no such split
                continue
            results: list[dict[str, Any]] = self.trainer.test(self.model, dataloaders=loader, verbose=False)
            metrics[split] = {key.removeprefix("test_"): float(value) for key, value in results[0].items()}
        return metrics


def options_epilog() -> str:
    """The hyperstep's options for ``fit --help``: the callback's and every solver's constructor arguments."""
    from lightning_hypergrad.callback import HypergradientCallback
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
    """Entry point of ``lightning-hypergrad`` and ``python -m lightning_hypergrad``."""
    HypergradCLI(args=args)
