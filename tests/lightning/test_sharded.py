"""Hypersteps under ModelParallelStrategy (FSDP2 ``fully_shard``) on 2 gloo CPU processes, in one spawn: exact
hypergradients, the same λ as DDP under both sync modes, a NaN product skipped everywhere, a checkpoint round trip."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp
from torch.distributed.tensor import DTensor

from lightning_hypergrad import HypergradientCallback, hypergradient
from lightning_hypergrad.lightning import distributed, sharding
from lightning_hypergrad.solvers import Neumann
from tests.helpers import relative_error
from tests.lightning.sharded_helpers import ShardedRegression, fit, full_hyperparameters
from tests.lightning.test_distributed import free_port

WORLD = 2


def nan_products(average):
    """An average that puts NaN into this process's products (not the validation gradient) on rank 1."""
    calls = []

    def poisoned(vector):
        calls.append(1)
        parts = tuple(vector)
        if len(calls) > 1 and torch.distributed.get_rank() == 1:
            parts = tuple(part * float("nan") for part in parts)
        return average(parts)

    return poisoned


def fault_run(directory: str) -> dict:
    trainer, callback = fit("model_parallel", "hvp", steps=2)
    module = trainer.lightning_module
    before = {name: (type(p), p.to_local().clone()) for name, p in module.named_parameters()}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(distributed, "all_reduce_mean", nan_products(distributed.all_reduce_mean))
        batch = next(iter(trainer.train_dataloader))
        applied = callback.hyperstep(trainer, module, batch)
    try:
        with sharding.unsharded(module):
            raise RuntimeError("a product failed")
    except RuntimeError:
        pass
    after = {name: (type(p), p.to_local().clone()) for name, p in module.named_parameters()}
    unchanged = all(before[name][0] is DTensor is after[name][0] for name in before) and all(
        torch.equal(before[name][1], after[name][1]) for name in before
    )
    return {"applied": applied, "skipped": callback.skipped, "unchanged": unchanged}


def checkpoint_run(directory: str) -> dict:
    options = {"hyper_optimizer": lambda params: torch.optim.Adam(params, lr=1e-2), "warm_start": True}
    trainer, callback = fit("model_parallel", "hvp", steps=4, **options)
    path = os.path.join(directory, "sharded.ckpt")
    trainer.save_checkpoint(path)
    saved = callback.state_dict()
    resumed_trainer, resumed = fit("model_parallel", "hvp", steps=4, ckpt_path=path, **options)
    restored = resumed.state_dict()
    return {
        "taken": (saved["taken"], restored["taken"]),
        "warm": (saved["warm_start_solution"], restored["warm_start_solution"]),
        "adam": (saved["hyper_optimizer"]["state"], restored["hyper_optimizer"]["state"]),
        "lambda": (
            full_hyperparameters(trainer.lightning_module),
            full_hyperparameters(resumed_trainer.lightning_module),
        ),
        "directory": os.path.isdir(path),
    }


def worker(rank: int, port: int, directory: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK=str(rank)
    )
    os.environ.update(NODE_RANK="0", SHARDED_TEST_DIR=directory)
    results = {}
    for strategy in ("model_parallel", "ddp"):
        for sync in ("hvp", "hypergradient"):
            trainer, callback = fit(strategy, sync)
            results[strategy, sync] = {
                "first": callback.first,
                "lambda": full_hyperparameters(trainer.lightning_module),
                "taken": callback.taken,
                "sharded": all(isinstance(p, DTensor) for p in trainer.lightning_module.parameters()),
            }
    trainer, _ = fit("model_parallel", "hvp", keep_hyperparameters_out=True)
    module = trainer.lightning_module
    results["ignored"] = {
        "lambda": full_hyperparameters(module),
        "plain": [type(parameter) for parameter in module.hyperparameters()],
    }
    results["fault"] = fault_run(directory)
    results["checkpoint"] = checkpoint_run(directory)
    torch.save(results, f"{directory}/rank{rank}.pt")


