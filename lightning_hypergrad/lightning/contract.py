"""The one check of what a BilevelLightningModule promises: used by the module, the callback, the report and the CLI."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.optim import Optimizer

from lightning_hypergrad.engine.hypergradient import HypergradientWarning
from lightning_hypergrad.engine.inputs import check_no_reentrant_checkpoint

if TYPE_CHECKING:
    from lightning_hypergrad.lightning.module import BilevelLightningModule


def named_hyperparameters(module: LightningModule) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` for each of ``module.hyperparameters()``, after checking every one of them.

    Each must be a leaf tensor that requires grad, has at least one element, is registered on the module (so
    checkpoints hold it and ``.to(device)`` moves it) and appears once. Names are the module's own parameter names.
    Raises ``TypeError``/``ValueError`` naming the offending entry and what to return instead.
    """
    owner = type(module).__name__
    returned = module.hyperparameters()  # type: ignore[operator]
    if isinstance(returned, Tensor):
        raise TypeError(
            f"{owner}.hyperparameters() returned a single tensor of shape {tuple(returned.shape)}; return an "
            "iterable of nn.Parameter, e.g. [self.log_decay], not self.log_decay."
        )
    if not isinstance(returned, Iterable):
        raise TypeError(
            f"{owner}.hyperparameters() must return an iterable of nn.Parameter, got {type(returned).__name__}."
        )
    hyperparameters = list(returned)
    if not hyperparameters:
        raise ValueError(f"{owner}.hyperparameters() returned nothing; there is nothing to tune.")
    registered = {id(parameter): name for name, parameter in module.named_parameters()}
    seen: set[int] = set()
    named = []
    for index, parameter in enumerate(hyperparameters):
        _check_one(owner, index, parameter, registered, seen)
        seen.add(id(parameter))
        named.append((registered[id(parameter)], parameter))
    return named


def _check_one(owner: str, index: int, parameter: object, registered: dict[int, str], seen: set[int]) -> None:
    where = f"{owner}.hyperparameters()[{index}]"
    if not isinstance(parameter, Tensor):
        raise TypeError(f"{where} is a {type(parameter).__name__}, not an nn.Parameter.")
    shape = tuple(parameter.shape)
    if not parameter.is_leaf:
        raise ValueError(
            f"{where} (shape {shape}) is not a leaf tensor; return the nn.Parameter itself, not a value computed "
            "from it (apply transforms inside the losses)."
        )
    if not parameter.requires_grad:
        raise ValueError(f"{where} (shape {shape}) does not require grad.")
    if parameter.numel() == 0:
        raise ValueError(f"{where} has no elements (shape {shape}); there is nothing to tune in it.")
    if id(parameter) not in registered:
        raise ValueError(
            f"{where} (shape {shape}) is not registered on the module, so it would be neither checkpointed nor "
            "moved to the device; make it an nn.Parameter attribute."
        )
    if id(parameter) in seen:
        raise ValueError(
            f"{where} ({registered[id(parameter)]!r}) is returned twice; each hyperparameter must appear once "
            "(else it would be stepped twice per hyperstep)."
        )


def check_manual_optimization(module: LightningModule) -> None:
    """Refuse a module that switched back to automatic optimization (its weights would never step)."""
    if module.automatic_optimization:
        raise ValueError(
            f"{type(module).__name__}.automatic_optimization is True; a BilevelLightningModule trains its weights with "
            "manual optimization (its training_step steps the optimizer). Do not set automatic_optimization = True."
        )


def check_loss(module: LightningModule, method: str, loss: object) -> Tensor:
    """Return ``loss`` if it is a floating one-element tensor, else raise naming the method and what it returned."""
    owner = f"{type(module).__name__}.{method}(batch)"
    if not isinstance(loss, Tensor):
        raise TypeError(
            f"{owner} returned a {type(loss).__name__}; it must return a scalar tensor computed from the module's "
            "outputs (so that it can be differentiated), e.g. nn.functional.cross_entropy(logits, targets)."
        )
    if loss.numel() != 1 or not loss.is_floating_point():
        raise ValueError(
            f"{owner} returned a {loss.dtype} tensor of shape {tuple(loss.shape)}; it must return a floating "
            "scalar tensor: reduce it, e.g. loss.mean() or loss.sum()."
        )
    return loss


