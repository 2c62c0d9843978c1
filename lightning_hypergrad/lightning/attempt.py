"""One attempt at a hyperstep's hypergradient, at one loss scale: losses, checks, the solve."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning.pytorch import Trainer

from lightning_hypergrad.engine.hypergradient import hypergradient_with_solve
from lightning_hypergrad.lightning import contract, decision, distributed, update
from lightning_hypergrad.lightning.decision import HyperstepResult
from lightning_hypergrad.lightning.graph_reuse import WeightStepGraph
from lightning_hypergrad.lightning.losses import evaluate_losses, hyperstep_context

if TYPE_CHECKING:
    from lightning_hypergrad.lightning.callback import HypergradientCallback
    from lightning_hypergrad.lightning.module import BilevelLightningModule


def attempt_hypergradient(
    callback: HypergradientCallback,
    trainer: Trainer,
    module: BilevelLightningModule,
    train_batch: Any,
    validation_batch: Any,
    graph: WeightStepGraph | None,
    scale: float,
) -> HyperstepResult:
    """The hyperstep's hypergradient computed once, at loss scale ``scale`` (what
    :class:`~lightning_hypergrad.lightning.loss_scale.HyperstepLossScale` retries): the two losses (with ``graph``,
    the weight step's training loss and gradient instead of a new one), the checks of
    :mod:`~lightning_hypergrad.lightning.decision`, the warm start, the solve and the mixed term. Leaves weights, λ,
    modes and buffers as they were."""
    with hyperstep_context(module):
        named = module.named_hyperparameters()  # inside: the full parameters of a sharded module
        train_loss, validation_loss = evaluate_losses(
            module, trainer.precision_plugin, train_batch, validation_batch, callback.validation_mode, graph
        )
        problem = decision.loss_problem(module, train_loss, validation_loss, callback.alpha_from_learning_rate)
        validation_value = float(validation_loss.detach())
        if problem is not None:
            return decision.unsolved_result(module.weight_parameters(), named, validation_value, problem)
        if not callback.influence_checked:
            callback.influence_checked = contract.warn_about_idle_hyperparameters(module, train_loss, named)
        weights = module.named_implicit_parameters()
        initial = callback.solver_memory.start(callback.solver, weights, callback.hyperstep_step, callback.warm_start)
        solver = update.solver_for_step(callback.solver, callback.alpha_from_learning_rate, trainer)
        losses = [train_loss, validation_loss]
        del train_loss, validation_loss  # handed over: the solve frees what g's graph does not need of theirs
        result = hypergradient_with_solve(
            losses.pop(0),
            losses.pop(0),
            [weight for _, weight in weights],
            [parameter for _, parameter in named],
            solver,
            damping=callback.damping,
            loss_scale=scale,
            average=distributed.product_averaging(callback.sync),
            initial=initial,
            train_gradient=None if graph is None else graph.for_weights([weight for _, weight in weights]),
        )
    return HyperstepResult.of(result, solver, validation_value, callback.alpha_from_learning_rate)
