"""The Lightning callback that takes hypersteps between weight steps."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.hooks import DataHooks
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from lightning_hypergrad import distributed, vectors
from lightning_hypergrad.checks import check_count, check_positive
from lightning_hypergrad.data.cycling import CyclingLoader
from lightning_hypergrad.hypergradient import HypergradientResult, HypergradientWarning, hypergradient_with_solve
from lightning_hypergrad.module import BilevelLightningModule
from lightning_hypergrad.solvers import IHVPSolver, Neumann

DEFAULT_HYPER_LEARNING_RATE = 1e-2
PROGRESS_BAR_HYPERPARAMETERS = 4  # more would crowd the bar; loggers get them all


class HypergradientCallback(Callback):
    r"""Tunes a BilevelLightningModule's hyperparameters by a hypergradient step every few weight steps.

    Every ``every_n_steps`` weight steps (after ``warmup_steps``) the hyperparameters step along their
    hypergradient (see :func:`lightning_hypergrad.hypergradient` for the formula).

    A hyperstep draws a validation batch from a cycling iterator over the datamodule's ``hyper_dataloader()``
    (else the module's, else ``val_dataloader()``), takes the current training batch (or a fresh one), evaluates
    ``validation_loss`` and ``training_loss`` under the Trainer's precision (autocast), computes the hypergradient
    on the unwrapped module, and steps a plain torch optimizer over ``module.hyperparameters()``. It never writes
    the Trainer's state: ``global_step`` counts weight steps only.

    Args:
        solver: the inverse-Hessian-vector-product solver; ``None`` means ``Neumann()`` (20 terms, automatic α).
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
        warm_start: start each solve from the previous hyperstep's solution.
        alpha_from_learning_rate: give the solver's ``alpha`` the weight optimizer's current learning rate on
            every hyperstep (Neumann's series then mirrors unrolled gradient descent with that step).
        sync: with several processes (DDP), ``"hvp"`` averages the validation gradient and every
            Hessian-vector product across processes, so all solve the same system with the global-batch Hessian
            (exact: equals one process on the concatenated batches; K+2 all-reduces of weight size per hyperstep).
            ``"hypergradient"`` solves with each process's local batch and averages only the final
            hypergradients (one all-reduce of hyperparameter size; biased, since a mean of inverses is not the
            inverse of the mean). Either way every process applies the same step.
        check_sync: after every hyperstep verify (one small all-reduce) that all processes hold identical
            hyperparameters, raising if not; a debugging aid.

    Skipped hypersteps: a failed solve (``converged=False``) or a non-finite hypergradient is never applied;
    it is counted (``hyper/skipped``) and reported with a :class:`HypergradientWarning`.

    Logged every hyperstep (to the Trainer's loggers): ``hyper/validation_loss``, ``hyper/hypergradient_norm``,
    ``hyper/train_gradient_norm``, ``hyper/solver_iterations``, ``hyper/solver_residual``,
    ``hyper/solver_converged``, ``hyper/hvp_count``, ``hyper/taken``, ``hyper/skipped``, and for each
    hyperparameter ``hparam/<name>`` (scalars) or ``hparam/<name>/{mean,std,min,max}``.
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
    ) -> None:
        super().__init__()
        if solver is not None and not isinstance(solver, IHVPSolver):
            raise TypeError(
                f"HypergradientCallback(solver={solver!r}): solver must be an IHVPSolver such as Neumann(), "
                f"ConjugateGradient(), Identity() or Exact(); got {type(solver).__name__}."
            )
        self.solver = Neumann() if solver is None else solver
        self.hyper_optimizer_factory = hyper_optimizer
        self.hyper_lr_scheduler_factory = hyper_lr_scheduler
        self.every_n_steps = check_count("HypergradientCallback", "every_n_steps", every_n_steps, minimum=1)
        self.warmup_steps = check_count("HypergradientCallback", "warmup_steps", warmup_steps, minimum=0)
        if train_batch not in ("current", "fresh"):
            raise ValueError(
                f"HypergradientCallback(train_batch={train_batch!r}): allowed values are 'current' and 'fresh'."
            )
        if validation_mode not in ("eval", "train"):
            raise ValueError(
                f"HypergradientCallback(validation_mode={validation_mode!r}): allowed values are 'eval' and 'train'."
            )
        self.train_batch = train_batch
        self.validation_mode = validation_mode
        self.max_hypergradient_norm = (
            None
            if max_hypergradient_norm is None
            else check_positive("HypergradientCallback", "max_hypergradient_norm", max_hypergradient_norm)
        )
        if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not 0 <= damping < float("inf"):
            raise ValueError(f"HypergradientCallback(damping={damping!r}): damping must be a finite number >= 0.")
        self.damping = float(damping)
        self.warm_start = bool(warm_start)
        if alpha_from_learning_rate and not hasattr(self.solver, "alpha"):
            raise ValueError(
                f"HypergradientCallback(alpha_from_learning_rate=True) needs a solver with a step size alpha "
                f"(Neumann or Identity); got {self.solver!r}."
            )
        self.alpha_from_learning_rate = bool(alpha_from_learning_rate)
        if sync not in ("hvp", "hypergradient"):
            raise ValueError(f"HypergradientCallback(sync={sync!r}): allowed values are 'hvp' and 'hypergradient'.")
        self.sync = sync
        self.check_sync = bool(check_sync)
        self.last_applied_hypergradients: list[Tensor] | None = None

        self.hyper_optimizer: torch.optim.Optimizer | None = None
        self.hyper_lr_scheduler: Any = None
        self.taken = 0
        self.skipped = 0
        self.last_step_seen = -1
        self.warm_start_solution: list[Tensor] | None = None
        self._hyper_batches: CyclingLoader | None = None
        self._train_batches: CyclingLoader | None = None
        self._pending_state: dict[str, Any] | None = None
        self._influence_checked = False
        self._last_validation_loss: float | None = None
        self.history: list[dict[str, float]] = []
        """One entry per hyperstep (taken or skipped): ``step`` and the metrics logged for it."""

    # --- set-up and checks ------------------------------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not isinstance(pl_module, BilevelLightningModule):
            raise TypeError(
                f"HypergradientCallback needs a BilevelLightningModule; {type(pl_module).__name__} is not one. "
                "Subclass lightning_hypergrad.BilevelLightningModule and implement training_loss, validation_loss "
                "and hyperparameters."
            )
        strategy = type(trainer.strategy).__name__
        if "FSDP" in strategy or "DeepSpeed" in strategy or "ModelParallel" in strategy:
            raise ValueError(
                f"HypergradientCallback does not support the {strategy} strategy: Hessian-vector products need the "
                "full, unsharded weights. Supported strategies: single device (auto) and the DDP family."
            )
        _check_manual_optimization(pl_module)
        self._check_hyperparameters(pl_module)
        if isinstance(trainer.strategy, DDPStrategy):
            # Hyperparameters get no gradient from the weights' backward; DDP must not wait for one.
            names = [name for name, _ in self._named_hyperparameters(pl_module)]
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(pl_module, names)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        module = self._bilevel(pl_module)
        _check_manual_optimization(module)
        hyperparameters = self._check_hyperparameters(module)
        hyperparameter_ids = {id(parameter): name for name, parameter in self._named_hyperparameters(module)}
        for index, optimizer in enumerate(trainer.optimizers):
            shared = [
                hyperparameter_ids[id(parameter)]
                for group in optimizer.param_groups
                for parameter in group["params"]
                if id(parameter) in hyperparameter_ids
            ]
            if shared:
                raise ValueError(
                    f"Hyperparameters {shared} are also in the weights' optimizer {index} "
                    f"({type(optimizer).__name__}); build it from self.weight_parameters() in configure_optimizers."
                )
        distributed.broadcast_(hyperparameters)  # DDP does not broadcast the parameters it ignores
        factory = self.hyper_optimizer_factory
        self.hyper_optimizer = (
            factory(hyperparameters)
            if factory is not None
            else torch.optim.Adam(hyperparameters, lr=DEFAULT_HYPER_LEARNING_RATE)
        )
        if self.hyper_lr_scheduler_factory is not None:
            self.hyper_lr_scheduler = self.hyper_lr_scheduler_factory(self.hyper_optimizer)
        if self._pending_state is not None:
            self._restore_optimizer_state(self._pending_state, module)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        shard = {"num_replicas": trainer.world_size, "rank": trainer.global_rank}
        self._hyper_batches = CyclingLoader(distributed.shard_loader(self._hyper_loader(trainer, pl_module), **shard))
        if self.train_batch == "fresh":
            self._train_batches = CyclingLoader(
                distributed.shard_loader(self._train_loader(trainer, pl_module), **shard)
            )
        if self._pending_state is not None:
            self._hyper_batches.skip_to(self._pending_state.get("hyper_batches_drawn", 0))
            if self._train_batches is not None:
                self._train_batches.skip_to(self._pending_state.get("train_batches_drawn", 0))
            self._pending_state = None

    # --- the hyperstep ----------------------------------------------------------------------------------------

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step == self.last_step_seen:  # an accumulation batch: no weight step was taken
            return
        self.last_step_seen = step
        if step <= self.warmup_steps or (step - self.warmup_steps) % self.every_n_steps != 0:
            return
        self.hyperstep(trainer, self._bilevel(pl_module), batch)

    def hyperstep(self, trainer: Trainer, module: BilevelLightningModule, batch: Any) -> bool:
        """Compute and apply one hyperstep; returns whether it was applied (False when skipped)."""
        assert self._hyper_batches is not None and self.hyper_optimizer is not None, "called before on_train_start"
        if self.train_batch == "fresh":
            assert self._train_batches is not None
            batch = trainer.strategy.batch_to_device(next(self._train_batches))
        validation_batch = trainer.strategy.batch_to_device(next(self._hyper_batches))
        result = self.compute_hypergradient(trainer, module, batch, validation_batch)
        hyperparameters = list(module.hyperparameters())

        hypergradients = list(result.hypergradients)
        failed = not result.solve.converged
        if distributed.world_size() > 1 and self.sync == "hypergradient":
            # One all-reduce: the mean hypergradient, and whether any process failed (then all skip together).
            flag = torch.ones(1, device=hypergradients[0].device) * float(failed)
            *hypergradients, failures = distributed.all_reduce_mean([*hypergradients, flag])
            failed = bool(failures.item() > 0)
        norm = vectors.norm(hypergradients)
        reason = None
        if failed:
            reason = f"the solve failed ({result.solve.status.value}, residual {float(result.solve.residual_norm):.3g})"
            if result.solve.converged:
                reason = "the solve failed on another process"
        elif not bool(torch.isfinite(norm)):
            reason = "the hypergradient is not finite"
        if reason is not None:
            self.skipped += 1
            rank_zero_warn(
                f"Skipped the hyperstep at step {trainer.global_step}: {reason}. Hyperparameters are unchanged "
                f"({self.skipped} skipped so far). With Neumann, lower alpha or use alpha='auto'; consider damping.",
                category=HypergradientWarning,
            )
            self._log(trainer, module, result, norm, applied=False)
            return False

        if self.max_hypergradient_norm is not None and float(norm) > self.max_hypergradient_norm:
            hypergradients = list(vectors.scale(hypergradients, self.max_hypergradient_norm / float(norm)))
        self.last_applied_hypergradients = [gradient.detach().clone() for gradient in hypergradients]
        for parameter, gradient in zip(hyperparameters, hypergradients):
            parameter.grad = gradient.to(parameter.dtype)
        self.hyper_optimizer.step()
        self.hyper_optimizer.zero_grad(set_to_none=True)
        if self.hyper_lr_scheduler is not None:
            self.hyper_lr_scheduler.step()
        with torch.no_grad():
            module.project_hyperparameters()
        if self.check_sync and not distributed.identical_across_processes(hyperparameters):
            raise RuntimeError(
                f"Hyperparameters differ across processes after the hyperstep at step {trainer.global_step}; "
                "something outside the callback changed them on some processes only."
            )
        if self.warm_start:
            self.warm_start_solution = [part.detach().clone() for part in result.solve.solution]
        self.taken += 1
        self._log(trainer, module, result, norm, applied=True)
        return True

    def compute_hypergradient(
        self, trainer: Trainer, module: BilevelLightningModule, train_batch: Any, validation_batch: Any
    ) -> HypergradientResult:
        """The hypergradient on these (device) batches at the module's current weights.

        Leaves weights, hyperparameters, buffers (BatchNorm statistics) and train/eval modes as they were.
        """
        weights = module.weight_parameters()
        hyperparameters = list(module.hyperparameters())
        buffers = {name: buffer.detach().clone() for name, buffer in module.named_buffers()}
        modes = {submodule: submodule.training for submodule in module.modules()}
        try:
            with trainer.precision_plugin.forward_context():
                if self.validation_mode == "eval":
                    module.eval()
                validation_loss = module.validation_loss(validation_batch)
                self._last_validation_loss = float(validation_loss.detach())
                _restore_modes(modes)
                train_loss = module.training_loss(train_batch)
            if not self._influence_checked:
                self._warn_about_idle_hyperparameters(module, train_loss, hyperparameters)
            return hypergradient_with_solve(
                train_loss,
                validation_loss,
                weights,
                hyperparameters,
                self._solver_for(trainer),
                damping=self.damping,
                loss_scale=_loss_scale(trainer),
                average=distributed.all_reduce_mean if distributed.world_size() > 1 and self.sync == "hvp" else None,
                initial=self.warm_start_solution if self.warm_start else None,
            )
        finally:
            _restore_modes(modes)
            with torch.no_grad():
                for name, buffer in module.named_buffers():
                    buffer.copy_(buffers[name])

    # --- checkpointing ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "taken": self.taken,
            "skipped": self.skipped,
            "last_step_seen": self.last_step_seen,
            "hyper_batches_drawn": self._hyper_batches.drawn if self._hyper_batches is not None else 0,
            "train_batches_drawn": self._train_batches.drawn if self._train_batches is not None else 0,
            "warm_start_solution": self.warm_start_solution,
            "history": self.history,
            "hyper_optimizer": self.hyper_optimizer.state_dict() if self.hyper_optimizer is not None else None,
            "hyper_lr_scheduler": self.hyper_lr_scheduler.state_dict() if self.hyper_lr_scheduler is not None else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Defaults keep checkpoints written by older versions loadable.
        self.taken = state_dict.get("taken", 0)
        self.skipped = state_dict.get("skipped", 0)
        self.last_step_seen = state_dict.get("last_step_seen", -1)
        self.warm_start_solution = state_dict.get("warm_start_solution")
        self.history = list(state_dict.get("history", []))
        self._pending_state = dict(state_dict)  # optimizer state and loader positions apply once those exist

    # --- helpers ----------------------------------------------------------------------------------------------

    def _restore_optimizer_state(self, state: dict[str, Any], module: BilevelLightningModule) -> None:
        assert self.hyper_optimizer is not None
        if state.get("hyper_optimizer") is not None:
            self.hyper_optimizer.load_state_dict(state["hyper_optimizer"])
        if self.hyper_lr_scheduler is not None and state.get("hyper_lr_scheduler") is not None:
            self.hyper_lr_scheduler.load_state_dict(state["hyper_lr_scheduler"])
        if self.warm_start_solution is not None:
            self.warm_start_solution = [
                part.to(weight.device) for part, weight in zip(self.warm_start_solution, module.weight_parameters())
            ]

    def _solver_for(self, trainer: Trainer) -> IHVPSolver:
        if not self.alpha_from_learning_rate:
            return self.solver
        learning_rate = trainer.optimizers[0].param_groups[0]["lr"]
        return self.solver.with_alpha(float(learning_rate))

    @staticmethod
    def _bilevel(pl_module: LightningModule) -> BilevelLightningModule:
        if not isinstance(pl_module, BilevelLightningModule):
            raise TypeError(f"HypergradientCallback needs a BilevelLightningModule, got {type(pl_module).__name__}.")
        return pl_module

    @staticmethod
    def _named_hyperparameters(module: BilevelLightningModule) -> list[tuple[str, nn.Parameter]]:
        names = {id(parameter): name for name, parameter in module.named_parameters()}
        return [
            (names.get(id(parameter), f"hyperparameter_{index}"), parameter)
            for index, parameter in enumerate(module.hyperparameters())
        ]

    def _check_hyperparameters(self, module: BilevelLightningModule) -> list[nn.Parameter]:
        owner = type(module).__name__
        hyperparameters = module.hyperparameters()
        if not isinstance(hyperparameters, Iterable):
            raise TypeError(
                f"{owner}.hyperparameters() must return an iterable of nn.Parameter, got {type(hyperparameters).__name__}."
            )
        hyperparameters = list(hyperparameters)
        if not hyperparameters:
            raise ValueError(f"{owner}.hyperparameters() returned nothing; there is nothing to tune.")
        registered = {id(parameter) for parameter in module.parameters()}
        for index, parameter in enumerate(hyperparameters):
            if not isinstance(parameter, Tensor):
                raise TypeError(f"{owner}.hyperparameters()[{index}] is a {type(parameter).__name__}, not a tensor.")
            if not parameter.is_leaf:
                raise ValueError(
                    f"{owner}.hyperparameters()[{index}] (shape {tuple(parameter.shape)}) is not a leaf tensor; return "
                    "the nn.Parameter itself, not a value computed from it (apply transforms inside the losses)."
                )
            if not parameter.requires_grad:
                raise ValueError(
                    f"{owner}.hyperparameters()[{index}] (shape {tuple(parameter.shape)}) does not require grad."
                )
            if id(parameter) not in registered:
                raise ValueError(
                    f"{owner}.hyperparameters()[{index}] (shape {tuple(parameter.shape)}) is not registered on the "
                    "module, so it would be neither checkpointed nor moved to the device; make it an nn.Parameter attribute."
                )
        return hyperparameters

    def _warn_about_idle_hyperparameters(
        self, module: BilevelLightningModule, train_loss: Tensor, hyperparameters: list[nn.Parameter]
    ) -> None:
        self._influence_checked = True
        gradients = torch.autograd.grad(train_loss, hyperparameters, retain_graph=True, allow_unused=True)
        names = [
            name for (name, _), gradient in zip(self._named_hyperparameters(module), gradients) if gradient is None
        ]
        if names:
            rank_zero_warn(
                f"Hyperparameters {names} do not influence {type(module).__name__}.training_loss, so the implicit "
                "hypergradient cannot move them (only a direct term from validation_loss can).",
                category=HypergradientWarning,
            )

    def _hyper_loader(self, trainer: Trainer, pl_module: LightningModule) -> Iterable[Any]:
        datamodule = trainer.datamodule
        for owner in (datamodule, pl_module):
            if owner is not None and callable(getattr(owner, "hyper_dataloader", None)):
                return owner.hyper_dataloader()
        if datamodule is not None and _overrides(datamodule, "val_dataloader"):
            return datamodule.val_dataloader()
        if _overrides(pl_module, "val_dataloader"):
            return pl_module.val_dataloader()
        if trainer.val_dataloaders is None and trainer.fit_loop.epoch_loop.val_loop._data_source.is_defined():
            trainer.fit_loop.epoch_loop.val_loop.setup_data()
        if trainer.val_dataloaders is not None:
            return trainer.val_dataloaders
        raise ValueError(
            "HypergradientCallback found no validation data for hypersteps: define hyper_dataloader() or "
            "val_dataloader() on the datamodule or module, or pass val_dataloaders to trainer.fit."
        )

    def _train_loader(self, trainer: Trainer, pl_module: LightningModule) -> Iterable[Any]:
        datamodule = trainer.datamodule
        if datamodule is not None and _overrides(datamodule, "train_dataloader"):
            return datamodule.train_dataloader()
        if _overrides(pl_module, "train_dataloader"):
            return pl_module.train_dataloader()
        return trainer.train_dataloader

    def _log(
        self, trainer: Trainer, module: BilevelLightningModule, result: HypergradientResult, norm: Tensor, applied: bool
    ) -> None:
        solve = result.solve
        metrics = {
            "hyper/hypergradient_norm": float(norm) if applied else float("nan"),
            "hyper/train_gradient_norm": float(result.train_gradient_norm),
            "hyper/solver_iterations": float(solve.iterations),
            "hyper/solver_residual": float(solve.residual_norm),
            "hyper/solver_converged": float(solve.converged),
            "hyper/hvp_count": float(solve.hvp_count),
            "hyper/taken": float(self.taken),
            "hyper/skipped": float(self.skipped),
        }
        if solve.alpha is not None:
            metrics["hyper/alpha"] = solve.alpha
        if self._last_validation_loss is not None:
            metrics["hyper/validation_loss"] = self._last_validation_loss
        metrics.update(hyperparameter_summary(self._named_hyperparameters(module)))
        _log_to_loggers(trainer, metrics)
        self.history.append({"step": float(trainer.global_step), **metrics})
        progress = {"hyper/skipped": float(self.skipped)}
        if self._last_validation_loss is not None:
            progress["hyper/validation_loss"] = self._last_validation_loss
        for name, _ in self._named_hyperparameters(module)[:PROGRESS_BAR_HYPERPARAMETERS]:
            key = f"hparam/{name}" if f"hparam/{name}" in metrics else f"hparam/{name}/mean"
            progress[key] = metrics[key]
        module.log_dict(progress, prog_bar=True, logger=False, on_step=True, on_epoch=False)


def hyperparameter_summary(named: list[tuple[str, nn.Parameter]]) -> dict[str, float]:
    """``hparam/<name>`` for scalars, ``hparam/<name>/{mean,std,min,max}`` for tensors (of the raw values)."""
    summary: dict[str, float] = {}
    for name, parameter in named:
        values = parameter.detach().float()
        if values.numel() == 1:
            summary[f"hparam/{name}"] = float(values)
            continue
        stats = torch.stack([values.mean(), values.std(), values.min(), values.max()]).tolist()
        summary.update({f"hparam/{name}/{key}": value for key, value in zip(("mean", "std", "min", "max"), stats)})
    return summary


@rank_zero_only
def _log_to_loggers(trainer: Trainer, metrics: dict[str, float]) -> None:
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)


def _loss_scale(trainer: Trainer) -> float:
    """The weights' current AMP loss scale under ``16-mixed`` (keeps float16 products from underflowing), else 1."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    if scaler is not None and scaler.is_enabled():
        return float(scaler.get_scale())
    return 1.0


def _check_manual_optimization(module: BilevelLightningModule) -> None:
    if module.automatic_optimization:
        raise ValueError(
            f"{type(module).__name__}.automatic_optimization is True; a BilevelLightningModule trains its weights with "
            "manual optimization (its training_step steps the optimizer). Do not set automatic_optimization = True."
        )


def _restore_modes(modes: dict[nn.Module, bool]) -> None:
    for submodule, training in modes.items():
        submodule.training = training


def _overrides(owner: object, method: str) -> bool:
    """Whether ``owner`` defines ``method`` itself rather than inheriting Lightning's placeholder."""
    implementation = getattr(type(owner), method, None)
    return implementation is not None and implementation is not getattr(DataHooks, method, None)
