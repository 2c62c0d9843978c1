"""The LightningModule users subclass to declare a bilevel problem."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.optim import Optimizer

from lightning_hypergrad.arguments import check_choice, check_count, check_positive
from lightning_hypergrad.lightning import adapter, contract, distributed, graph_reuse, weight_steps
from lightning_hypergrad.lightning.batches import validation_metric_name


class BilevelLightningModule(LightningModule, adapter.HyperparametersIgnoredByDDP):
    """A LightningModule whose weights train on ``training_loss`` while a callback tunes ``hyperparameters()``.

    Implement:

    - ``training_loss(batch) -> Tensor``: the scalar L_T(λ, w); it may use the hyperparameters.
    - ``validation_loss(batch) -> Tensor``: the scalar L_V(λ, w) the hyperparameters are tuned to lower.
    - ``hyperparameters() -> Iterable[nn.Parameter]``: λ, registered on this module (so they are saved in
      checkpoints and moved between devices) and never handed to the weights' optimizer.
    - ``configure_optimizers()``: one optimizer over ``self.weight_parameters()`` (optionally a scheduler).

    Weights train in Lightning's manual-optimization loop: ``training_step`` runs ``training_loss``, back-propagates
    into the weights only (through the precision plugin, so ``16-mixed`` scaling applies) and steps the optimizer.
    Lightning refuses ``Trainer(gradient_clip_val=..., accumulate_grad_batches=...)`` under manual optimization,
    so this module offers both with the same meaning:

    Args:
        gradient_clip_val: clip the weights' gradients to this norm (or value) before each step; ``None`` = off.
        gradient_clip_algorithm: ``"norm"`` (total 2-norm) or ``"value"`` (elementwise).
        accumulate_grad_batches: sum gradients over this many batches (each loss divided by it) per weight step.
        max_consecutive_skipped_weight_steps: the most weight steps in a row that may be skipped for non-finite
            gradients, ``>= 0``; one more stops the fit with a ``RuntimeError`` (0: the first one does). A skipped
            step does not advance ``global_step``, so a training loss that stays NaN would otherwise keep a
            ``max_steps`` fit going forever. Counted per weight step (accumulation window), reset by every step
            taken.

    Learning-rate schedulers from ``configure_optimizers`` are stepped here (manual optimization leaves that to
    the module), honouring ``interval`` and ``frequency``; if you override ``on_train_epoch_end`` or ``on_fit_start``,
    call ``super()``. Accumulation windows end with each epoch, also over an ``IterableDataset``.

    A weight step whose gradients are NaN or inf (a NaN loss or batch) is skipped, weights unchanged, with a
    warning; ``skipped_weight_steps`` counts them (logged as ``train/skipped_weight_steps``), and too many in a row
    stop the fit (``max_consecutive_skipped_weight_steps``). Under DDP the module
    itself keeps DDP from waiting for the hyperparameters' gradients, with or without the callback.

    Override :meth:`project_hyperparameters` to keep hyperparameters feasible after each hyperstep (say, clamp a
    rate into [0, 1)). ``validation_step`` and ``test_step`` log ``validation_loss`` / ``test_loss`` so
    ``ModelCheckpoint(monitor="validation_loss")`` and ``EarlyStopping`` work as usual. With several validation
    dataloaders, ``validation_loss`` is the first one's; the others log ``validation_loss/<key>`` (a dict of
    loaders) or ``validation_loss/dataloader_idx_<k>`` (a list), also when an override of ``validation_step`` calls
    ``super().validation_step(batch, batch_idx)`` without the loader's index. A ``ReduceLROnPlateau`` steps with the metric
    named by its ``monitor`` (default ``validation_loss``), whichever form ``configure_optimizers`` returns.
    """

    def __init__(
        self,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: Literal["norm", "value"] = "norm",
        accumulate_grad_batches: int = 1,
        max_consecutive_skipped_weight_steps: int = 100,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        owner = type(self).__name__
        self.gradient_clip_val = (
            None if gradient_clip_val is None else check_positive(owner, "gradient_clip_val", gradient_clip_val)
        )
        check_choice(owner, "gradient_clip_algorithm", gradient_clip_algorithm, ("norm", "value"))
        self.gradient_clip_algorithm = gradient_clip_algorithm
        self.accumulate_grad_batches = check_count(owner, "accumulate_grad_batches", accumulate_grad_batches, minimum=1)
        self.max_consecutive_skipped_weight_steps = check_count(
            owner, "max_consecutive_skipped_weight_steps", max_consecutive_skipped_weight_steps, minimum=0
        )
        self.skipped_weight_steps = 0  # steps skipped for non-finite gradients (see weight_steps)
        self.consecutive_skipped_weight_steps = 0  # the current run of them
        # Set by a HypergradientCallback(reuse_training_graph=True) for a batch whose weight step it takes a
        # hyperstep on: training_step hands it the loss and gradient graph before stepping (graph_reuse).
        self.weight_step_graph_consumer: graph_reuse.GraphConsumer | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "configure_optimizers" in vars(cls):  # keeps ReduceLROnPlateau's monitor, which Lightning drops here
            cls.configure_optimizers = weight_steps.remembering_plateau_monitors(vars(cls)["configure_optimizers"])

    # --- what users implement -------------------------------------------------------------------------------

    def training_loss(self, batch: Any) -> Tensor:
        """L_T(λ, w) on a training batch: a scalar tensor."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_loss(batch) -> Tensor.")

    def validation_loss(self, batch: Any) -> Tensor:
        """L_V(λ, w) on a validation batch: a scalar tensor."""
        raise NotImplementedError(f"{type(self).__name__} must implement validation_loss(batch) -> Tensor.")

    def hyperparameters(self) -> Iterable[nn.Parameter]:
        """The hyperparameters λ: parameters registered on this module, excluded from the weights' optimizer."""
        raise NotImplementedError(f"{type(self).__name__} must implement hyperparameters() -> Iterable[nn.Parameter].")

    def project_hyperparameters(self) -> None:
        """Called under ``torch.no_grad()`` after every hyperstep; edit hyperparameters in place to constrain them."""

    # --- provided -------------------------------------------------------------------------------------------

    def named_hyperparameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` for each hyperparameter, checked (leaf, requires grad, non-empty, registered on
        this module, listed once); a clear error names any that is not. Names are those of ``named_parameters()``.
        """
        return contract.named_hyperparameters(self)

    def hyperparameter_values(self) -> dict[str, Tensor]:
        """The hyperparameters in the units a reader thinks in, by name, for the end-of-fit report.

        By default the raw values of :meth:`named_hyperparameters`. Override where a hyperparameter is
        reparametrised, to report decay coefficients rather than their logarithms, drop probabilities rather
        than logits, example weights rather than their raw parameters.
        """
        return {name: parameter.detach().clone() for name, parameter in self.named_hyperparameters()}

    def report_metrics(self) -> dict[str, float]:
        """Extra numbers for the end-of-fit report, by name (say, how well learned weights find noisy labels)."""
        return {}

    def weight_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters that are not hyperparameters: what ``configure_optimizers`` should use.

        Frozen parameters (``requires_grad=False``) are left out: no gradient ever reaches them.
        """
        hyperparameter_ids = {id(parameter) for _, parameter in self.named_hyperparameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in hyperparameter_ids]

    def named_weight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` for each of :meth:`weight_parameters`, in its order, named as in
        ``named_parameters()`` (a weight it returns that is not registered is named by its position).

        The callback keys the warm start and the solver's state by these names.
        """
        return self._named(self.weight_parameters(), "weight_parameters")

    def named_implicit_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` for each of :meth:`implicit_parameters`, named as :meth:`named_weight_parameters`
        names them: what the hyperstep solves over and keys its warm start by."""
        return self._named(self.implicit_parameters(), "implicit_parameters")

    def _named(self, parameters: list[nn.Parameter], method: str) -> list[tuple[str, nn.Parameter]]:
        names = {id(parameter): name for name, parameter in self.named_parameters()}
        return [(names.get(id(p), f"{method}()[{index}]"), p) for index, p in enumerate(parameters)]

    def implicit_parameters(self) -> list[nn.Parameter]:
        """The weights the implicit term solves over: :meth:`weight_parameters` (all of them) unless overridden.

        Return a subset (say the last layers' weights) to restrict ``H⁻¹`` to their block: the hypergradient then
        treats the other weights as fixed, a biased but far cheaper approximation (the products only run through
        those layers; ``docs/recipes.md`` measures the bias). Hyperparameters that act on the other weights only
        (their decays) then get only their direct term.
        """
        return self.weight_parameters()

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        optimizer = self.optimizers()
        if isinstance(optimizer, list):
            raise ValueError(
                f"{type(self).__name__}.configure_optimizers returned {len(optimizer)} optimizers; a "
                "BilevelLightningModule trains its weights with exactly one (hyperparameters have the callback's)."
            )
        if weight_steps.recomputing_batch_norm(self.trainer):  # forward passes only (SWA's last epoch)
            with torch.no_grad():
                return self.training_loss(batch)
        # A compiled training_step cannot hand over a graph that is differentiated twice: it recomputes.
        consumer = None if torch.compiler.is_compiling() else self.weight_step_graph_consumer
        if consumer is None:
            loss = contract.check_loss(self, "training_loss", self.training_loss(batch))
            weight_steps.backward_weights(self, loss / self.accumulate_grad_batches, self.weight_parameters())
        else:  # accumulate_grad_batches is 1 (graph_reuse.check_graph_reuse)
            loss = contract.check_loss(self, "training_loss", graph_reuse.training_loss_with_graph(self, batch))
            consumer(batch, graph_reuse.backward_keeping_graph(self, loss, self.weight_parameters()))
        if weight_steps.completes_accumulation(self.trainer, batch_idx, self.accumulate_grad_batches):
            if weight_steps.gradients_are_finite(self, optimizer, loss):  # else skipped, as GradScaler would
                optimizer.step()
                weight_steps.step_schedulers(self.trainer, "step")
            optimizer.zero_grad(set_to_none=True)
        self.log("train_loss", loss.detach(), prog_bar=True)
        return loss.detach()

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        # Runs after the precision plugin has unscaled the gradients, so clipping sees true magnitudes.
        weight_steps.clip_weight_gradients(self, optimizer, self.gradient_clip_val, self.gradient_clip_algorithm)

    def on_fit_start(self) -> None:
        contract.check_weight_optimizers(self, self.trainer.optimizers)
        # DDP leaves the parameters it ignores out of its initial broadcast: start all processes from rank 0's λ.
        distributed.broadcast_([parameter for _, parameter in self.named_hyperparameters()])

    def on_train_epoch_end(self) -> None:
        weight_steps.step_schedulers(self.trainer, "epoch")

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int | None = None) -> Tensor:
        if dataloader_idx is None:  # an override calling super() without it: the loop knows which loader runs
            dataloader_idx = adapter.evaluation_dataloader_idx(self.trainer)
        loss = contract.check_loss(self, "validation_loss", self.validation_loss(batch))
        name = validation_metric_name(self.trainer, dataloader_idx)  # "validation_loss" for the first loader
        self.log(name, loss, prog_bar=dataloader_idx == 0, sync_dist=True, add_dataloader_idx=False)
        return loss

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = self.validation_loss(batch)
        self.log("test_loss", loss, sync_dist=True)
        return loss
