"""Every read or write of Lightning's (and torch DDP's) private attributes in the package, in one place.

Private attributes change between releases without notice. Keeping each use here, with the reason and the
version it was written against (Lightning 2.6, torch 2.14), means an upgrade has exactly one file to re-check;
``tests/test_internals.py`` pins each one. No other module may touch a ``_private`` attribute of a Lightning
or torch object.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.core.hooks import DataHooks
from torch import Tensor, nn


def set_up_validation_dataloaders(trainer: Trainer) -> None:
    """Build ``trainer.val_dataloaders`` now if the fit has a validation source that was not loaded yet.

    Lightning loads validation data lazily, at the first validation run; a hyperstep can come first. The fit
    loop's validation loop keeps its source in ``_data_source`` (no public accessor in 2.6).
    """
    val_loop = trainer.fit_loop.epoch_loop.val_loop
    if trainer.val_dataloaders is None and val_loop._data_source.is_defined():
        val_loop.setup_data()


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


def overrides(owner: object, method: str) -> bool:
    """Whether ``owner`` defines the data hook ``method`` itself rather than inheriting Lightning's placeholder."""
    implementation = getattr(type(owner), method, None)
    return implementation is not None and implementation is not getattr(DataHooks, method, None)