def check_weight_optimizers(module: LightningModule, optimizers: Sequence[Optimizer]) -> None:
    """Refuse weight optimizers whose ``step`` needs a closure (LBFGS): the module's manual step calls it without."""
    for optimizer in optimizers:
        closure = inspect.signature(type(optimizer).step).parameters.get("closure")
        if closure is not None and closure.default is inspect.Parameter.empty:
            raise ValueError(
                f"{type(module).__name__}.configure_optimizers returned {type(optimizer).__name__}, whose step() "
                "needs a closure that re-evaluates the loss; a BilevelLightningModule steps its weights once per "
                "batch without one. Use a first-order optimizer such as SGD, Adam or AdamW."
            )


def check_disjoint_from_optimizers(named: Sequence[tuple[str, nn.Parameter]], optimizers: Sequence[Optimizer]) -> None:
    """Refuse hyperparameters that the weights' optimizers would also step."""
    names = {id(parameter): name for name, parameter in named}
    for index, optimizer in enumerate(optimizers):
        shared = [
            names[id(parameter)]
            for group in optimizer.param_groups
            for parameter in group["params"]
            if id(parameter) in names
        ]
        if shared:
            raise ValueError(
                f"Hyperparameters {shared} are also in the weights' optimizer {index} "
                f"({type(optimizer).__name__}); build it from self.weight_parameters() in configure_optimizers."
            )


def check_bilevel_module(
    module: LightningModule, optimizers: Sequence[Optimizer] = ()
) -> list[tuple[str, nn.Parameter]]:
    """The whole contract: a BilevelLightningModule in manual optimization, valid hyperparameters, disjoint from
    ``optimizers`` (the weights'). Returns the named hyperparameters."""
    from lightning_hypergrad.lightning.module import BilevelLightningModule  # the module imports this file

    if not isinstance(module, BilevelLightningModule):
        raise TypeError(
            f"HypergradientCallback needs a BilevelLightningModule; {type(module).__name__} is not one. "
            "Subclass lightning_hypergrad.BilevelLightningModule and implement training_loss, validation_loss "
            "and hyperparameters."
        )
    check_manual_optimization(module)
    named = named_hyperparameters(module)
    check_disjoint_from_optimizers(named, optimizers)
    check_weight_optimizers(module, optimizers)
    check_implicit_parameters(module)
    return named


def check_implicit_parameters(module: BilevelLightningModule) -> None:
    """Raise unless ``implicit_parameters()`` is a non-empty subset of ``weight_parameters()``."""
    weights = {id(parameter) for parameter in module.weight_parameters()}
    chosen = list(module.implicit_parameters())
    names = {id(parameter): name for name, parameter in module.named_parameters()}
    strangers = [
        names.get(id(parameter), f"#{index}") for index, parameter in enumerate(chosen) if id(parameter) not in weights
    ]
    if not chosen or strangers:
        raise ValueError(
            f"{type(module).__name__}.implicit_parameters() must return a non-empty subset of weight_parameters(); "
            + (
                f"{strangers} are not weights (hyperparameters, frozen or unregistered)."
                if strangers
                else "it is empty."
            )
        )


def warn_about_idle_hyperparameters(
    module: LightningModule, train_loss: Tensor, named: Sequence[tuple[str, nn.Parameter]]
) -> bool:
    """Warn (rank 0) naming the hyperparameters ``train_loss`` does not depend on: the implicit term cannot move
    them. Returns True (the check was made).

    Runs before the first solve, so it first refuses reentrant checkpointing with the engine's message (its own
    gradient would otherwise meet torch's less helpful error).
    """
    check_no_reentrant_checkpoint(training_loss=train_loss)
    gradients = torch.autograd.grad(train_loss, [p for _, p in named], retain_graph=True, allow_unused=True)
    idle = [name for (name, _), gradient in zip(named, gradients) if gradient is None]
    if idle:
        rank_zero_warn(
            f"Hyperparameters {idle} do not influence {type(module).__name__}.training_loss, so the implicit "
            "hypergradient cannot move them (only a direct term from validation_loss can).",
            category=HypergradientWarning,
        )
    return True


def bilevel(module: LightningModule) -> BilevelLightningModule:
    """``module``, checked to be a BilevelLightningModule (the callback's hooks receive plain LightningModules)."""
    from lightning_hypergrad.lightning.module import BilevelLightningModule as Bilevel  # the module imports this file

    if not isinstance(module, Bilevel):
        raise TypeError(f"HypergradientCallback needs a BilevelLightningModule, got {type(module).__name__}.")
    return module
