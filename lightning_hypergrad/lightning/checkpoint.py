"""What a checkpoint holds of :class:`~lightning_hypergrad.HypergradientCallback`, and how it is restored.

The keys are stable: ``taken``, ``skipped``, ``last_step_seen``, the hyper batches' positions
(``hyper_batches_drawn``, ``train_batches_drawn``, and ``batches_loaded_epoch``, the epoch their loaders were loaded
in under ``reload_dataloaders_every_n_epochs``), ``warm_start_solution``, ``history``, ``hyper_optimizer``,
``hyper_lr_scheduler`` and ``solver``. A key missing from an older checkpoint takes its default, and history entries
in the older flat form are converted. The optimizers' state is applied at ``on_fit_start``, once they exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning_hypergrad.lightning import records, update

if TYPE_CHECKING:
    from lightning_hypergrad.lightning.callback import HypergradientCallback
    from lightning_hypergrad.lightning.module import BilevelLightningModule


def callback_state(callback: HypergradientCallback) -> dict[str, Any]:
    """The callback's ``state_dict``."""
    optimizer, scheduler = callback.hyper_optimizer, callback.hyper_lr_scheduler
    return {
        "taken": callback.taken,
        "skipped": callback.skipped,
        "last_step_seen": callback.last_step_seen,
        **callback.batches.state_dict(),
        "warm_start_solution": callback.warm_start_solution,
        "history": callback.history,
        "hyper_optimizer": optimizer.state_dict() if optimizer is not None else None,
        "hyper_lr_scheduler": scheduler.state_dict() if scheduler is not None else None,
        "solver": callback.solver.state_dict(),
    }


def load_callback_state(callback: HypergradientCallback, state: dict[str, Any]) -> None:
    """Restore what can be restored now; keep the rest for :func:`restore_pending_state`."""
    callback.taken = state.get("taken", 0)
    callback.skipped = state.get("skipped", 0)
    callback.last_step_seen = state.get("last_step_seen", -1)
    callback.warm_start_solution = state.get("warm_start_solution")
    callback.history = [records.record_from_logged(entry) for entry in state.get("history", [])]
    if state.get("solver") is not None:
        callback.solver.load_state_dict(state["solver"])
    callback.batches.load_state_dict(state)
    callback.pending_state = dict(state)


def restore_pending_state(callback: HypergradientCallback, module: BilevelLightningModule) -> None:
    """At ``on_fit_start``: the hyper optimizer's and scheduler's state, and the warm start on the weights' devices."""
    state = callback.pending_state
    if state is None:
        return
    update.load_optimizer_state(callback.hyper_optimizer, callback.hyper_lr_scheduler, state)
    if callback.warm_start_solution is not None:
        weights = module.weight_parameters()
        callback.warm_start_solution = [part.to(w.device) for part, w in zip(callback.warm_start_solution, weights)]
    callback.pending_state = None
