"""Gradients of a loss as the hypergradient needs them: zeros where a loss does not reach, in working precision."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_hypergrad.engine import vectors
from lightning_hypergrad.engine.vectors import Vector


def gradients(loss: Tensor, inputs: Vector, create_graph: bool = False, unscale: float = 1.0) -> Vector:
    """∂loss/∂inputs with zeros for inputs the loss does not reach; direct gradients come out in working precision.

    Without ``create_graph``, each gradient is multiplied by ``unscale`` (out of place: autograd may hand back a
    tensor it also holds) and an input the loss does not reach gets a broadcast view of one zero (no memory).

    ``retain_graph`` is always on: the caller's graphs may share nodes (say, a transform of λ used by both
    losses), and freeing them here would break the caller's later backward passes.
    """
    if create_graph:
        if not loss.requires_grad:
            return vectors.zeros_like(inputs)
        return tuple(
            torch.autograd.grad(
                loss, inputs, retain_graph=True, create_graph=True, allow_unused=True, materialize_grads=True
            )
        )
    found: Sequence[Tensor | None] = (
        torch.autograd.grad(loss, inputs, retain_graph=True, allow_unused=True)
        if loss.requires_grad
        else [None] * len(inputs)
    )
    return tuple(
        _working(gradient, unscale)
        if gradient is not None
        else torch.zeros((), dtype=vectors.working_dtype(tensor.dtype), device=tensor.device).expand(tensor.shape)
        for gradient, tensor in zip(found, inputs)
    )


def _working(gradient: Tensor, unscale: float) -> Tensor:
    gradient = gradient.detach().to(vectors.working_dtype(gradient.dtype))
    return gradient if unscale == 1.0 else gradient * unscale
