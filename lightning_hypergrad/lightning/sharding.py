"""Hypersteps on sharded modules (FSDP2: ``torch.distributed.fsdp.fully_shard``, Lightning's ModelParallelStrategy).

A Hessian-vector product differentiates the training gradient's graph a second time, so the unsharded parameters
that graph was built from must stay alive through every product. FSDP2 frees them after each forward and backward
and reduce-scatters gradients in its post-backward hooks; :func:`unsharded` turns both off for the hyperstep, and
back on afterwards. While FSDP2 modules are unsharded, their attributes hold plain (full) ``nn.Parameter`` s, not
the sharded ``DTensor`` s that the optimizers hold: everything a hyperstep computes is in full tensors, and
:func:`like_parameter` lays a full hypergradient out as its (sharded) hyperparameter is laid out outside.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor, distribute_tensor

from lightning_hypergrad.lightning import adapter

SUPPORTED_STRATEGIES = (
    "single device (auto), the DDP family (ddp, ddp_spawn, ddp_find_unused_parameters_true) and "
    "ModelParallelStrategy (FSDP2: fully_shard in configure_model)"
)


def fsdp_modules(module: nn.Module) -> list[nn.Module]:
    """The submodules of ``module`` (itself included) that ``fully_shard`` turned into FSDP2 modules."""
    return [submodule for submodule in module.modules() if isinstance(submodule, FSDPModule)]


@contextmanager
def unsharded(module: nn.Module) -> Iterator[None]:
    """Every FSDP2 module of ``module`` unsharded, not resharding after forward or backward and not reducing
    gradients, for the duration; on exit (exception or not) each one's settings are restored and it is resharded.

    Inside, ``module.named_parameters()`` gives the full parameters, which the hyperstep's forward passes use and its
    products differentiate with respect to. Costs one all-gather of the weights on entry (what a forward pass under
    FSDP2 costs) and holds the full weights until exit. Without FSDP2 modules: nothing.
    """
    modules = fsdp_modules(module)
    settings = [adapter.fsdp_settings(submodule) for submodule in modules]
    try:
        for submodule in modules:
            submodule.set_reshard_after_forward(False, recurse=False)
            submodule.set_reshard_after_backward(False, recurse=False)
            submodule.set_requires_gradient_sync(False, recurse=False)
        for submodule in modules:
            submodule.unshard()
        yield
    finally:
        for submodule, setting in zip(modules, settings):
            adapter.restore_fsdp_settings(submodule, setting)
        for submodule in modules:
            submodule.reshard()


def full(tensor: Tensor) -> Tensor:
    """The whole of a sharded ``DTensor`` (an all-gather, so every process must call it); any other tensor as is."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def like_parameter(value: Tensor, parameter: Tensor) -> Tensor:
    """``value`` (full, the same on every process) in ``parameter``'s dtype and layout: a ``DTensor`` with the same
    mesh and placements, each process keeping its own shard (no communication), when ``parameter`` is one."""
    value = value.detach().to(device=parameter.device, dtype=parameter.dtype)
    if isinstance(parameter, DTensor):
        return distribute_tensor(value, parameter.device_mesh, parameter.placements, src_data_rank=None)
    return value


def full_state(state: Any) -> Any:
    """An optimizer ``state_dict`` with every ``DTensor`` made whole (:func:`full`): a checkpoint that rank 0 alone
    writes, as ModelParallelStrategy writes the callbacks' state, then holds every process's shard."""
    if isinstance(state, Tensor):
        return full(state)
    if isinstance(state, dict):
        return {key: full_state(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(full_state(value) for value in state)
    return state


def shard_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """After loading :func:`full_state`'s state: each whole tensor of a sharded parameter's state (its moments)
    laid out as that parameter is (:func:`like_parameter`)."""
    for parameter, values in optimizer.state.items():
        if not isinstance(parameter, DTensor):
            continue
        for key, value in values.items():
            if isinstance(value, Tensor) and not isinstance(value, DTensor) and value.shape == parameter.shape:
                values[key] = like_parameter(value, parameter)


def refuse_unsupported_strategy(strategy: object) -> None:
    """Refuse the strategies a hyperstep cannot run exactly under: FSDP1 (``FSDPStrategy``) and DeepSpeed."""
    name = type(strategy).__name__
    if "DeepSpeed" in name or ("FSDP" in name and "ModelParallel" not in name):
        reason = (
            "FSDP1 flattens each wrapped module's parameters into one FlatParameter, so the weights the hyperstep "
            "differentiates with respect to are not the module's parameters"
            if "FSDP" in name
            else "DeepSpeed's ZeRO partitions parameters outside torch's autograd"
        )
        raise ValueError(
            f"HypergradientCallback does not support the {name} strategy: {reason}. Supported strategies: "
            f"{SUPPORTED_STRATEGIES}; for sharded weights use ModelParallelStrategy with fully_shard."
        )
