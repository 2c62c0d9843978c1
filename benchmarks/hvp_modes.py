"""Hessian-vector products: reverse-over-reverse (what the library does) against forward-over-reverse.

Reverse-over-reverse builds the gradient's graph once (``create_graph=True``) and differentiates it again per
product. Forward-over-reverse pushes a tangent through the gradient (``torch.func.jvp`` of ``torch.func.grad``),
either re-running forward and backward per product (``jvp``) or linearising once and reusing it
(``torch.func.linearize``). Each computes K products on the same network, weights and vectors; the script
prints CPU (or, on a GPU, synchronised wall) milliseconds, the ratio to reverse-over-reverse and the largest
difference between the products. Networks: the default job's MLP 64-128-10 and the floor problem's
64-1024-1024-10 (``floor_problem.py``), one decay per weight, batch 64.
Run: python benchmarks/hvp_modes.py [--device cuda] [--products 20] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.func import functional_call, grad, jvp, linearize


def network(hidden: list[int]) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    widths = [64, *hidden]
    for inputs, outputs in zip(widths, widths[1:]):
        layers += [torch.nn.Linear(inputs, outputs), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(widths[-1], 10))


def timed(function: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        function()
        torch.cuda.synchronize(device)
        return time.perf_counter() - start
    start = time.process_time()
    function()
    return time.process_time() - start


def compare(hidden: list[int], device: torch.device, products: int, repeats: int) -> None:
    torch.manual_seed(0)
    model = network(hidden).to(device)
    weights = {name: parameter.detach() for name, parameter in model.named_parameters()}
    inputs, targets = torch.randn(64, 64, device=device), torch.randint(0, 10, (64,), device=device)
    decays = {name: torch.full_like(weight, 1e-3) for name, weight in weights.items()}
    vector = {name: torch.randn_like(weight) for name, weight in weights.items()}

    def loss(current: dict[str, torch.Tensor]) -> torch.Tensor:
        penalty = sum((0.5 * decays[name] * current[name] ** 2).sum() for name in current)
        return torch.nn.functional.cross_entropy(functional_call(model, current, (inputs,)), targets) + penalty

    leaves = {name: weight.clone().requires_grad_() for name, weight in weights.items()}

    def reverse_over_reverse() -> list[torch.Tensor]:
        gradient = torch.autograd.grad(loss(leaves), list(leaves.values()), create_graph=True)
        found = []
        for _ in range(products):
            found = torch.autograd.grad(gradient, list(leaves.values()), list(vector.values()), retain_graph=True)
        return list(found)

    def forward_over_reverse() -> list[torch.Tensor]:
        found: dict[str, torch.Tensor] = {}
        for _ in range(products):
            found = jvp(grad(loss), (weights,), (vector,))[1]
        return list(found.values())

    def linearised() -> list[torch.Tensor]:
        _, product = linearize(grad(loss), weights)
        found: dict[str, torch.Tensor] = {}
        for _ in range(products):
            found = product(vector)
        return list(found.values())

    cases = {
        "reverse-over-reverse": reverse_over_reverse,
        "forward-over-reverse (jvp)": forward_over_reverse,
        "forward-over-reverse (linearize)": linearised,
    }
    reference = reverse_over_reverse()
    scale = max(part.abs().max().item() for part in reference)
    differences = {
        name: max((a - b).abs().max().item() for a, b in zip(reference, function())) / scale
        for name, function in cases.items()
    }
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, function in cases.items():
            seconds[name].append(timed(function, device))
    size = sum(weight.numel() for weight in weights.values())
    print(f"\nMLP 64-{'-'.join(map(str, hidden))}-10 ({size:,} weights), {products} products, median of {repeats}")
    base = statistics.median(seconds["reverse-over-reverse"])
    for name in cases:
        median = statistics.median(seconds[name])
        print(
            f"{name:<34} {1000 * median:9.1f} ms {median / base:7.2f}× {differences[name]:12.1e} (relative difference)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--products", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device(arguments.device)
    for hidden in ([128], [1024, 1024]):
        compare(hidden, device, arguments.products, arguments.repeats)


if __name__ == "__main__":
    main()
