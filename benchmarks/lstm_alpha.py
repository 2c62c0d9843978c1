"""Is ``Neumann(alpha="auto")`` safe on an LSTM language model? The Lanczos λ_max estimate against long runs.

``alpha="auto"`` takes α = 1/θ, θ the largest Ritz value after ``lanczos_steps`` (10) Lanczos steps started
from the validation gradient b; the series converges only if α·λ_max(H) < 2 and H has no negative eigenvalue
of note. On an LSTM language model (embedding → 2-layer LSTM → decoder, one weight decay per weight, trained
briefly with Adam on a random Markov text), prints θ after 10 steps from b (what ``auto`` uses), the extreme
Ritz values after many steps from b and from a random start, the ratio λ_max/θ (≥ 2 means ``auto`` diverges),
and what ``Neumann()`` (the default) reports on the system. Run: python benchmarks/lstm_alpha.py [--hidden 200]
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn

from lightning_hypergrad.hparams import WeightDecay
from lightning_hypergrad.lightning.losses import twice_differentiable_kernels
from lightning_hypergrad.solvers import Neumann
from lightning_hypergrad.solvers.lanczos import extreme_eigenvalues


class LanguageModel(nn.Module):
    def __init__(self, vocabulary: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, hidden)
        self.lstm = nn.LSTM(hidden, hidden, num_layers=layers, batch_first=True)
        self.decoder = nn.Linear(hidden, vocabulary)

    def forward(self, ids: Tensor) -> Tensor:
        return self.decoder(self.lstm(self.embedding(ids))[0])


def markov_text(vocabulary: int, length: int, seed: int) -> Tensor:
    """Ids from a random sparse Markov chain (each word has 5 likely successors)."""
    generator = torch.Generator().manual_seed(seed)
    successors = torch.randint(vocabulary, (vocabulary, 5), generator=generator)
    ids = [0]
    for _ in range(length - 1):
        if torch.rand((), generator=generator) < 0.9:
            ids.append(int(successors[ids[-1], torch.randint(5, (), generator=generator)]))
        else:
            ids.append(int(torch.randint(vocabulary, (), generator=generator)))
    return torch.tensor(ids)


def batch_of(text: Tensor, batch: int, steps: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    starts = torch.randint(len(text) - steps - 1, (batch,), generator=generator)
    windows = torch.stack([text[start : start + steps + 1] for start in starts])
    return windows[:, :-1], windows[:, 1:]


def cross_entropy(model: LanguageModel, batch: tuple[Tensor, Tensor]) -> Tensor:
    logits = model(batch[0])
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[1].reshape(-1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocabulary", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--long-steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=20)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = LanguageModel(arguments.vocabulary, arguments.hidden, arguments.layers)
    weights = list(model.parameters())
    decay = WeightDecay([w.shape for w in weights], granularity="per_weight", initial=1e-4)
    text, generator = markov_text(arguments.vocabulary, 50_000, seed=1), torch.Generator().manual_seed(2)
    optimizer = torch.optim.Adam(weights, lr=2e-3)
    for step in range(arguments.train_steps + 1):
        loss = cross_entropy(model, batch_of(text, arguments.batch, 35, generator)) + decay(weights)
        if step % 50 == 0:
            print(f"training step {step}: loss {float(loss.detach()):.3f}", flush=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    train_batch, validation_batch = (
        batch_of(text, arguments.batch, 35, generator),
        batch_of(text, arguments.batch, 35, generator),
    )
    with twice_differentiable_kernels(model):
        gradients = torch.autograd.grad(cross_entropy(model, train_batch) + decay(weights), weights, create_graph=True)
        b = torch.autograd.grad(cross_entropy(model, validation_batch), weights)

        def hvp(vector):
            return torch.autograd.grad(gradients, weights, vector, retain_graph=True)

        theta = float(extreme_eigenvalues(hvp, b, 10)[1])
        low_b, high_b = (float(x) for x in extreme_eigenvalues(hvp, b, arguments.long_steps))
        start = [torch.randn_like(w) for w in weights]
        low_r, high_r = (float(x) for x in extreme_eigenvalues(hvp, start, arguments.long_steps))
        result = Neumann().solve(hvp, b)
    largest = max(high_b, high_r)
    print(f"weights: {sum(w.numel() for w in weights):,}")
    print(f"alpha='auto': theta after 10 Lanczos steps from b = {theta:.4g} (alpha = {1 / theta:.4g})")
    print(f"{arguments.long_steps} steps from b: Ritz values [{low_b:.4g}, {high_b:.4g}]")
    print(f"{arguments.long_steps} steps from a random start: Ritz values [{low_r:.4g}, {high_r:.4g}]")
    print(f"lambda_max / theta = {largest / theta:.2f} (>= 2: alpha='auto' diverges along the top eigenvector)")
    growth = float(result.residual_norm) / float(sum(part.pow(2).sum() for part in b).sqrt())
    print(f"Neumann() on this system: {result.status.value}, final/initial residual {growth:.3g}")
    if low_b < 0:
        factor = 1 - low_b / theta
        print(f"along the most negative Ritz value each term grows by 1 - alpha*lambda_min = {factor:.3g}")


if __name__ == "__main__":
    main()
