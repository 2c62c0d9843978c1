"""The two losses of a hyperstep, evaluated as the Trainer would, leaving the module as it found it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from lightning.pytorch.plugins import Precision
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from lightning_hypergrad.lightning import sharding


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

    :func:`preserved_module_state`, plus :func:`twice_differentiable_kernels`: the forward passes of a
    hyperstep must build graphs that can be differentiated twice, which the fast kernels weight steps use are not;
    FSDP2 modules are unsharded throughout (:func:`~lightning_hypergrad.lightning.sharding.unsharded`).
    """
    with ExitStack() as stack:
        stack.enter_context(sharding.unsharded(module))
        stack.enter_context(preserved_module_state(module))
        stack.enter_context(twice_differentiable_kernels(module))
        yield


@contextmanager
def twice_differentiable_kernels(module: nn.Module) -> Iterator[None]:
    """Kernel choices under which the hyperstep's Hessian-vector products exist (and are fast); weight steps
    outside keep the defaults.

    - Attention (``scaled_dot_product_attention``, used by ``nn.MultiheadAttention`` and
      ``nn.TransformerEncoder``): the math backend. The fused flash / memory-efficient kernels have no double
      backward (on the CPU the flash kernel is picked whenever attention dropout is 0).
    - ``torch.compile``: compiled code runs eagerly (``torch.compiler.set_stance("force_eager")``), since a
      compiled backward cannot be differentiated again; the parameters are the same, only the kernels differ.
    - RNNs (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``) present: oneDNN off (its RNN double backward is slower than the
      native one, 1.3–1.9× in ``benchmarks/lightning_kernels.py``) and cuDNN off (cuDNN's RNN backward has
      no derivative).
    """
    with ExitStack() as stack:
        stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        stack.enter_context(torch.compiler.set_stance("force_eager"))
        if any(isinstance(submodule, nn.RNNBase) for submodule in module.modules()):
            stack.enter_context(_switched_off(torch.backends.mkldnn))
            stack.enter_context(_switched_off(torch.backends.cudnn))
        yield


@contextmanager
def _switched_off(backend: Any) -> Iterator[None]:
    # Only ``enabled``: torch's own ``flags()`` would also reset ``deterministic`` and the TF32 settings.
    enabled = backend.enabled
    backend.enabled = False
    try:
        yield
    finally:
        backend.enabled = enabled


def evaluate_losses(
    module: Any,
    precision: Precision,
    train_batch: Any,
    validation_batch: Any,
    validation_mode: str,
    graph: Any = None,
) -> tuple[Tensor, Tensor]:
    """``(training_loss, validation_loss)`` of ``module`` on these batches, graph attached.

    Both run under the precision plugin's ``forward_context`` (autocast under mixed precision, as training
    steps do). The validation loss runs in eval mode when ``validation_mode == "eval"`` (dropout off, BatchNorm
    on running statistics); the training loss always in the module's own (training) mode. Call it inside
    :func:`hyperstep_context` so that modes and buffers are restored afterwards. With ``graph`` (a
    :class:`~lightning_hypergrad.lightning.graph_reuse.WeightStepGraph`) the training loss is the weight step's own.
    """
    modes = {submodule: submodule.training for submodule in module.modules()}
    with precision.forward_context():
        if validation_mode == "eval":
            module.eval()
        validation_loss = module.validation_loss(validation_batch)
        for submodule, training in modes.items():
            submodule.training = training
        train_loss = module.training_loss(train_batch) if graph is None else graph.loss
    return train_loss, validation_loss
