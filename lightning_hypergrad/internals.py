"""Every read or write of Lightning's (and torch DDP's) private attributes in the package, in one place.

Private attributes change between releases without notice. Keeping each use here, with the reason and the
version it was written against (Lightning 2.6, torch 2.14), means an upgrade has exactly one file to re-check;
``tests/test_internals.py`` pins each one. No other module may touch a ``_private`` attribute of a Lightning
or torch object.
"""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.core.hooks import DataHooks
from torch.nn.parallel import DistributedDataParallel


def set_up_validation_dataloaders(trainer: Trainer) -> None:
    """Build ``trainer.val_dataloaders`` now if the fit has a validation source that was not loaded yet.

    Lightning loads validation data lazily, at the first validation run; a hyperstep can come first. The fit
    loop's validation loop keeps its source in ``_data_source`` (no public accessor in 2.6).
    """
    val_loop = trainer.fit_loop.epoch_loop.val_loop
    if trainer.val_dataloaders is None and val_loop._data_source.is_defined():
        val_loop.setup_data()


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
