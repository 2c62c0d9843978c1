"""Several processes (gloo on CPU): exact and cheap hypergradient synchronisation, identical replicas."""

from __future__ import annotations

import functools
import os
import socket

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from lightning_hypergrad import HypergradientCallback, hypergradient, hypergradient_with_solve
from lightning_hypergrad.lightning.distributed import (
    agree_on_hypergradients,
    all_reduce_mean,
    check_strategy,
    identical_across_processes,
    product_averaging,
    shard_loader,
    world_size,
)
from lightning_hypergrad.solvers import ConjugateGradient, Neumann
from tests.helpers import RidgeProblem, relative_error
from tests.lightning_helpers import SavingCallback, digits, make_trainer, small_classifier

WORLD = 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ridge_halves() -> tuple[RidgeProblem, list[RidgeProblem]]:
    """A ridge problem and the two halves of its training and validation data."""
    whole = RidgeProblem.make(features=6, train_size=40, val_size=30)
    halves = [
        RidgeProblem(
            whole.train_inputs[rank::WORLD],
            whole.train_targets[rank::WORLD],
            whole.val_inputs[rank::WORLD],
            whole.val_targets[rank::WORLD],
            whole.log_decay,
        )
        for rank in range(WORLD)
    ]
    return whole, halves


SOLVERS = {
    "neumann-auto": functools.partial(Neumann, 30, "auto", 6),
    "cg": functools.partial(ConjugateGradient, 6, 1e-12),
}