@pytest.fixture(scope="module")
def per_rank(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sharded")
    mp.start_processes(worker, args=(free_port(), str(directory)), nprocs=WORLD, start_method="spawn")
    return [torch.load(directory / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD)]


def test_sharded_hypergradient_equals_one_process_on_the_concatenated_batches(per_rank) -> None:
    firsts = [results["model_parallel", "hvp"]["first"] for results in per_rank]
    model = ShardedRegression()
    model.load_state_dict(firsts[0]["state"], strict=False)
    train, validation = ([torch.cat(parts) for parts in zip(*(f["batches"][i] for f in firsts))] for i in (0, 1))
    assert not torch.equal(firsts[0]["batches"][0][0], firsts[1]["batches"][0][0])  # each process has its share
    expected = hypergradient(
        model.training_loss(train),
        model.validation_loss(validation),
        model.weight_parameters(),
        model.hyperparameters(),
        Neumann(iterations=5, alpha=0.05),
    )
    for first in firsts:
        for local, wanted in zip(first["local"], expected):
            assert relative_error(local, wanted) <= 1e-10


@pytest.mark.parametrize("sync", ["hvp", "hypergradient"])
def test_sharded_fit_gives_the_lambda_of_the_ddp_fit_on_every_process(per_rank, sync) -> None:
    for results in per_rank:
        sharded, ddp = results["model_parallel", sync], results["ddp", sync]
        assert sharded["taken"] == ddp["taken"] == 3 and sharded["sharded"] and not ddp["sharded"]
        assert ddp["lambda"][0].abs().max() > 1e-3  # λ moved
        for mine, theirs in zip(sharded["lambda"], ddp["lambda"]):
            assert relative_error(mine, theirs) <= 1e-6
    for mine, theirs in zip(
        per_rank[0]["model_parallel", sync]["lambda"], per_rank[1]["model_parallel", sync]["lambda"]
    ):
        assert torch.equal(mine, theirs)


def test_hyperparameters_kept_out_of_fully_shard_give_the_same_lambda(per_rank) -> None:
    for results in per_rank:
        assert results["ignored"]["plain"] == [torch.nn.Parameter] * 2  # not DTensors: ignored_params kept them
        for mine, theirs in zip(results["ignored"]["lambda"], results["ddp", "hvp"]["lambda"]):
            assert relative_error(mine, theirs) <= 1e-6


def test_a_nan_product_under_fsdp_is_skipped_on_every_process_and_leaves_parameters_sharded(per_rank) -> None:
    for results in per_rank:
        assert results["fault"] == {"applied": False, "skipped": 1, "unchanged": True}


def test_the_callback_state_round_trips_through_the_sharded_checkpoint(per_rank) -> None:
    for results in per_rank:
        state = results["checkpoint"]
        assert state["directory"]  # ModelParallelStrategy wrote its sharded (directory) checkpoint
        assert state["taken"] == (2, 2)
        saved, restored = state["warm"]
        assert saved.keys() == restored.keys() and len(saved) == 4
        assert all(torch.equal(saved[name], restored[name]) for name in saved)
        for key, moments in state["adam"][0].items():
            for name, value in moments.items():
                assert torch.equal(sharding.full(value), sharding.full(state["adam"][1][key][name])), name
        assert all(torch.equal(a, b) for a, b in zip(*state["lambda"]))


def test_deepspeed_and_fsdp1_are_refused_naming_the_supported_strategies() -> None:
    from types import SimpleNamespace

    from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

    for strategy in (type("DeepSpeedStrategy", (), {})(), FSDPStrategy()):
        name = type(strategy).__name__
        with pytest.raises(ValueError, match=rf"{name} strategy.*Supported strategies: .*ModelParallelStrategy"):
            HypergradientCallback().setup(SimpleNamespace(strategy=strategy), ShardedRegression(), "fit")
    distributed.check_strategy(ModelParallelStrategy())  # accepted
