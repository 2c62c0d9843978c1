"""GPU check for mixed precision: hyperstep time, peak memory and agreement with float32, per precision.

Trains the default job's per-weight-decay MLP (wider, so the GPU has work) under each precision, timing every
hyperstep and keeping the hyperstep's own loss scale (``16-mixed`` only), then compares the hypergradient
computed under that precision with the float32 one at the same weights and batches. Prints one table. Meant for
one GPU, well under 5 minutes:

    python benchmarks/gpu_check.py                  # cuda
    python benchmarks/gpu_check.py --accelerator cpu --epochs 2   # a smoke run without a GPU
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision

from lightning_hypergrad import HypergradientCallback
from lightning_hypergrad.data import DigitsDataModule
from lightning_hypergrad.models import MLPClassifier
from lightning_hypergrad.solvers import Neumann
from lightning_hypergrad.tasks import WeightDecayClassifier


class TimedCallback(HypergradientCallback):
    """Records the wall time of every hyperstep, synchronising the device around it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seconds: list[float] = []

    def hyperstep(self, trainer, module, batch):
        synchronize(module.device)
        start = time.perf_counter()
        applied = super().hyperstep(trainer, module, batch)
        synchronize(module.device)
        self.seconds.append(time.perf_counter() - start)
        return applied


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plugin_for(precision: str, device: str):
    if precision == "32-true":
        return Precision()
    if precision == "16-mixed" and device == "cpu":
        return MixedPrecision("bf16-mixed", "cpu")  # what Lightning does with 16-mixed on the CPU
    return MixedPrecision(precision, device, scaler=torch.amp.GradScaler(device) if precision == "16-mixed" else None)


def run(precision: str, accelerator: str, epochs: int) -> dict[str, float]:
    L.seed_everything(0, verbose=False)
    model = WeightDecayClassifier(
        network=MLPClassifier(hidden=(1024, 1024)), decay_granularity="per_weight", initial_decay=1e-3
    )
    callback = TimedCallback(Neumann(iterations=20), every_n_steps=5, warmup_steps=50)
    data = DigitsDataModule(batch_size=64)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_epochs=epochs,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    if accelerator == "gpu":
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(model, data)
    peak = torch.cuda.max_memory_allocated() / 2**20 if accelerator == "gpu" else float("nan")

    device = "cuda" if accelerator == "gpu" else "cpu"
    train_batch = [t.to(model.device) for t in next(iter(data.train_dataloader()))]
    validation_batch = [t.to(model.device) for t in next(iter(data.hyper_dataloader()))]
    probe = HypergradientCallback(Neumann(iterations=20, alpha=0.05))

    def flat_hypergradient(plugin) -> torch.Tensor:
        trainer_view = SimpleNamespace(precision_plugin=plugin, optimizers=[], global_step=0)
        result = probe.compute_hypergradient(trainer_view, model, train_batch, validation_batch)
        return torch.cat([part.reshape(-1).float() for part in result.hypergradients])

    reference = flat_hypergradient(Precision())
    reduced = flat_hypergradient(plugin_for(precision, device))
    cosine = float(torch.nn.functional.cosine_similarity(reduced.double(), reference.double(), dim=0))
    steps = callback.seconds[1:] or callback.seconds  # the first includes warm-up kernels
    return {
        "hyperstep_ms": 1000 * sum(steps) / max(1, len(steps)),
        "peak_mib": peak,
        "cosine_to_fp32": cosine,
        "taken": callback.taken,
        "skipped": callback.skipped,
        "loss_scale": callback.loss_scale.scale,  # the hyperstep's own, under 16-mixed; None elsewhere
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accelerator", default="gpu", choices=["gpu", "cpu"])
    parser.add_argument("--epochs", type=int, default=10)
    arguments = parser.parse_args()
    if arguments.accelerator == "gpu" and not torch.cuda.is_available():
        raise SystemExit("No CUDA device; pass --accelerator cpu for a smoke run.")
    print(f"device: {torch.cuda.get_device_name() if arguments.accelerator == 'gpu' else 'cpu'}")
    header = f"{'precision':>11} {'hyperstep ms':>13} {'peak MiB':>9} {'cos to fp32':>12} {'taken':>6} {'skipped':>8}"
    print(f"{header} {'hyper scale':>12}")
    baseline = None
    for precision in ("32-true", "bf16-mixed", "16-mixed"):
        row = run(precision, arguments.accelerator, arguments.epochs)
        baseline = baseline or row["hyperstep_ms"]
        print(
            f"{precision:>11} {row['hyperstep_ms']:13.1f} {row['peak_mib']:9.1f} {row['cosine_to_fp32']:12.5f} "
            f"{row['taken']:6d} {row['skipped']:8d} {row['loss_scale'] or '-':>12}"
            f"   (time ratio to 32-true: {row['hyperstep_ms'] / baseline:.2f})"
        )


if __name__ == "__main__":
    main()
