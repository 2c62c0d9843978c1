"""Reusing the weight step's graph for a hyperstep (``HypergradientCallback``'s default, ``reuse_training_graph="auto"``).

A hyperstep on ``train_batch="current"`` needs ``g = ∂L_T/∂w`` on the batch the weights just trained on, with
its graph: one forward and one backward that the weight step has already run. With reuse, on a batch whose
weight step is due a hyperstep, the module's ``training_step`` runs that backward with ``create_graph=True``
(through ``manual_backward``, so Lightning's backward hooks still run), hands the loss and its gradient to the
callback, which takes the hyperstep right there, and only then steps the optimizer. The hyperstep is therefore
taken at the weights *before* that weight step (without reuse: after it), and saves one forward and backward.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_hypergrad.engine.hypergradient import HypergradientWarning
from lightning_hypergrad.lightning import weight_steps
from lightning_hypergrad.lightning.losses import twice_differentiable_kernels

if TYPE_CHECKING:
    from lightning_hypergrad.lightning.callback import HypergradientCallback
    from lightning_hypergrad.lightning.module import BilevelLightningModule


@dataclass
class WeightStepGraph:
    """The weight step's training loss and its gradient by weight, both with their graphs.

    Attributes:
        loss: the training loss of the weight step's batch, at the weights before the step.
        gradients: ``∂loss/∂weight`` built with ``create_graph=True``, keyed by ``id(weight)``.
    """

    loss: Tensor
    gradients: dict[int, Tensor]  # id(weight) -> ∂L_T/∂weight, create_graph=True

    def for_weights(self, weights: list[Tensor]) -> list[Tensor]:
        """The gradient parts of ``weights`` (the implicit weights: all of the step's, or a subset)."""
        return [self.gradients[id(weight)] for weight in weights]


GraphConsumer = Callable[[Any, WeightStepGraph], None]


def checked_request(reuse_training_graph: bool | str, train_batch: str) -> bool | str:
    """``reuse_training_graph`` once it is ``True``, ``False`` or ``"auto"``; ``True`` with ``train_batch="fresh"``
    is refused (``ValueError``)."""
    if reuse_training_graph not in (True, False, "auto"):
        raise ValueError(f"reuse_training_graph must be True, False or 'auto', got {reuse_training_graph!r}.")
    if reuse_training_graph is True and train_batch != "current":
        raise ValueError(
            f"reuse_training_graph=True needs train_batch='current' (the graph is that batch's), got {train_batch!r}."
        )
    return reuse_training_graph


def reuses_graph(
    callback: HypergradientCallback, trainer: Trainer, module: BilevelLightningModule, weights_scale: float | None
) -> bool:
    """Whether this fit reuses the weight step's graph: with ``"auto"`` wherever it can, with ``True`` or a
    ``ValueError`` naming what stands in the way (``weights_scale``: the GradScaler's scale under ``16-mixed``)."""
    requested = callback.reuse_training_graph
    if requested is False or callback.train_batch != "current":
        return False
    obstacle = _obstacle(trainer, module, weights_scale is not None) or _older_override(callback)
    if obstacle is not None and requested is True:
        raise ValueError(f"HypergradientCallback(reuse_training_graph=True) {obstacle}")
    return obstacle is None


def _older_override(callback: HypergradientCallback) -> str | None:
    """Why a subclass's ``compute_hypergradient`` or ``hyperstep`` cannot receive the graph, or None."""
    for name, parameter in (("compute_hypergradient", "graph"), ("hyperstep", "graph")):
        accepted = inspect.signature(getattr(callback, name)).parameters
        if parameter not in accepted and not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
            return f"needs {type(callback).__name__}.{name} to take a `{parameter}` argument (as the base class's)."
    return None


def _obstacle(trainer: Trainer, module: BilevelLightningModule, grad_scaler: bool) -> str | None:
    if module.accumulate_grad_batches != 1:
        return (
            f"needs accumulate_grad_batches=1 (the graph is one batch's), got {module.accumulate_grad_batches}; "
            "use reuse_training_graph='auto' or False."
        )
    if trainer.world_size > 1:
        return (
            "runs on one process only: DDP and FSDP synchronise gradients in backward hooks that a graph kept for "
            f"the hyperstep would bypass; this fit has {trainer.world_size} processes. Use 'auto' or False."
        )
    if grad_scaler:
        return (
            "is not available under 16-mixed (a GradScaler): the hyperstep keeps its own loss scale and recomputes "
            "the losses on overflow. Use bf16-mixed or 32-true, or reuse_training_graph='auto' or False."
        )
    return None


def offer(callback: HypergradientCallback, trainer: Trainer, module: BilevelLightningModule) -> None:
    """Before a batch: ask the module for its graph when the weight step this batch completes is due a hyperstep."""
    due = callback.is_hyperstep(trainer.global_step + 1) and callback.graph_step != trainer.global_step
    module.weight_step_graph_consumer = functools.partial(_consume, callback, trainer) if due else None


def served(callback: HypergradientCallback, module: BilevelLightningModule, step: int) -> bool:
    """After a batch's weight step (``step`` taken in all): whether its hyperstep already ran on the step's graph.

    Warns once when a hyperstep was due but the module never handed its graph over (a ``training_step`` override
    that does not call ``super()``): that hyperstep then runs as without reuse.
    """
    offered, module.weight_step_graph_consumer = module.weight_step_graph_consumer, None
    if callback.graph_step in (step - 1, step):  # step: the weight step itself was skipped (non-finite)
        return True
    if offered is not None and callback.reuse_training_graph is True and not callback.graph_unserved_warned:
        callback.graph_unserved_warned = True
        rank_zero_warn(
            f"reuse_training_graph=True: {type(module).__name__}.training_step did not hand its graph to the "
            "hyperstep (an override that does not call BilevelLightningModule.training_step, or a compiled one); "
            "hypersteps recompute it.",
            category=HypergradientWarning,
        )
    return False


def _consume(callback: HypergradientCallback, trainer: Trainer, batch: Any, graph: WeightStepGraph) -> None:
    from lightning_hypergrad.lightning.contract import bilevel  # contract imports the module, which imports this

    callback.graph_step = trainer.global_step
    callback.hyperstep(trainer, bilevel(trainer.lightning_module), batch, graph)


def training_loss_with_graph(module: LightningModule, batch: Any) -> Tensor:
    """The training loss of a weight step whose graph a hyperstep reuses: kernels that can be differentiated twice."""
    with twice_differentiable_kernels(module):
        return module.training_loss(batch)


def backward_keeping_graph(module: LightningModule, loss: Tensor, weights: list[Tensor]) -> WeightStepGraph:
    """The weight step's backward (``manual_backward`` into ``weights``) with ``create_graph=True``.

    The weights' ``.grad`` get the detached gradients (what the optimizer steps with); the returned graph holds
    the attached ones until the hyperstep is done with them.
    """
    with warnings.catch_warnings():  # about the weight → grad → graph cycle, broken just below
        warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
        weight_steps.backward_weights(module, loss, weights, create_graph=True)
    found = {}
    for weight in weights:
        if weight.grad is None:  # the loss does not reach it: no .grad, as after a plain backward
            found[id(weight)] = torch.zeros_like(weight)
        else:
            found[id(weight)] = weight.grad
            weight.grad = weight.grad.detach()  # no reference cycle weight → grad → graph → weight
    return WeightStepGraph(loss, found)
