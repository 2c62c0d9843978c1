"""What manual optimization makes a module re-implement for its weights: accumulation, clipping, schedulers.

Lightning refuses ``Trainer(gradient_clip_val=..., accumulate_grad_batches=...)`` and steps no schedulers under
manual optimization; :class:`~lightning_hypergrad.BilevelLightningModule` calls these helpers to offer the same
behaviour.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.types import LRSchedulerConfig
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

from lightning_hypergrad.engine import vectors
from lightning_hypergrad.lightning import adapter, sharding

DEFAULT_PLATEAU_MONITOR = "validation_loss"
# Per module: id(ReduceLROnPlateau) -> (monitor or None, strict), read from configure_optimizers' output, since
# Lightning drops "monitor" and "strict" under manual optimization.
_plateau_settings: weakref.WeakKeyDictionary[LightningModule, dict[int, tuple[str | None, bool]]] = (
    weakref.WeakKeyDictionary()
)


def completes_accumulation(trainer: Trainer, batch_idx: int, accumulate_grad_batches: int) -> bool:
    """True on the batch that closes an accumulation window, or the epoch's last batch (also for an
    ``IterableDataset`` of unknown length: Lightning's loop has already looked one batch ahead)."""
    if (batch_idx + 1) % accumulate_grad_batches == 0:
        return True
    batches = trainer.num_training_batches
    if isinstance(batches, int) and batch_idx + 1 == batches:
        return True
    return adapter.is_last_batch(trainer)


def recomputing_batch_norm(trainer: Trainer) -> bool:
    """Whether this epoch only recomputes BatchNorm statistics (StochasticWeightAveraging's extra last epoch):
    forward passes, no weight step."""
    return adapter.skipping_backward(trainer)


def backward_weights(module: LightningModule, loss: Tensor, weights: list[Any], create_graph: bool = False) -> None:
    """``manual_backward`` into the weights only; explains the one failure users meet: reentrant checkpointing.

    ``create_graph`` keeps the gradients' graph (for a hyperstep that reuses it, single process only).

    Under FSDP2 the graph's leaves are the unsharded parameters, not the sharded ones ``weights`` holds, and FSDP2's
    own hooks reduce-scatter their gradients: backward runs into every parameter and the hyperparameters' sharded
    gradients are dropped afterwards (they are the hyper optimizer's, which overwrites them).
    """
    sharded = bool(sharding.fsdp_modules(module))
    try:
        module.manual_backward(loss, inputs=None if sharded else weights, create_graph=create_graph)
        if sharded:
            for parameter in module.hyperparameters():
                parameter.grad = None
    except RuntimeError as error:
        if "use_reentrant" not in str(error):
            raise
        raise RuntimeError(
            f"{type(module).__name__} uses torch.utils.checkpoint with use_reentrant=True, which cannot be "
            "differentiated with respect to chosen inputs or twice, as the weights' backward and every hyperstep's "
            "Hessian-vector products need. Pass use_reentrant=False to checkpoint() (same memory saving)."
        ) from error


