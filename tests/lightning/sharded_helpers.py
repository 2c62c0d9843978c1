"""A user module written the README's way (hyperparameters as top-level ``nn.Parameter``\\ s) that shards itself
with ``fully_shard`` under ModelParallelStrategy, and the fits the sharded tests compare (run inside each process)."""

from __future__ import annotations

import functools
import os
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import Tensor, nn
from torch.distributed.fsdp import fully_shard
from torch.utils.data import DataLoader, TensorDataset

from lightning_hypergrad import BilevelLightningModule, HypergradientCallback
from lightning_hypergrad.lightning import sharding
from lightning_hypergrad.solvers import Neumann

FEATURES = 6


class ShardedRegression(BilevelLightningModule):
    """A one-hidden-layer regression with a learned input scale and a learned decay of the output layer (float64).

    Under ModelParallelStrategy ``configure_model`` shards ``hidden`` and the root (which then holds ``out`` and both
    hyperparameters); the penalty is taken in ``forward`` because FSDP2 unshards a module's weights only there.
    """

    def __init__(self, keep_hyperparameters_out: bool = False) -> None:
        super().__init__()
        self.keep_hyperparameters_out = keep_hyperparameters_out
        generator = torch.Generator().manual_seed(0)
        self.hidden = nn.Linear(FEATURES, 8, dtype=torch.float64)
        self.out = nn.Linear(8, 1, dtype=torch.float64)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
        self.log_scale = nn.Parameter(torch.zeros(FEATURES, dtype=torch.float64))
        self.log_decay = nn.Parameter(torch.full((1,), -2.0, dtype=torch.float64))

    def configure_model(self) -> None:
        if isinstance(self.trainer.strategy, ModelParallelStrategy):
            mesh = self.device_mesh["data_parallel"]
            fully_shard(self.hidden, mesh=mesh)
            ignored = set(self.hyperparameters()) if self.keep_hyperparameters_out else None
            fully_shard(self, mesh=mesh, ignored_params=ignored)

    def forward(self, inputs: Tensor, targets: Tensor, penalty: bool) -> Tensor:
        predictions = self.out(torch.tanh(self.hidden(inputs * self.log_scale.exp()))).squeeze(-1)
        loss = (predictions - targets).pow(2).mean()
        return loss + self.log_decay.exp().sum() * self.out.weight.pow(2).sum() if penalty else loss

    def training_loss(self, batch: Any) -> Tensor:
        return self(*batch, penalty=True)

    def validation_loss(self, batch: Any) -> Tensor:
        return self(*batch, penalty=False)

    def hyperparameters(self) -> list[nn.Parameter]:
        return [self.log_scale, self.log_decay]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.weight_parameters(), lr=0.05)


def data(size: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(size, FEATURES, generator=generator, dtype=torch.float64)
    targets = torch.sin(inputs @ torch.linspace(-1, 1, FEATURES, dtype=torch.float64))
    return TensorDataset(inputs, targets + 0.1 * torch.randn(size, generator=generator, dtype=torch.float64))


class FirstHyperstep(HypergradientCallback):
    """Keeps the first hyperstep's full weights, batches and local hypergradients."""

    first: dict[str, Any] | None = None

    def compute_hypergradient(self, trainer, module, train_batch, validation_batch):
        result = super().compute_hypergradient(trainer, module, train_batch, validation_batch)
        if self.first is None:
            with sharding.unsharded(module):
                state = {name: tensor.detach().clone() for name, tensor in module.named_parameters()}
            self.first = {"state": state, "batches": (train_batch, validation_batch), "local": result.hypergradients}
        return result


def fit(
    strategy: str,
    sync: str,
    steps: int = 6,
    ckpt_path: str | None = None,
    keep_hyperparameters_out: bool = False,
    **callback_options: Any,
) -> tuple[L.Trainer, FirstHyperstep]:
    """A short fit on this process's share (two processes), under ``"model_parallel"`` or ``"ddp"``."""
    options = {"solver": Neumann(iterations=5, alpha=0.05), "every_n_steps": 2, "sync": sync, "check_sync": True}
    options.setdefault("hyper_optimizer", functools.partial(torch.optim.SGD, lr=0.1))
    callback = FirstHyperstep(**{**options, **callback_options})
    chosen = (
        ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1) if strategy == "model_parallel" else "ddp"
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=chosen,
        max_steps=steps,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=os.environ.get("SHARDED_TEST_DIR"),
    )
    loaders = DataLoader(data(64, 1), batch_size=8), DataLoader(data(32, 2), batch_size=8)
    trainer.fit(ShardedRegression(keep_hyperparameters_out), *loaders, ckpt_path=ckpt_path)
    return trainer, callback


def full_hyperparameters(module: ShardedRegression) -> list[Tensor]:
    return [sharding.full(parameter.detach()).clone() for parameter in module.hyperparameters()]
