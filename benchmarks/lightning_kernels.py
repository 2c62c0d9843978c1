"""What the hyperstep's kernel choices cost and save (see ``lightning.losses.twice_differentiable_kernels``).

Side by side in one run, interleaved repetitions, medians, ratios only:

- attention (``nn.TransformerEncoder``, dropout 0): a training gradient with the default (fused flash) kernel
  against the math kernel the hyperstep uses, and a Hessian-vector product (math kernel) in units of the
  default-kernel gradient. The fused kernel has no double backward, so there is no fast HVP to compare with.
- LSTM (2 layers of 128 and of 650 units, 35 steps, batch 20): a Hessian-vector product with oneDNN on (torch's
  CPU default) against off (what hypersteps use), and the largest relative difference between the two (float32).

Run: python benchmarks/lightning_kernels.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from lightning_hypergrad.lightning.losses import twice_differentiable_kernels


def median_seconds(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def gradient(model: nn.Module, loss: Callable[[], Tensor]) -> tuple[Tensor, ...]:
    return torch.autograd.grad(loss(), list(model.parameters()))


def hvp(model: nn.Module, loss: Callable[[], Tensor], direction: list[Tensor]) -> tuple[Tensor, ...]:
    parameters = list(model.parameters())
    first = torch.autograd.grad(loss(), parameters, create_graph=True)
    return torch.autograd.grad(first, parameters, direction)


def attention(repeats: int) -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    inputs = torch.randn(16, 32, 64)

    def loss() -> Tensor:
        return model(inputs).pow(2).mean()

    direction = [torch.randn_like(p) for p in model.parameters()]

    def math_gradient() -> object:
        with sdpa_kernel(SDPBackend.MATH):
            return gradient(model, loss)

    def math_hvp() -> object:
        with sdpa_kernel(SDPBackend.MATH):
            return hvp(model, loss, direction)

    times = median_seconds({"default": lambda: gradient(model, loss), "math": math_gradient, "hvp": math_hvp}, repeats)
    print(f"attention: math-kernel gradient / default-kernel gradient = {times['math'] / times['default']:.2f}")
    print(f"attention: HVP (math kernel) / default-kernel gradient = {times['hvp'] / times['default']:.2f}")


def lstm(width: int, repeats: int) -> None:
    torch.manual_seed(0)
    model = nn.LSTM(width, width, num_layers=2, batch_first=True)
    inputs = torch.randn(20, 35, width)

    def loss() -> Tensor:
        return model(inputs)[0].pow(2).mean()

    direction = [torch.randn_like(p) for p in model.parameters()]

    def without_onednn() -> tuple[Tensor, ...]:
        with twice_differentiable_kernels(model):  # what hypersteps use
            return hvp(model, loss, direction)

    def with_onednn() -> tuple[Tensor, ...]:
        return hvp(model, loss, direction)

    fast, slow = without_onednn(), with_onednn()
    scale = max(float(part.abs().max()) for part in slow)
    difference = max(float((a - b).abs().max()) for a, b in zip(fast, slow)) / scale
    times = median_seconds({"onednn": with_onednn, "native": without_onednn}, repeats)
    print(f"lstm 2x{width}: HVP with oneDNN / HVP without = {times['onednn'] / times['native']:.2f}")
    print(f"lstm 2x{width}: largest HVP difference, relative to the largest entry = {difference:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    attention(arguments.repeats)
    lstm(128, arguments.repeats)
    lstm(650, max(3, arguments.repeats // 2))


if __name__ == "__main__":
    main()
