"""What manual optimization makes a module re-implement for its weights: accumulation, clipping, schedulers.

Lightning refuses ``Trainer(gradient_clip_val=..., accumulate_grad_batches=...)`` and steps no schedulers under
manual optimization; :class:`~lightning_hypergrad.BilevelLightningModule` calls these helpers to offer the same
behaviour.
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.types import LRSchedulerConfig
from torch import Tensor
from torch.optim import Optimizer


def completes_accumulation(trainer: Trainer, batch_idx: int, accumulate_grad_batches: int) -> bool:
    """True on the batch that closes an accumulation window (or the epoch's last batch)."""
    if (batch_idx + 1) % accumulate_grad_batches == 0:
        return True
    batches = trainer.num_training_batches
    return isinstance(batches, int) and batch_idx + 1 == batches


def gradients_are_finite(module: LightningModule, optimizer: Optimizer, loss: Tensor) -> bool:
    """Whether the weight step may be taken; if a weight's gradient is NaN/inf, warn, count and log the skip.

    A NaN or inf training loss (a bad batch, an overflow) gives such gradients; stepping on them would make
    every weight NaN. The step is skipped as ``GradScaler`` skips one, and counted in the module's
    ``skipped_weight_steps`` (logged as ``train/skipped_weight_steps``). Under a loss scaler (``16-mixed``) the
    scaler makes this decision itself and also lowers its scale, so nothing is checked here. Under DDP the
    gradients are already averaged, so every process decides alike.
    """
    scaler = getattr(module.trainer.precision_plugin, "scaler", None)
    if scaler is not None and scaler.is_enabled():
        return True
    gradients = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not gradients or bool(torch.stack([gradient.isfinite().all() for gradient in gradients]).all()):
        return True
    module.skipped_weight_steps += 1
    rank_zero_warn(
        f"Skipped the weight step after batch loss {float(loss.detach())} at step {module.trainer.global_step}: "
        f"the weights' gradients are not finite ({module.skipped_weight_steps} skipped so far); weights are "
        "unchanged. Check the batches for NaN/inf and the loss for log(0) or overflow; lower the learning rate or "
        "set gradient_clip_val if it recurs.",
        category=RuntimeWarning,
    )
    module.log("train/skipped_weight_steps", float(module.skipped_weight_steps))
    return False


def clip_weight_gradients(
    module: LightningModule, optimizer: Optimizer, clip_value: float | None, algorithm: str
) -> None:
    """Clip the weights' gradients with Lightning's own clipping (after the precision plugin unscaled them)."""
    if clip_value is not None:
        module.clip_gradients(optimizer, gradient_clip_val=clip_value, gradient_clip_algorithm=algorithm)


def step_schedulers(trainer: Trainer, interval: str) -> None:
    """Step the weights' schedulers whose ``interval`` is this one, honouring ``frequency`` and ``monitor``."""
    configs: list[LRSchedulerConfig] = trainer.lr_scheduler_configs
    counter = trainer.global_step if interval == "step" else trainer.current_epoch + 1
    for config in configs:
        if config.interval != interval or counter % config.frequency != 0:
            continue
        if not config.reduce_on_plateau:
            config.scheduler.step()
            continue
        monitored = trainer.callback_metrics.get(config.monitor or "")
        if monitored is None:
            if config.strict:
                raise KeyError(
                    f"ReduceLROnPlateau monitors {config.monitor!r}, which was not logged; logged metrics: "
                    f"{sorted(trainer.callback_metrics)}."
                )
            continue
        config.scheduler.step(torch.as_tensor(monitored).item())
