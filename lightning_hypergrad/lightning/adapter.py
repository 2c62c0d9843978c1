"""Every read or write of Lightning's (and torch DDP's) private attributes in the package, in one place.

Private attributes change between releases without notice. Keeping each use here, with the reason and the
version it was written against (Lightning 2.6, torch 2.14), means an upgrade has exactly one file to re-check;
``tests/lightning/test_adapter.py`` pins each one. No other module may touch a ``_private`` attribute of a
Lightning or torch object, reach into the Trainer's loops, or write the Trainer's metric dictionaries.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import StochasticWeightAveraging, WeightAveraging
from lightning.pytorch.core.hooks import DataHooks
from lightning.pytorch.utilities.combined_loader import _shutdown_workers_and_reset_iterator
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader


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


def own_loader(loader: Any) -> Any:
    """A DataLoader of the hyperstep's own: a shallow copy of ``loader`` (same dataset, sampler, collate function
    and worker settings) without its iterator; any other iterable unchanged.

    A DataLoader with ``persistent_workers`` keeps one iterator, and its worker pool, in ``_iterator`` (torch 2.14):
    every ``iter()`` of the object resets that one iterator. A second stream over the fit loop's loader object
    would cut the fit's epoch short and take its batches; the copy starts its own iterator and pool.
    """
    if not isinstance(loader, DataLoader):
        return loader
    copied = copy.copy(loader)
    copied._iterator = None
    return copied


def end_workers(loader: Any) -> None:
    """End the persistent worker processes of a DataLoader of :func:`own_loader`'s, as Lightning ends its loaders'
    at the end of a fit (with its ``_shutdown_workers_and_reset_iterator``, no public counterpart in 2.6).

    Left to the garbage collector, a pool collected in the middle of a later fit's data loading waits 5 s per
    worker (torch's join timeout) for workers that do not answer.
    """
    if isinstance(loader, DataLoader):
        _shutdown_workers_and_reset_iterator(loader)


def evaluation_dataloader_idx(trainer: Trainer) -> int:
    """The index of the validation (or test) dataloader whose batch the running evaluation step is on; 0 with one.

    Lightning passes ``dataloader_idx`` to the step only with several loaders, and a user's override may not pass
    it on to ``super()``. The running loop's result collection holds it (``_results.dataloader_idx``, what
    ``self.log`` reads to name metrics per loader; no public accessor in 2.6).
    """
    results = trainer._results
    index = results.dataloader_idx if results is not None else None
    return index or 0


def ddp_spellings(module: nn.Module, parameters: Iterable[Tensor]) -> list[str]:
    """Every name under which torch's DDP may look ``parameters`` up in its ignore list.

    DDP spells a parameter two ways: ``named_parameters()``' name when it collects the module's parameters and
    broadcasts them, and ``f"{module_name}.{param_name}"`` when it builds its gradient reducer, which for a
    parameter registered on the root module is ``".name"`` (torch 2.14). A name listed in one spelling only
    leaves a top-level hyperparameter in the reducer, which then waits for a gradient that never comes.
    """
    wanted = {id(parameter) for parameter in parameters}
    names: list[str] = []
    for module_name, submodule in module.named_modules():
        for parameter_name, parameter in submodule.named_parameters(recurse=False):
            if id(parameter) in wanted:
                reducer_name = f"{module_name}.{parameter_name}"
                names += [reducer_name, reducer_name if module_name else parameter_name]
    return list(dict.fromkeys(names))


class DDPIgnoresHyperparameters:
    """A class attribute for ``_ddp_params_and_buffers_to_ignore``: the user's list plus the hyperparameters.

    torch's ``DistributedDataParallel`` (and Lightning's DDP strategy) read that attribute of the module they
    wrap; parameters named there get neither gradient all-reduce nor the initial broadcast. Hyperparameters get
    no gradient from the weights' backward, so DDP must not wait for them, with or without the callback. As a
    data descriptor the list is computed when DDP reads it (after ``hyperparameters()`` can be called), and a
    list the user assigns is kept and extended, not overwritten (its parameters get the reducer's spelling too).
    """

    storage = "_ddp_ignored_by_user"

    def __get__(self, module: nn.Module | None, owner: type | None = None) -> Any:
        if module is None:
            return self
        by_user = list(module.__dict__.get(self.storage, []))
        parameters = dict(module.named_parameters())
        ignored = [parameters[name] for name in by_user if name in parameters]  # the user's, in both spellings too
        try:
            ignored += [parameter for _, parameter in module.named_hyperparameters()]  # type: ignore[operator]
        except Exception:  # a broken declaration is reported by the contract check, with its own message
            pass
        return list(dict.fromkeys([*by_user, *ddp_spellings(module, ignored)]))

    def __set__(self, module: nn.Module, names: Iterable[str]) -> None:
        module.__dict__[self.storage] = list(names)


class HyperparametersIgnoredByDDP:
    """A base class of :class:`~lightning_hypergrad.BilevelLightningModule`: DDP must not wait for the
    hyperparameters' gradients, which the weights' backward never produces (:class:`DDPIgnoresHyperparameters`)."""

    _ddp_params_and_buffers_to_ignore = DDPIgnoresHyperparameters()


def is_last_batch(trainer: Trainer) -> bool:
    """Whether the fit loop's current batch is the epoch's last. Lightning has looked one batch ahead by then, also
    over an ``IterableDataset`` of unknown length; the epoch loop's ``batch_progress`` holds the answer (no public
    accessor in 2.6)."""
    return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)


def show_metrics(trainer: Trainer, shown: dict[str, float]) -> None:
    """Put ``shown`` on the progress bar and in ``trainer.callback_metrics`` (for ``ModelCheckpoint`` and
    ``EarlyStopping`` monitors), writing the dictionaries those properties return and Lightning's own logging fills.

    ``LightningModule.log`` would do the same at about 0.5 ms per value on a CPU (it re-walks its result collection
    each call): a third of a small model's hyperstep overhead.
    """
    trainer.progress_bar_metrics.update(shown)
    trainer.callback_metrics.update({name: torch.tensor(value) for name, value in shown.items()})


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


FSDP_GROUP_SETTINGS = ("post_forward_mesh_info", "reshard_after_backward", "reduce_grads", "all_reduce_grads")


def fsdp_settings(module: nn.Module) -> dict[str, Any]:
    """What ``set_reshard_after_forward`` / ``set_reshard_after_backward`` / ``set_requires_gradient_sync``
    (``recurse=False``) change on an FSDP2 module (``fully_shard``), to put back afterwards: torch 2.14 has setters
    but no getters. They live on the module's FSDP state (``_get_fsdp_state()``: ``_auto_reshard_after_forward``)
    and on each of its parameter groups (``_fsdp_param_groups``: the attributes in ``FSDP_GROUP_SETTINGS``)."""
    state = module._get_fsdp_state()  # type: ignore[operator]
    groups = [{name: getattr(group, name) for name in FSDP_GROUP_SETTINGS} for group in state._fsdp_param_groups]
    return {"auto_reshard_after_forward": state._auto_reshard_after_forward, "groups": groups}


def restore_fsdp_settings(module: nn.Module, settings: dict[str, Any]) -> None:
    """Put back what :func:`fsdp_settings` read."""
    state = module._get_fsdp_state()  # type: ignore[operator]
    state._auto_reshard_after_forward = settings["auto_reshard_after_forward"]
    for group, values in zip(state._fsdp_param_groups, settings["groups"]):
        for name, value in values.items():
            setattr(group, name, value)
