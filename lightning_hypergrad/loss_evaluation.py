"""The two losses of a hyperstep, evaluated as the Trainer would, leaving the module as it found it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from lightning.pytorch.plugins import Precision
from torch import Tensor, nn


@contextmanager
def preserved_module_state(module: nn.Module) -> Iterator[None]:
    """Restore every submodule's train/eval mode and every buffer (BatchNorm statistics) on exit, exception or not.

    A hyperstep runs forward passes in training mode, which would otherwise move running statistics once more
    per hyperstep than plain training does.
    """
    modes = {submodule: submodule.training for submodule in module.modules()}
    buffers = {name: buffer.detach().clone() for name, buffer in module.named_buffers()}
    try:
        yield
    finally:
        for submodule, training in modes.items():
            submodule.training = training
        with torch.no_grad():
            for name, buffer in module.named_buffers():
                if name in buffers:
                    buffer.copy_(buffers[name])


@contextmanager
def hyperstep_context(module: nn.Module) -> Iterator[None]:
    """What the whole hyperstep (losses, solve, mixed term) runs inside.

    Today: :func:`preserved_module_state`. Kernel choices that must hold for the double-backward passes too
    (an attention or RNN backend with second derivatives) belong here, entered on the same stack.
    """
    with ExitStack() as stack:
        stack.enter_context(preserved_module_state(module))
        yield


def evaluate_losses(
    module: Any, precision: Precision, train_batch: Any, validation_batch: Any, validation_mode: str
) -> tuple[Tensor, Tensor]:
    """``(training_loss, validation_loss)`` of ``module`` on these batches, graph attached.

    Both run under the precision plugin's ``forward_context`` (autocast under mixed precision, as training
    steps do). The validation loss runs in eval mode when ``validation_mode == "eval"`` (dropout off, BatchNorm
    on running statistics); the training loss always in the module's own (training) mode. Call it inside
    :func:`hyperstep_context` so that modes and buffers are restored afterwards.
    """
    modes = {submodule: submodule.training for submodule in module.modules()}
    with precision.forward_context():
        if validation_mode == "eval":
            module.eval()
        validation_loss = module.validation_loss(validation_batch)
        for submodule, training in modes.items():
            submodule.training = training
        train_loss = module.training_loss(train_batch)
    return train_loss, validation_loss


def loss_scale(precision: Precision) -> float:
    """The weights' current AMP loss scale under ``16-mixed`` (keeps float16 products from underflowing), else 1."""
    scaler = getattr(precision, "scaler", None)
    if scaler is not None and scaler.is_enabled():
        return float(scaler.get_scale())
    return 1.0
