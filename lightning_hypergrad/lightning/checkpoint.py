"""What a checkpoint holds of :class:`~lightning_hypergrad.HypergradientCallback`, and how it is restored.

The keys are stable: ``taken``, ``skipped``, ``last_step_seen``, the hyper batches' positions
(``hyper_batches_drawn``, ``train_batches_drawn``, and ``batches_loaded_epoch``, the epoch their loaders were loaded
in under ``reload_dataloaders_every_n_epochs``), ``warm_start_solution`` (weight name → tensor; a positional
list in older checkpoints), ``solver_weights`` (the names and shapes of the weights the warm start and the solver's
state belong to), ``history``, ``hyper_optimizer``, ``hyper_lr_scheduler``, ``solver`` and ``loss_scale`` (the
hyperstep's own loss scale under ``16-mixed``) and ``random_state`` (the generators', set again as the resumed fit
starts training: :mod:`~lightning_hypergrad.lightning.random_state`). The hyper optimizer's state of
sharded (FSDP2) hyperparameters is saved whole, the same on every process, and sharded again when loaded. A key missing from an older checkpoint takes its default, and history entries in
the older flat form are converted. The optimizers'
state is applied at ``on_fit_start``, once they exist; the warm start is matched to the weights, and moved to their
devices, at the next solve (:class:`~lightning_hypergrad.lightning.solver_memory.SolverMemory`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning_hypergrad.lightning import random_state, records, sharding, update

if TYPE_CHECKING:
    from lightning_hypergrad.lightning.callback import HypergradientCallback


def callback_state(callback: HypergradientCallback) -> dict[str, Any]:
    """The callback's ``state_dict``."""
    optimizer, scheduler = callback.hyper_optimizer, callback.hyper_lr_scheduler
    return {
        "taken": callback.taken,
        "skipped": callback.skipped,
        "last_step_seen": callback.last_step_seen,
        **callback.batches.state_dict(),
        **callback.solver_memory.state_dict(),
        "history": callback.history,
        "hyper_optimizer": sharding.full_state(optimizer.state_dict()) if optimizer is not None else None,
        "hyper_lr_scheduler": scheduler.state_dict() if scheduler is not None else None,
        "solver": callback.solver.state_dict(),
        "loss_scale": callback.loss_scale.state_dict(),
        "random_state": random_state.capture(),
    }


def load_callback_state(callback: HypergradientCallback, state: dict[str, Any]) -> None:
    """Restore what can be restored now; keep the rest for :func:`restore_pending_state`."""
    callback.taken = state.get("taken", 0)
    callback.skipped = state.get("skipped", 0)
    callback.last_step_seen = state.get("last_step_seen", -1)
    callback.solver_memory.load_state_dict(state)
    callback.history = [records.record_from_logged(entry) for entry in state.get("history", [])]
    if state.get("solver") is not None:
        callback.solver.load_state_dict(state["solver"])
    callback.loss_scale.load_state_dict(state.get("loss_scale", {}))
    callback.batches.load_state_dict(state)
    callback.pending_state = dict(state)
    callback.pending_random_state = state.get("random_state")
    if callback.hyper_optimizer is not None:  # ModelParallelStrategy restores callbacks after on_fit_start
        restore_pending_state(callback)


def restore_pending_state(callback: HypergradientCallback) -> None:
    """At ``on_fit_start``: the hyper optimizer's and scheduler's state (the warm start waits for the next solve,
    which matches it to the weights trainable then)."""
    state = callback.pending_state
    if state is None:
        return
    update.load_optimizer_state(callback.hyper_optimizer, callback.hyper_lr_scheduler, state)
    callback.pending_state = None


def restore_random_state(callback: HypergradientCallback) -> None:
    """At ``on_train_start`` of a resumed fit: the generators as the checkpoint left them (once)."""
    random_state.restore(callback.pending_random_state)
    callback.pending_random_state = None
