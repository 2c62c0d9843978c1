"""What the engine checks of its inputs before differentiating them: types, shapes, gradients, a graph that can
be differentiated twice, and finite losses."""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from lightning_hypergrad.engine.vectors import Vector
from lightning_hypergrad.solvers.base import IHVPSolver

REENTRANT_CHECKPOINT_FIX = (
    "Pass use_reentrant=False to torch.utils.checkpoint.checkpoint() (same memory saving, and its segments are "
    "recomputed with their graph)."
)


def check_inputs(
    train_loss: object, val_loss: object, params: object, hparams: object, solver: object
) -> tuple[Vector, Vector]:
    """The weights and hyperparameters as tuples, once every argument is what it must be.

    Otherwise raises a ``TypeError``/``ValueError`` naming the argument and the allowed form, or the
    ``RuntimeError`` of :func:`~lightning_hypergrad.engine.inputs.check_no_reentrant_checkpoint`.

    Args:
        train_loss, val_loss, params, hparams, solver: as given to :func:`~lightning_hypergrad.hypergradient`.
    """
    for name, loss in (("train_loss", train_loss), ("val_loss", val_loss)):
        if not isinstance(loss, Tensor):
            raise TypeError(f"{name} must be a scalar tensor, got {type(loss).__name__}.")
        if loss.numel() != 1:
            raise ValueError(
                f"{name} must be a scalar tensor, got shape {tuple(loss.shape)}; reduce it (e.g. .mean())."
            )
    checked = []
    for name, group in (("params", params), ("hparams", hparams)):
        if isinstance(group, Tensor):
            raise TypeError(f"{name} must be a sequence of tensors, got a single tensor; wrap it in a list.")
        group = tuple(group)  # type: ignore[arg-type]
        if not group:
            raise ValueError(f"{name} is empty; pass at least one tensor.")
        for index, tensor in enumerate(group):
            if not isinstance(tensor, Tensor):
                raise TypeError(f"{name}[{index}] must be a tensor, got {type(tensor).__name__}.")
            if not tensor.requires_grad:
                raise ValueError(
                    f"{name}[{index}] (shape {tuple(tensor.shape)}) does not require grad; call .requires_grad_()."
                )
        checked.append(group)
    weights, hyperparameters = checked
    weight_ids = {id(tensor) for tensor in weights}
    shared = [index for index, tensor in enumerate(hyperparameters) if id(tensor) in weight_ids]
    if shared:
        raise ValueError(f"hparams{shared} also appear in params; a tensor is either a weight or a hyperparameter.")
    if solver is not None and not isinstance(solver, IHVPSolver):
        raise TypeError(
            f"solver must be an IHVPSolver (Neumann, ConjugateGradient, Identity, Exact), got {type(solver).__name__}."
        )
    check_no_reentrant_checkpoint(train_loss=train_loss, val_loss=val_loss)  # type: ignore[arg-type]
    return weights, hyperparameters


def check_train_gradient(train_gradient: object, params: Vector, loss_scale: float) -> Vector:
    """A caller's ``train_gradient`` as a tuple, once it matches ``params`` part by part and ``loss_scale`` is 1.

    Raises a ``TypeError``/``ValueError`` naming the part and what was expected.
    """
    if loss_scale != 1.0:
        raise ValueError(f"train_gradient needs loss_scale=1.0 (it is of the unscaled loss), got {loss_scale}.")
    if isinstance(train_gradient, Tensor):
        raise TypeError("train_gradient must be a sequence of tensors, got a single tensor; wrap it in a list.")
    parts = tuple(train_gradient)  # type: ignore[call-overload]
    if len(parts) != len(params):
        raise ValueError(f"train_gradient has {len(parts)} parts; params has {len(params)}: one gradient per param.")
    for index, (part, param) in enumerate(zip(parts, params)):
        if not isinstance(part, Tensor) or part.shape != param.shape:
            found = tuple(part.shape) if isinstance(part, Tensor) else type(part).__name__
            raise ValueError(
                f"train_gradient[{index}] must be shaped like params[{index}] {tuple(param.shape)}, got {found}."
            )
    return parts


def check_no_reentrant_checkpoint(**losses: Tensor) -> None:
    """Raise a ``RuntimeError`` naming the fix if a loss's graph passes through ``checkpoint(use_reentrant=True)``.

    A reentrant segment runs its forward without a graph and its backward as a separate ``backward()``, so its
    weights are invisible to ``torch.autograd.grad`` and nothing through it can be differentiated twice. torch
    raises only when a derivative the engine takes crosses the segment. When none does, the segment's weights
    silently drop out: say the whole network is checkpointed on inputs that only a hyperparameter (a learned
    augmentation, distilled data) makes require grad; the hypergradient then came out 0 instead of −0.874 in
    ``tests/engine/test_inputs.py``. So the graphs are walked instead: every node once (about 6 µs each on a CPU,
    no tensor touched). A segment none of whose inputs require grad leaves no node at all and cannot be seen
    here; its weights get no gradient from any backward either, and torch warns when it runs.

    Args:
        losses: the scalar losses, by the name the error should give them (``train_loss=...``).
    """
    reentrant = _reentrant_checkpoint_node()
    seen: set[object] = set()
    for name, loss in losses.items():
        stack = [loss.grad_fn]
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            if isinstance(node, reentrant):
                raise RuntimeError(
                    f"{name} is computed through torch.utils.checkpoint with use_reentrant=True, whose segments "
                    "hide their weights from torch.autograd.grad and cannot be differentiated twice, as the "
                    "hypergradient's Hessian-vector products need: the result would be wrong or fail. "
                    + REENTRANT_CHECKPOINT_FIX
                )
            seen.add(node)
            stack.extend(successor for successor, _ in node.next_functions)


@functools.cache
def _reentrant_checkpoint_node() -> type:
    """The class of the graph node a reentrant checkpoint leaves, found by making one (public API only)."""
    with torch.enable_grad():
        probe = checkpoint(
            torch.clone, torch.zeros((), requires_grad=True), use_reentrant=True, preserve_rng_state=False
        )
    return type(probe.grad_fn)


def invalid_loss_reason(train_loss: Tensor, val_loss: Tensor, flags: Tensor, agreed: Tensor) -> str | None:
    """Why the losses cannot give a hypergradient, or None when both are finite on every process.

    Args:
        train_loss, val_loss: the losses, for the value the reason quotes.
        flags: :func:`~lightning_hypergrad.engine.inputs.non_finite_flags` of these losses.
        agreed: ``flags`` averaged over processes (``flags`` itself with one process).
    """
    (here, somewhere) = torch.stack([flags, agreed.to(flags.dtype)]).tolist()  # one host sync
    for index, (name, loss) in enumerate((("training", train_loss), ("validation", val_loss))):
        if here[index] > 0:
            return (
                f"the {name} loss is {float(loss.detach())}; a NaN/inf loss has no meaningful derivative (check "
                "the batch and the loss for log of 0, division by 0, an overflowing transform of a hyperparameter)"
            )
        if somewhere[index] > 0:
            return f"the {name} loss is not finite on another process; check that process's batch and loss"
    return None


def non_finite_flags(train_loss: Tensor, val_loss: Tensor) -> Tensor:
    """``[train_loss is not finite, val_loss is not finite]`` as a float32 vector on ``val_loss``'s device.

    Averaged across processes it tells every process whether any had a non-finite loss.

    Args:
        train_loss, val_loss: scalar losses (any floating dtype).
    """
    device = val_loss.device
    return torch.stack(
        [(~torch.isfinite(loss.detach())).reshape(()).to(device, torch.float32) for loss in (train_loss, val_loss)]
    )
