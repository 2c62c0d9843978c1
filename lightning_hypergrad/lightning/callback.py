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
from lightning_hypergrad.lightning import (
    averaging,
    checkpoint,
    contract,
    decision,
    distributed,
    graph_reuse,
    records,
    update,
)
from lightning_hypergrad.lightning.attempt import attempt_hypergradient
from lightning_hypergrad.lightning.batches import HyperBatches
from lightning_hypergrad.lightning.curvature import warn_once_if_mostly_negative_curvature
from lightning_hypergrad.lightning.decision import HyperstepResult
from lightning_hypergrad.lightning.graph_reuse import WeightStepGraph
from lightning_hypergrad.lightning.loss_scale import HyperstepLossScale, checked_loss_scale, weights_loss_scale
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
        reuse_training_graph: take each hyperstep inside its weight step, on that step's loss and gradient graph,
            at the weights before the step (:mod:`~lightning_hypergrad.lightning.graph_reuse`): one forward and
            backward fewer. ``"auto"`` (default) where the fit allows it, ``True`` or an error, ``False``:
            recompute after the step.

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
        reuse_training_graph: bool | Literal["auto"] = "auto",
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
        self.reuse_training_graph = graph_reuse.checked_request(reuse_training_graph, self.train_batch)

        self.batches = HyperBatches(self.train_batch == "fresh", validation_dataloader)
        self.hyper_optimizer: torch.optim.Optimizer | None = None
        self.hyper_lr_scheduler: Any = None
        self.taken = self.skipped = 0
        self.reusing_graph, self.last_step_seen, self.graph_step, self.hyperstep_step = False, -1, -1, 0
        self.solver_memory = SolverMemory()  # the warm start and the weights the solver's state belongs to
        self.last_applied_hypergradients: list[Tensor] | None = None
        self.history: list[dict[str, Any]] = []  # bounded: see the class docstring
        self.pending_state: dict[str, Any] | None = None  # from a checkpoint, until the optimizers exist
        self.pending_random_state: dict[str, Any] | None = None  # from a checkpoint, until training starts
        self.influence_checked = self._zero_warned = self._curvature_warned = self.graph_unserved_warned = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        contract.check_bilevel_module(pl_module)
        distributed.check_strategy(trainer.strategy)
        update.check_solver_size(self.solver, contract.bilevel(pl_module).weight_parameters())
        scale = weights_loss_scale(trainer.precision_plugin)
        self.reusing_graph = graph_reuse.reuses_graph(self, trainer, contract.bilevel(pl_module), scale)

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

    def is_hyperstep(self, step: int) -> bool:
        """Whether a hyperstep follows weight step number ``step`` (counted from 1)."""
        return step > self.warmup_steps and (step - self.warmup_steps) % self.every_n_steps == 0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self.reusing_graph:
            graph_reuse.offer(self, trainer, contract.bilevel(pl_module))

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step, module = trainer.global_step, contract.bilevel(pl_module)
        if self.reusing_graph and graph_reuse.served(self, module, step):
            self.last_step_seen = step
        if step == self.last_step_seen:  # an accumulation batch (no weight step), or a hyperstep taken inside it
            return
        self.last_step_seen = step
        if self.is_hyperstep(step):
            self.hyperstep(trainer, module, batch)

    def hyperstep(
        self, trainer: Trainer, module: BilevelLightningModule, batch: Any, graph: WeightStepGraph | None = None
    ) -> bool:
        """Compute and apply one hyperstep (on the weight step's ``graph`` when given); returns whether it was
        applied (False when skipped)."""
        self.hyperstep_step = trainer.global_step + (graph is not None)  # the weight step it belongs to
        train_batch = self.batches.next_train(trainer) if self.train_batch == "fresh" else batch
        learning_rate = records.learning_rate(self.hyper_optimizer)  # before the scheduler steps
        reused = {} if graph is None else {"graph": graph}  # an override without the argument works as before
        result = self.compute_hypergradient(trainer, module, train_batch, self.batches.next_hyper(trainer), **reused)
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
            rank_zero_warn(decision.skip_warning(self.hyperstep_step, reason, self.skipped))
        records.record_hyperstep(
            trainer, self, result, named, norm, applied=reason is None, learning_rate=learning_rate, limit=HISTORY_LIMIT
        )
        self._curvature_warned = self._curvature_warned or warn_once_if_mostly_negative_curvature(
            self.history, self.damping
        )
        return reason is None

    def compute_hypergradient(
        self,
        trainer: Trainer,
        module: BilevelLightningModule,
        train_batch: Any,
        validation_batch: Any,
        graph: WeightStepGraph | None = None,
    ) -> HyperstepResult:
        """The hypergradient on these (device) batches at the module's current weights, with the solver that ran
        and the validation loss; under a ``GradScaler`` recomputed at a lower loss scale while it overflows. With
        ``graph`` (the weight step's), its training loss and gradient are used instead of evaluating them again.

        Leaves weights, hyperparameters, buffers and train/eval modes as they were; non-finite losses give a result
        that carries the problem and no solve (:func:`~lightning_hypergrad.lightning.decision.loss_problem`). Of
        ``trainer`` it reads ``precision_plugin``, ``global_step`` and, for ``alpha_from_learning_rate``, ``optimizers``.
        """
        attempt = functools.partial(attempt_hypergradient, self, trainer, module, train_batch, validation_batch, graph)
        return self.loss_scale.run(attempt, trainer.precision_plugin, self.solver, module.device)

    def state_dict(self) -> dict[str, Any]:
        return checkpoint.callback_state(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        checkpoint.load_callback_state(self, state_dict)
