"""Every read or write of Lightning's (and torch DDP's) private attributes in the package, in one place.

Private attributes change between releases without notice. Keeping each use here, with the reason and the
version it was written against (Lightning 2.6, torch 2.14), means an upgrade has exactly one file to re-check;
``tests/test_internals.py`` pins each one. No other module may touch a ``_private`` attribute of a Lightning
or torch object.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import StochasticWeightAveraging, WeightAveraging
from lightning.pytorch.core.hooks import DataHooks
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel


def validation_dataloaders(trainer: Trainer) -> Any:
    """The fit's validation dataloader(s) as the user gave them (a loader, list or dict), or None if there are none.

    Lightning loads validation data lazily, at the first validation run, which a hyperstep can precede, and
    never under ``limit_val_batches=0``. The fit loop's validation loop keeps its source in ``_data_source``
    (no public accessor in 2.6): loaded through ``setup_data`` when that loads it, else read from the source.
    """
    val_loop = trainer.fit_loop.epoch_loop.val_loop
    if trainer.val_dataloaders is None and val_loop._data_source.is_defined():
        val_loop.setup_data()
        if trainer.val_dataloaders is None:
            return val_loop._data_source.dataloader()
    return trainer.val_dataloaders


def ignore_in_ddp(module: LightningModule, names: Sequence[str]) -> None:
    """Tell DistributedDataParallel not to wait for gradients of these parameters (the hyperparameters).

    torch reads the list from the module's ``_ddp_params_and_buffers_to_ignore`` when it wraps it; the setter
    is a private static method of ``DistributedDataParallel``.
    """
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, list(names))


def overrides(owner: object, method: str) -> bool:
    """Whether ``owner`` defines the data hook ``method`` itself rather than inheriting Lightning's default stub."""
    implementation = getattr(type(owner), method, None)
    return implementation is not None and implementation is not getattr(DataHooks, method, None)


def skipping_backward(trainer: Trainer) -> bool:
    """Whether the fit loop skips backward passes this epoch: StochasticWeightAveraging sets ``_skip_backward``
    for its extra epoch that only recomputes BatchNorm statistics (honoured by automatic optimization only)."""
    return bool(getattr(trainer.fit_loop, "_skip_backward", False))


def averaged_copies(trainer: Trainer) -> list[nn.Module]:
    """The averaged copies of the module held by weight-averaging callbacks (those created so far).

    ``StochasticWeightAveraging`` keeps a deep copy in ``_average_model``; ``WeightAveraging`` (parent of
    ``EMAWeightAveraging``) an ``AveragedModel`` there, whose ``module`` is the copy. No public accessor in 2.6.
    """
    copies = []
    for callback in trainer.callbacks:
        if isinstance(callback, (StochasticWeightAveraging, WeightAveraging)) and callback._average_model is not None:
            average = callback._average_model
            copies.append(average.module if isinstance(average, AveragedModel) else average)
    return copies
