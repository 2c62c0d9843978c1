"""Hyper learning-rate schedules sized to the run: how many hypersteps a fit takes, and a cosine decay over them."""

from __future__ import annotations

import torch

from lightning_hypergrad.arguments import check_count


def planned_hypersteps(weight_steps: int, warmup_steps: int, every_n_steps: int) -> int:
    """The hypersteps a run of ``weight_steps`` weight steps takes with these callback settings.

    :class:`~lightning_hypergrad.HypergradientCallback` steps after weight step ``s`` when ``s > warmup_steps``
    and ``(s − warmup_steps)`` is a multiple of ``every_n_steps``, so the count is
    ``max(0, ⌊(weight_steps − warmup_steps) / every_n_steps⌋)``. With Lightning, ``weight_steps`` is
    ``trainer.estimated_stepping_batches`` (for digits: 17 batches × 40 epochs = 680).
    """
    check_count("planned_hypersteps", "weight_steps", weight_steps, minimum=0)
    check_count("planned_hypersteps", "warmup_steps", warmup_steps, minimum=0)
    check_count("planned_hypersteps", "every_n_steps", every_n_steps, minimum=1)
    return max(0, (weight_steps - warmup_steps) // every_n_steps)


def cosine_hyper_schedule(
    optimizer: torch.optim.Optimizer, weight_steps: int, warmup_steps: int, every_n_steps: int
) -> torch.optim.lr_scheduler.CosineAnnealingLR:
    """Cosine decay of the hyper learning rate to 0 at the run's last hyperstep.

    Large early steps move λ quickly off its starting value; the vanishing late steps let it settle instead of
    drifting on noisy hypergradients while the weights finish training. In YAML, pass
    ``hyper_lr_scheduler: {class_path: torch.optim.lr_scheduler.CosineAnnealingLR, init_args: {T_max: N}}``
    with ``N = planned_hypersteps(...)``.
    """
    total = planned_hypersteps(weight_steps, warmup_steps, every_n_steps)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total, 1))