def remembering_plateau_monitors(configure_optimizers: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a ``configure_optimizers`` so that the ``monitor``/``strict`` given for each ReduceLROnPlateau is kept."""

    @functools.wraps(configure_optimizers)
    def configure(module: LightningModule, *args: Any, **kwargs: Any) -> Any:
        configuration = configure_optimizers(module, *args, **kwargs)
        _plateau_settings[module] = plateau_settings(configuration)
        return configuration

    return configure


def plateau_settings(configuration: Any) -> dict[int, tuple[str | None, bool]]:
    """``id(scheduler) -> (monitor, strict)`` for every scheduler in any form ``configure_optimizers`` may return."""
    entries: list[tuple[Any, str | None]] = []  # (scheduler or its dict, the optimizer dict's monitor)
    if isinstance(configuration, dict):
        configuration = [configuration]
    if isinstance(configuration, (list, tuple)) and len(configuration) == 2 and isinstance(configuration[0], list):
        schedulers = configuration[1]
        entries = [(scheduler, None) for scheduler in (schedulers if isinstance(schedulers, list) else [schedulers])]
    elif isinstance(configuration, (list, tuple)):
        entries = [
            (entry["lr_scheduler"], entry.get("monitor"))
            for entry in configuration
            if isinstance(entry, dict) and "lr_scheduler" in entry
        ]
    settings = {}
    for scheduler, monitor in entries:
        if isinstance(scheduler, dict):
            monitor = scheduler.get("monitor", monitor)
            settings[id(scheduler.get("scheduler"))] = (monitor, bool(scheduler.get("strict", True)))
        else:
            settings[id(scheduler)] = (monitor, True)
    return settings


def gradients_are_finite(module: LightningModule, optimizer: Optimizer, loss: Tensor) -> bool:
    """Whether the weight step may be taken; if a weight's gradient is NaN/inf, warn, count and log the skip.

    A NaN or inf training loss (a bad batch, an overflow) gives such gradients; stepping on them would make
    every weight NaN. The step is skipped as ``GradScaler`` skips one, and counted in the module's
    ``skipped_weight_steps`` (logged as ``train/skipped_weight_steps``). Under a loss scaler (``16-mixed``) the
    scaler makes this decision itself and also lowers its scale, so nothing is checked here. Under DDP the
    gradients are already averaged, so every process decides alike.

    More skips in a row than the module's ``max_consecutive_skipped_weight_steps`` raise a ``RuntimeError``
    (:func:`check_skips_end`): the fault is not passing, and skipped steps leave ``global_step`` where it is.
    """
    scaler = getattr(module.trainer.precision_plugin, "scaler", None)
    gradients = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if (scaler is not None and scaler.is_enabled()) or not gradients:
        finite = True
    else:
        finite = vectors.all_finite(gradients)
    module.consecutive_skipped_weight_steps = 0 if finite else module.consecutive_skipped_weight_steps + 1
    if finite:
        return True
    module.skipped_weight_steps += 1
    check_skips_end(module, loss)
    rank_zero_warn(
        f"Skipped the weight step after batch loss {float(loss.detach())} at step {module.trainer.global_step}: "
        f"the weights' gradients are not finite ({module.skipped_weight_steps} skipped so far); weights are "
        "unchanged. Check the batches for NaN/inf and the loss for log(0) or overflow; lower the learning rate or "
        "set gradient_clip_val if it recurs.",
        category=RuntimeWarning,
    )
    module.log("train/skipped_weight_steps", float(module.skipped_weight_steps))
    return False


def check_skips_end(module: LightningModule, loss: Tensor) -> None:
    """Raise once the module's run of skipped weight steps exceeds ``max_consecutive_skipped_weight_steps``.

    Args:
        module: the BilevelLightningModule whose weight step was just skipped.
        loss: that step's training loss, quoted in the error.
    """
    limit = module.max_consecutive_skipped_weight_steps
    skipped = module.consecutive_skipped_weight_steps
    if skipped <= limit:
        return
    raise RuntimeError(
        f"{type(module).__name__}: {skipped} weight steps in a row were skipped because the weights' gradients "
        f"were not finite (last batch loss {float(loss.detach())}, at step {module.trainer.global_step}). The "
        "training loss stays NaN/inf, and skipped steps do not advance global_step, so the fit would not end. "
        "Check the data and training_loss for NaN/inf (log of 0, division by 0, an overflowing transform of a "
        "hyperparameter) and lower the learning rate; if bad batches come in longer runs, raise "
        f"max_consecutive_skipped_weight_steps={limit}."
    )


def clip_weight_gradients(
    module: LightningModule, optimizer: Optimizer, clip_value: float | None, algorithm: str
) -> None:
    """Clip the weights' gradients with Lightning's own clipping (after the precision plugin unscaled them)."""
    if clip_value is not None:
        module.clip_gradients(optimizer, gradient_clip_val=clip_value, gradient_clip_algorithm=algorithm)


def step_schedulers(trainer: Trainer, interval: str) -> None:
    """Step the weights' schedulers whose ``interval`` is this one, honouring ``frequency``.

    A ``ReduceLROnPlateau`` steps with its monitored metric: the ``monitor`` given with it in
    ``configure_optimizers`` (in the scheduler dict or the optimizer dict), else the scheduler's own ``monitor``
    attribute (LightningCLI's ReduceLROnPlateau), else ``"validation_loss"``. A monitor that was not logged
    raises, unless ``"strict": False`` was given (then the step is skipped).
    """
    configs: list[LRSchedulerConfig] = trainer.lr_scheduler_configs
    counter = trainer.global_step if interval == "step" else trainer.current_epoch + 1
    settings = _plateau_settings.get(trainer.lightning_module, {})
    for config in configs:
        if config.interval != interval or counter % config.frequency != 0:
            continue
        if not isinstance(config.scheduler, ReduceLROnPlateau):
            config.scheduler.step()
            continue
        monitor, strict = settings.get(id(config.scheduler), (None, True))
        monitor = monitor or getattr(config.scheduler, "monitor", None) or DEFAULT_PLATEAU_MONITOR
        monitored = trainer.callback_metrics.get(monitor)
        if monitored is None:
            if strict:
                raise KeyError(
                    f"ReduceLROnPlateau monitors {monitor!r}, which was not logged; logged metrics: "
                    f"{sorted(trainer.callback_metrics)}. Name another with 'monitor' in its lr_scheduler dict."
                )
            continue
        config.scheduler.step(torch.as_tensor(monitored).item())