def engine_worker(rank: int, port: int, directory: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        whole, halves = ridge_halves()
        weights = whole.minimizer().clone().requires_grad_(True)  # the same weights on every process
        log_decay = whole.log_decay.clone().requires_grad_(True)
        local = halves[rank]
        results = {}
        for name, make_solver in SOLVERS.items():
            result = hypergradient_with_solve(
                local.train_loss(weights, log_decay),
                local.val_loss(weights),
                [weights],
                [log_decay],
                make_solver(),
                average=all_reduce_mean,
            )
            results[name] = (result.hypergradients[0], result.solve.iterations, result.solve.alpha)
        results["identical"] = identical_across_processes([weights]) and world_size() == WORLD
        torch.save(results, f"{directory}/engine_rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_averaged_products_give_the_single_process_hypergradient_on_all_data(tmp_path) -> None:
    mp.start_processes(engine_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, start_method="spawn")
    per_rank = [torch.load(tmp_path / f"engine_rank{rank}.pt") for rank in range(WORLD)]
    whole, _ = ridge_halves()
    for name, make_solver in SOLVERS.items():
        train_loss, val_loss, weights, log_decay = whole.losses_at_minimizer()
        (expected,) = hypergradient(train_loss, val_loss, [weights], [log_decay], make_solver())
        for rank in range(WORLD):
            assert relative_error(per_rank[rank][name][0], expected) <= 1e-10, (name, rank)
        # every process took the same decisions (CG's early stop, the Lanczos step size)
        assert per_rank[0][name][1:] == per_rank[1][name][1:]
    assert all(results["identical"] for results in per_rank)


def fit_on_two_processes(tmp_path, sync: str):
    L.seed_everything(0, verbose=False)
    callback = SavingCallback(
        str(tmp_path),
        solver=Neumann(iterations=5, alpha=0.5),
        hyper_optimizer=functools.partial(torch.optim.SGD, lr=0.5),
        every_n_steps=3,
        sync=sync,
        check_sync=True,
    )
    trainer = make_trainer([callback], max_epochs=1, strategy="ddp_spawn", devices=WORLD, deterministic=False)
    trainer.fit(small_classifier(), digits())
    first = [torch.load(tmp_path / f"first_rank{rank}.pt", weights_only=False) for rank in range(WORLD)]
    final = [torch.load(tmp_path / f"final_rank{rank}.pt", weights_only=False) for rank in range(WORLD)]
    return first, final


def assert_identical_replicas(final) -> None:
    assert final[0]["taken"] == final[1]["taken"] == 3  # 9 steps per process (540 examples, batches of 64)
    for (name, tensor), other in zip(final[0]["state"].items(), final[1]["state"].values()):
        assert torch.equal(tensor, other), f"{name} differs across processes"


def test_exact_sync_equals_one_process_on_the_concatenated_batches(tmp_path) -> None:
    first, final = fit_on_two_processes(tmp_path, sync="hvp")
    assert_identical_replicas(final)
    assert not torch.equal(first[0]["train_batch"][0], first[1]["train_batch"][0])  # each process has its shard
    model = small_classifier()
    model.load_state_dict(first[0]["state"])
    train_batch = [torch.cat(parts) for parts in zip(first[0]["train_batch"], first[1]["train_batch"])]
    validation_batch = [torch.cat(parts) for parts in zip(first[0]["validation_batch"], first[1]["validation_batch"])]
    model.eval()
    validation_loss = model.validation_loss(validation_batch)
    model.train()
    expected = hypergradient(
        model.training_loss(train_batch),
        validation_loss,
        model.weight_parameters(),
        model.hyperparameters(),
        Neumann(iterations=5, alpha=0.5),
    )
    for rank in range(WORLD):
        for applied, wanted in zip(first[rank]["applied"], expected):
            assert relative_error(applied, wanted) <= 1e-4


def test_cheap_sync_applies_the_mean_of_the_local_hypergradients(tmp_path) -> None:
    first, final = fit_on_two_processes(tmp_path, sync="hypergradient")
    assert_identical_replicas(final)
    for index in range(len(first[0]["applied"])):
        mean = (first[0]["hypergradients"][index] + first[1]["hypergradients"][index]) / 2
        assert not torch.equal(first[0]["hypergradients"][index], first[1]["hypergradients"][index])
        for rank in range(WORLD):
            torch.testing.assert_close(first[rank]["applied"][index], mean, rtol=1e-6, atol=0)


def test_helpers_are_identities_in_a_single_process() -> None:
    vector = (torch.ones(2), torch.zeros(3, dtype=torch.float64))
    assert world_size() == 1
    assert all_reduce_mean(vector) == vector
    assert identical_across_processes(list(vector))


def test_sharded_loaders_split_each_pass_between_processes() -> None:
    loader = DataLoader(TensorDataset(torch.arange(10)), batch_size=3, shuffle=True)
    shards = [shard_loader(loader, num_replicas=2, rank=rank) for rank in range(2)]
    seen = [torch.cat([batch[0] for batch in shard]).tolist() for shard in shards]
    assert sorted(seen[0] + seen[1]) == list(range(10)) and len(seen[0]) == len(seen[1]) == 5
    assert shard_loader(loader, num_replicas=1, rank=0) is loader


def sharded_strategies():
    from lightning.pytorch.strategies import FSDPStrategy

    # DeepSpeed needs its package to construct; a stand-in with its name exercises the same check.
    # ModelParallelStrategy (FSDP2) is supported: tests/lightning/test_sharded.py.
    return [FSDPStrategy(), type("DeepSpeedStrategy", (), {})()]


@pytest.mark.parametrize("strategy", sharded_strategies(), ids=lambda strategy: type(strategy).__name__)
def test_sharded_strategies_are_refused_at_setup(strategy) -> None:
    from types import SimpleNamespace

    # Lightning itself refuses FSDP on the CPU before any callback runs, so call setup with the strategy directly.
    trainer = SimpleNamespace(strategy=strategy)
    name = type(strategy).__name__
    with pytest.raises(ValueError, match=rf"does not support the {name} strategy.*Supported strategies: single device"):
        HypergradientCallback().setup(trainer, small_classifier(), "fit")


def test_plain_ddp_script_keeps_replicas_identical() -> None:
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[2] / "examples" / "ddp_digits.py"
    completed = subprocess.run(
        [sys.executable, str(script), "--max-steps", "60", "--sync", "hypergradient"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = re.findall(r"rank (\d): hypersteps taken (\d+), skipped (\d+), .* fingerprint (\S+)", completed.stdout)
    assert sorted(line[0] for line in lines) == ["0", "1"]
    assert len({line[1:] for line in lines}) == 1  # same counts and same fingerprint on both processes
    assert lines[0][1] == "2"


def seed_worker(worker_id: int) -> None:
    torch.manual_seed(worker_id)


def test_sharding_replaces_only_the_sampler() -> None:
    generator = torch.Generator().manual_seed(3)
    loader = DataLoader(
        TensorDataset(torch.arange(12.0)),
        batch_size=4,
        shuffle=True,
        num_workers=2,
        worker_init_fn=seed_worker,
        generator=generator,
        persistent_workers=True,
        prefetch_factor=3,
        timeout=5.0,
        drop_last=True,
    )
    shard = shard_loader(loader, num_replicas=2, rank=1)
    assert isinstance(shard.sampler, DistributedSampler) and shard.sampler.rank == 1 and shard.sampler.shuffle
    kept = ("worker_init_fn", "generator", "persistent_workers", "prefetch_factor", "timeout", "num_workers")
    for attribute in (*kept, "drop_last", "batch_size", "collate_fn", "dataset"):
        assert getattr(shard, attribute) is getattr(loader, attribute) or getattr(shard, attribute) == getattr(
            loader, attribute
        ), attribute


def test_strategies_and_sync_modes_pick_their_collectives_in_one_process() -> None:
    check_strategy(object())  # anything not sharding the weights is accepted
    assert product_averaging("hvp") is None  # one process: nothing to average
    parts = (torch.ones(2),)
    assert agree_on_hypergradients(parts, True, "hypergradient") == (parts, True)
