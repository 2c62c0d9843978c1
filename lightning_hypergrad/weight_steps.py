"""What manual optimization makes a module re-implement for its weights: accumulation, clipping, schedulers.

Lightning refuses ``Trainer(gradient_clip_val=..., accumulate_grad_batches=...)`` and steps no schedulers under
manual optimization; :class:`~lightning_hypergrad.BilevelLightningModule` calls these helpers to offer the same
behaviour.
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities.types import LRSchedulerConfig
from torch.optim import Optimizer


def completes_accumulation(trainer: Trainer, batch_idx: int, accumulate_grad_batches: int) -> bool:
    """True on the batch that closes an accumulation window (or the epoch's last batch)."""
    if (batch_idx + 1) % accumulate_grad_batches == 0:
        return True
    batches = trainer.num_training_batches
    return isinstance(batches, int) and batch_idx + 1 == batches


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
