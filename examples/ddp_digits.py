"""Tune per-weight decays on digits with two CPU processes under Lightning's plain DDP strategy.

Plain ``strategy="ddp"`` relaunches this script once per extra process, which is why it lives in a script and
not in a pytest test (tests use ``ddp_spawn``). Each process prints a fingerprint of its final hyperparameters
and weights; they must agree.

    python examples/ddp_digits.py [--sync hvp|hypergradient] [--max-steps 120]
"""

from __future__ import annotations

import argparse
import sys

import lightning as L
import torch

from lightning_hypergrad import HypergradientCallback
from lightning_hypergrad.data import DigitsDataModule
from lightning_hypergrad.solvers import Neumann
from lightning_hypergrad.tasks import WeightDecayClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sync", choices=["hvp", "hypergradient"], default="hvp")
    parser.add_argument("--max-steps", type=int, default=120)
    parser.add_argument("--devices", type=int, default=2)
    arguments = parser.parse_args()

    L.seed_everything(0, verbose=False)
    model = WeightDecayClassifier(decay_granularity="per_weight", initial_decay=1e-3)
    callback = HypergradientCallback(
        Neumann(iterations=20), every_n_steps=5, warmup_steps=50, sync=arguments.sync, check_sync=True
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=arguments.devices,
        strategy="ddp",
        max_steps=arguments.max_steps,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DigitsDataModule())
    fingerprint = sum(
        float(tensor.double().sum()) for tensor in model.state_dict().values() if tensor.is_floating_point()
    )
    validation_loss = float(trainer.callback_metrics["validation_loss"])
    # One write per line: print() writes the text and the newline separately, and the other process's line can
    # land in between when both share a pipe.
    sys.stdout.write(
        f"rank {trainer.global_rank}: hypersteps taken {callback.taken}, skipped {callback.skipped}, "
        f"validation loss {validation_loss:.4f}, state fingerprint {fingerprint:.10e}\n"
    )
    sys.stdout.flush()
    torch.distributed.barrier()


if __name__ == "__main__":
    main()
