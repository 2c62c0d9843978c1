"""The Lightning callback that takes hypersteps between weight steps: hook wiring around the units that do the work.

See ``docs/architecture.md`` for the units (contract, hyper batches, loss evaluation, distributed helpers, update,
metrics) and the data flow of one hyperstep.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_hypergrad.arguments import check_choice, check_count, check_non_negative, check_positive
from lightning_hypergrad.engine import vectors
from lightning_hypergrad.engine.hypergradient import hypergradient_with_solve
from lightning_hypergrad.lightning import averaging, checkpoint, contract, decision, distributed, records, update
from lightning_hypergrad.lightning.batches import HyperBatches
from lightning_hypergrad.lightning.curvature import warn_once_if_mostly_negative_curvature
from lightning_hypergrad.lightning.decision import HyperstepResult
from lightning_hypergrad.lightning.loss_scale import HyperstepLossScale, checked_loss_scale
from lightning_hypergrad.lightning.losses import evaluate_losses, hyperstep_context
from lightning_hypergrad.lightning.module import BilevelLightningModule
from lightning_hypergrad.lightning.solver_memory import SolverMemory
from lightning_hypergrad.solvers import IHVPSolver

HISTORY_LIMIT = 1000


class HypergradientCallback(Callback):
    r"""Tunes a BilevelLightningModule's hyperparameters by a hypergradient step every few weight steps.

    Every ``every_n_steps`` weight steps (after ``warmup_steps``) the hyperparameters step along their
    hypergradient (:func:`lightning_hypergrad.hypergradient`), on a batch from ``hyper_dataloader()`` (else
    ``val_dataloader()``) and the current (or a fresh) training batch; see ``docs/architecture.md``. It never
    writes the Trainer's state: ``global_step`` counts weight steps only.

    Args:
        solver: the inverse-Hessian-vector-product solver; ``None`` means ``Amortized()`` (2 products, carried).
        hyper_optimizer: a callable ``params -> Optimizer`` (LightningCLI ``class_path``/``init_args`` in YAML);
            ``None`` means ``Adam(lr=1e-2)``.
        hyper_lr_scheduler: optional callable ``optimizer -> LRScheduler``, stepped once per hyperstep taken.
        every_n_steps: weight steps between hypersteps, ``>= 1``.
        warmup_steps: weight steps before the first hyperstep, ``>= 0``; the first hyperstep comes at
            ``warmup_steps + every_n_steps``.
        train_batch: ``"current"`` reuses the batch the weights just trained on; ``"fresh"`` draws another from
            a cycling iterator over the training dataloader (an unbiased sample, at the cost of data loading).
        validation_mode: ``"eval"`` computes the validation loss with dropout off and BatchNorm using running
            statistics (as validation does); ``"train"`` keeps training behaviour. The training loss is always
            taken in training mode. BatchNorm running statistics are restored after every hyperstep.
        max_hypergradient_norm: rescale the hypergradient (all hyperparameters together) to at most this 2-norm.
        damping: μ ``>= 0``: solve with ``H + μI`` (see :func:`~lightning_hypergrad.hypergradient`).
        warm_start: start each solve from the previous hyperstep's solution, matched to the weights by name; a
            solve after the trainable weights changed (a backbone unfrozen) starts cold
            (:class:`~lightning_hypergrad.lightning.solver_memory.SolverMemory`).
        alpha_from_learning_rate: give the solver's ``alpha`` the weight optimizer's current learning rate on
            every hyperstep (Neumann's series then mirrors unrolled gradient descent with that step).
        sync: with several processes (DDP), ``"hvp"`` averages the validation gradient and every Hessian-vector
            product (K+1 weight-sized all-reduces for K products, 31 for ``Neumann()``), so all solve the same
            system: as one process on the concatenated batches, unless BatchNorm runs in training mode.
            ``"hypergradient"`` solves with each process's local batch and averages only the final
            hypergradients (one all-reduce of hyperparameter size; biased, since a mean of inverses is not the
            inverse of the mean). Either way every process applies the same step.
        check_sync: after every hyperstep verify (one small all-reduce) that all processes hold identical
            hyperparameters, raising if not; a debugging aid.
        validation_dataloader: with several validation dataloaders (list or dict), the index or key of the one
            hypersteps draw from (without a ``hyper_dataloader()``); the first by default.
        loss_scale: under ``16-mixed``, the hyperstep's own dynamic loss scale (backs off and recomputes on
            overflow); ``None`` means ``HyperstepLossScale()``. Unused without a ``GradScaler``.

    Skipped hypersteps: a non-finite loss, a failed solve, a non-finite hypergradient or a step that leaves λ
    non-finite is never applied (λ is restored; ``docs/reliability.md``): counted (``hyper/skipped``) and warned,
    with cause and remedy, as a :class:`HypergradientWarning`. Each hyperstep is logged (names in
    :meth:`HyperstepRecord.logged <lightning_hypergrad.lightning.records.HyperstepRecord.logged>`) and kept in ``history`` as a structured entry; past ``HISTORY_LIMIT`` entries every other older one is dropped,
    so memory and checkpoints stay bounded while the history still spans the whole run.
    """

    def __init__(
        self,
        solver: IHVPSolver | None = None,
        hyper_optimizer: OptimizerCallable | None = None,
        hyper_lr_scheduler: LRSchedulerCallable | None = None,
        every_n_steps: int = 10,
        warmup_steps: int = 0,
        train_batch: Literal["current", "fresh"] = "current",
        validation_mode: Literal["eval", "train"] = "eval",
        max_hypergradient_norm: float | None = None,
        damping: float = 0.0,
        warm_start: bool = False,
        alpha_from_learning_rate: bool = False,
        sync: Literal["hvp", "hypergradient"] = "hvp",
        check_sync: bool = False,
        validation_dataloader: int | str = 0,
        loss_scale: HyperstepLossScale | None = None,
    ) -> None:
        super().__init__()
        owner = "HypergradientCallback"
        self.solver = update.checked_solver(solver, alpha_from_learning_rate)
        self.hyper_optimizer_factory = update.checked_factory("hyper_optimizer", hyper_optimizer)
        self.hyper_lr_scheduler_factory = update.checked_factory("hyper_lr_scheduler", hyper_lr_scheduler)
        self.every_n_steps = check_count(owner, "every_n_steps", every_n_steps, minimum=1)
        self.warmup_steps = check_count(owner, "warmup_steps", warmup_steps, minimum=0)
        self.train_batch = check_choice(owner, "train_batch", train_batch, ("current", "fresh"))
        self.validation_mode = check_choice(owner, "validation_mode", validation_mode, ("eval", "train"))
        clip = max_hypergradient_norm
        self.max_hypergradient_norm = None if clip is None else check_positive(owner, "max_hypergradient_norm", clip)
        self.damping = check_non_negative("damping", damping, owner)
        self.sync = check_choice(owner, "sync", sync, ("hvp", "hypergradient"))
        self.warm_start, self.check_sync = bool(warm_start), bool(check_sync)
        self.alpha_from_learning_rate = bool(alpha_from_learning_rate)
        self.loss_scale = checked_loss_scale(loss_scale)

        self.batches = HyperBatches(self.train_batch == "fresh", validation_dataloader)
        self.hyper_optimizer: torch.optim.Optimizer | None = None
        self.hyper_lr_scheduler: Any = None
        self.taken = self.skipped = 0
        self.last_step_seen = -1
        self.solver_memory = SolverMemory()  # the warm start and the weights the solver's state belongs to
        self.last_applied_hypergradients: list[Tensor] | None = None
        self.history: list[dict[str, Any]] = []  # bounded: see the class docstring
        self.pending_state: dict[str, Any] | None = None  # from a checkpoint, until the optimizers exist
        self.pending_random_state: dict[str, Any] | None = None  # from a checkpoint, until training starts
        self._influence_checked = self._zero_warned = self._curvature_warned = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        contract.check_bilevel_module(pl_module)
        distributed.check_strategy(trainer.strategy)
        update.check_solver_size(self.solver, contract.bilevel(pl_module).weight_parameters())

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        named = contract.check_bilevel_module(pl_module, trainer.optimizers)
        hyperparameters = [parameter for _, parameter in named]
        distributed.broadcast_(hyperparameters)  # DDP does not broadcast the parameters it ignores
        self.hyper_optimizer, self.hyper_lr_scheduler = update.build_hyper_optimizer(
            self.hyper_optimizer_factory, self.hyper_lr_scheduler_factory, hyperparameters
        )
        checkpoint.restore_pending_state(self)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.batches.start(trainer, pl_module)
        checkpoint.restore_random_state(self)
        averaging.keep_hyperparameters_out_of_averages(trainer, pl_module)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.batches.stop()  # the streams' worker processes end with the fit, as the fit loop's do

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step == self.last_step_seen:  # an accumulation batch: no weight step was taken
            return
        self.last_step_seen = step
        if step <= self.warmup_steps or (step - self.warmup_steps) % self.every_n_steps != 0:
            return
        self.hyperstep(trainer, contract.bilevel(pl_module), batch)

    def hyperstep(self, trainer: Trainer, module: BilevelLightningModule, batch: Any) -> bool:
        """Compute and apply one hyperstep; returns whether it was applied (False when skipped)."""
        train_batch = self.batches.next_train(trainer) if self.train_batch == "fresh" else batch
        learning_rate = records.learning_rate(self.hyper_optimizer)  # before the scheduler steps
        result = self.compute_hypergradient(trainer, module, train_batch, self.batches.next_hyper(trainer))
        hypergradients, failed = distributed.agree_on_hypergradients(
            result.hypergradients, not result.solve.converged, self.sync
        )
        norm = vectors.norm(hypergradients)
        named = module.named_hyperparameters()
        clipped = update.clip_to_norm(hypergradients, norm, self.max_hypergradient_norm)
        take = functools.partial(update.take_step, self, module, clipped, named, result.validation_loss)
        reason = decision.decide(result, norm, failed, take)
        if reason is None:
            averaging.keep_hyperparameters_out_of_averages(trainer, module)
            if self.warm_start:
                self.solver_memory.keep(result.solve.solution)
            self.taken += 1
            self._zero_warned = self._zero_warned or decision.warn_once_if_zero(clipped, module, result, self.history)
        else:
            self.skipped += 1
            self.solver_memory.drop()
            rank_zero_warn(decision.skip_warning(trainer.global_step, reason, self.skipped))
        records.record_hyperstep(
            trainer, self, result, named, norm, applied=reason is None, learning_rate=learning_rate, limit=HISTORY_LIMIT
        )
        self._curvature_warned = self._curvature_warned or warn_once_if_mostly_negative_curvature(
            self.history, self.damping
        )
        return reason is None

    def compute_hypergradient(
        self, trainer: Trainer, module: BilevelLightningModule, train_batch: Any, validation_batch: Any
    ) -> HyperstepResult:
        """The hypergradient on these (device) batches at the module's current weights, with the solver that ran
        and the validation loss; under a ``GradScaler`` recomputed at a lower loss scale while it overflows.

        Leaves weights, hyperparameters, buffers and train/eval modes as they were; non-finite losses give a result
        that carries the problem and no solve (:func:`~lightning_hypergrad.lightning.decision.loss_problem`). Of
        ``trainer`` it reads ``precision_plugin``, ``global_step`` and, for ``alpha_from_learning_rate``, ``optimizers``.
        """
        attempt = functools.partial(self._attempt, trainer, module, train_batch, validation_batch)
        return self.loss_scale.run(attempt, trainer.precision_plugin, self.solver, module.device)

    def _attempt(
        self, trainer: Trainer, module: BilevelLightningModule, train_batch: Any, validation_batch: Any, scale: float
    ) -> HyperstepResult:
        with hyperstep_context(module):
            named = module.named_hyperparameters()  # inside: the full parameters of a sharded module
            train_loss, validation_loss = evaluate_losses(
                module, trainer.precision_plugin, train_batch, validation_batch, self.validation_mode
            )
            problem = decision.loss_problem(module, train_loss, validation_loss, self.alpha_from_learning_rate)
            validation_value = float(validation_loss.detach())
            if problem is not None:
                return decision.unsolved_result(module.weight_parameters(), named, validation_value, problem)
            if not self._influence_checked:
                self._influence_checked = contract.warn_about_idle_hyperparameters(module, train_loss, named)
            weights = module.named_implicit_parameters()
            initial = self.solver_memory.start(self.solver, weights, trainer.global_step, self.warm_start)
            solver = update.solver_for_step(self.solver, self.alpha_from_learning_rate, trainer)
            losses = [train_loss, validation_loss]
            del train_loss, validation_loss  # handed over: the solve frees what g's graph does not need of theirs
            result = hypergradient_with_solve(
                losses.pop(0),
                losses.pop(0),
                [weight for _, weight in weights],
                [parameter for _, parameter in named],
                solver,
                damping=self.damping,
                loss_scale=scale,
                average=distributed.product_averaging(self.sync),
                initial=initial,
            )
        return HyperstepResult.of(result, solver, validation_value, self.alpha_from_learning_rate)

    def state_dict(self) -> dict[str, Any]:
        return checkpoint.callback_state(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        checkpoint.load_callback_state(self, state_dict)
