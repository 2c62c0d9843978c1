"""Exact against cheap hypergradient synchronisation on 2 CPU processes (gloo), and what each communicates.

Ridge regression in float64, its data split between two processes, weights at the exact minimiser of the
training loss on all data. Two hyperparameters are tuned, each in its own problem:

* a penalty, ``log_decay`` in ``½ mean((Xw − y)²) + ½ exp(log_decay) ‖w‖²``: its mixed term ``∂²L_T/∂w∂λ``
  does not depend on the data;
* a learned input scale ``s`` in ``½ mean((s·Xw − y)²) + ½ μ ‖w‖²`` (validation also sees ``s·X``): its mixed
  term is built from each process's own batch.

For each solver the script prints the hypergradient with ``sync="hvp"`` (every product averaged, as the
callback does) and with ``sync="hypergradient"`` (local solves, final hypergradients averaged), and counts the
all-reduces one exact hyperstep makes with ``Neumann()``'s defaults. Run: python benchmarks/cheap_sync_bias.py
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

sys.path.insert(0, str(Path(__file__).parents[1]))

from lightning_hypergrad import hypergradient, hypergradient_with_solve
from lightning_hypergrad.lightning.distributed import all_reduce_mean
from lightning_hypergrad.solvers import Exact, Identity, Neumann

WORLD = 2
FEATURES, TRAIN_SIZE, VAL_SIZE = 5, 40, 30
RIDGE = 0.1  # μ of the input-scale problem
SOLVERS = {"Exact()": Exact, "Identity(alpha=1.0)": lambda: Identity(alpha=1.0), "Neumann()": Neumann}


def data() -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(0)
    true_weights = torch.randn(FEATURES, generator=generator, dtype=torch.float64)
    tensors = {}
    for split, size in (("train", TRAIN_SIZE), ("val", VAL_SIZE)):
        inputs = torch.randn(size, FEATURES, generator=generator, dtype=torch.float64)
        tensors[f"{split}_inputs"] = inputs
        tensors[f"{split}_targets"] = inputs @ true_weights + 0.5 * torch.randn(
            size, generator=generator, dtype=torch.float64
        )
    return tensors


def shard(tensors: dict[str, Tensor], rank: int) -> dict[str, Tensor]:
    return {name: tensor[rank::WORLD] for name, tensor in tensors.items()}


def minimiser(tensors: dict[str, Tensor], problem: str, value: float) -> Tensor:
    """argmin_w of the training loss on ``tensors`` at the hyperparameter ``value``, in closed form."""
    inputs, targets = tensors["train_inputs"], tensors["train_targets"]
    scale, decay = (1.0, torch.tensor(value).exp()) if problem == "penalty" else (value, RIDGE)
    gram = scale**2 * inputs.T @ inputs / len(inputs) + decay * torch.eye(FEATURES, dtype=torch.float64)
    return torch.linalg.solve(gram, scale * inputs.T @ targets / len(inputs))


def losses(tensors: dict[str, Tensor], problem: str, weights: Tensor, hyperparameter: Tensor) -> tuple[Tensor, Tensor]:
    """(L_T, L_V) of one problem on ``tensors``."""
    scale, decay = (1.0, hyperparameter.exp()) if problem == "penalty" else (hyperparameter, RIDGE)
    train_residual = scale * tensors["train_inputs"] @ weights - tensors["train_targets"]
    val_residual = scale * tensors["val_inputs"] @ weights - tensors["val_targets"]
    train_loss = 0.5 * train_residual.pow(2).mean() + 0.5 * decay * weights.pow(2).sum()
    return train_loss, 0.5 * val_residual.pow(2).mean()


class CountingAverage:
    """all_reduce_mean that records the size of each vector it reduces."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, vector: Sequence[Tensor]) -> tuple[Tensor, ...]:
        self.sizes.append(sum(part.numel() for part in vector))
        return all_reduce_mean(vector)


def worker(rank: int, port: int, directory: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        whole, local = data(), shard(data(), rank)
        results: dict[str, object] = {}
        for problem, value in (("penalty", -2.0), ("input scale", 1.5)):
            weights = minimiser(whole, problem, value).requires_grad_(True)
            hyperparameter = torch.tensor(value, dtype=torch.float64, requires_grad=True)
            for name, make_solver in SOLVERS.items():
                train_loss, val_loss = losses(local, problem, weights, hyperparameter)
                exact = hypergradient_with_solve(
                    train_loss, val_loss, [weights], [hyperparameter], make_solver(), average=all_reduce_mean
                ).hypergradients[0]
                (own,) = hypergradient(train_loss, val_loss, [weights], [hyperparameter], make_solver())
                (cheap,) = all_reduce_mean([own])
                results[f"{problem}|{name}"] = (float(exact), float(cheap))
        counter = CountingAverage()
        weights = minimiser(whole, "penalty", -2.0).requires_grad_(True)
        hyperparameter = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
        train_loss, val_loss = losses(local, "penalty", weights, hyperparameter)
        result = hypergradient_with_solve(train_loss, val_loss, [weights], [hyperparameter], Neumann(), average=counter)
        results["all-reduce sizes"] = counter.sizes
        results["hvp count"] = result.solve.hvp_count
        torch.save(results, f"{directory}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def measure() -> dict[str, object]:
    """Run both processes; return rank 0's results (both ranks hold the same averaged values)."""
    with tempfile.TemporaryDirectory() as directory:
        mp.start_processes(worker, args=(free_port(), directory), nprocs=WORLD, start_method="spawn")
        return torch.load(Path(directory) / "rank0.pt")


def main() -> None:
    results = measure()
    print(f"ridge regression, {FEATURES} features, {TRAIN_SIZE} training / {VAL_SIZE} validation rows on 2 processes")
    for key, values in results.items():
        if "|" not in key:
            continue
        (problem, solver), (exact, cheap) = key.split("|"), values
        print(
            f"{problem:>11}, {solver:<19}: exact sync {exact:+.4f}, cheap sync {cheap:+.4f}, "
            f"relative difference {abs(cheap - exact) / abs(exact):.1e}"
        )
    sizes = results["all-reduce sizes"]
    weight_sized = sum(size >= FEATURES for size in sizes)
    print(
        f"exact sync, Neumann() defaults (iterations={Neumann().iterations}, alpha='auto', "
        f"lanczos_steps={Neumann().lanczos_steps}): {len(sizes)} all-reduces per hyperstep = 1 validation gradient "
        f"(with the direct term) + {results['hvp count']} Hessian-vector products (series and Lanczos) + 1 mixed "
        f"term; {weight_sized} of them weight-sized"
    )


if __name__ == "__main__":
    main()
