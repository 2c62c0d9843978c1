"""Peak memory per process of one hyperstep under DDP (full weights) and under FSDP2 (``fully_shard``), 2 and 4
CPU gloo processes, for an MLP of 10.2 M float32 weights (four 1600×1600 layers; 41 MB of weights).

Measured with Linux's high-water mark: ``echo 5 > /proc/self/clear_refs`` resets ``VmHWM`` to the current
resident set, then ``VmHWM`` in ``/proc/self/status`` after the hyperstep is its peak resident set. Printed per
process (the maximum over processes): the resident set before the hyperstep (weights, optimizer-free) and the
hyperstep's peak above it. The hyperstep is ``Neumann(iterations=5, alpha=0.01)`` under ``sync="hvp"``'s
averaging, on a batch of 32 per process; under FSDP2 inside :func:`lightning_hypergrad.lightning.sharding.unsharded`
(what the callback does). Run: ``python benchmarks/sharded_memory.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from lightning_hypergrad import hypergradient_with_solve
from lightning_hypergrad.lightning import distributed, sharding
from lightning_hypergrad.solvers import Neumann

WIDTH, LAYERS, BATCH = 1600, 4, 32


def status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1])


def one_hyperstep(model: nn.Module, decay: nn.Parameter) -> None:
    with sharding.unsharded(model):
        weights = [p for p in model.parameters() if p is not decay]
        inputs, targets = torch.randn(BATCH, WIDTH), torch.randn(BATCH, WIDTH)
        train = (model(inputs) - targets).pow(2).mean() + decay.exp().sum() * sum(w.pow(2).sum() for w in weights)
        validation = (model(inputs + 0.1) - targets).pow(2).mean()
        params, hparams = list(model.parameters()), [decay]
        params = [p for p in params if p is not decay]
        hypergradient_with_solve(
            train, validation, params, hparams, Neumann(5, 0.01), average=distributed.all_reduce_mean
        )


def worker(rank: int, world: int, port: int, layout: str, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    layers = [nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.Tanh()) for _ in range(LAYERS)]
    model = nn.Sequential(*layers)
    model.decay = nn.Parameter(torch.full((1,), -4.0))
    decay = model.decay
    if layout == "fsdp2":
        mesh = init_device_mesh("cpu", (world,))
        for layer in layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh, ignored_params={decay})
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    before = status_kib("VmRSS")
    one_hyperstep(model, decay)
    peak = status_kib("VmHWM")
    totals = torch.tensor([before, peak - before], dtype=torch.float64)
    dist.all_reduce(totals, op=dist.ReduceOp.MAX)
    if rank == 0:
        results[(layout, world)] = totals.tolist()
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    weights = LAYERS * (WIDTH * WIDTH + WIDTH)
    print(f"MLP of {weights / 1e6:.1f} M float32 weights ({4 * weights / 2**20:.0f} MiB); one hyperstep, Neumann(5)")
    print("| processes | layout | resident before (MiB) | hyperstep peak above it (MiB) |")
    print("|---|---|---|---|")
    with mp.Manager() as manager:
        results = manager.dict()
        for world in (2, 4):
            for layout in ("ddp", "fsdp2"):
                mp.start_processes(
                    worker, args=(world, free_port(), layout, results), nprocs=world, start_method="spawn"
                )
                before, extra = results[(layout, world)]
                print(f"| {world} | {layout} | {before / 1024:.0f} | {extra / 1024:.0f} |")


if __name__ == "__main__":
    main()
