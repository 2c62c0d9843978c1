"""The problem the floor benchmarks share: MLP 64-1024-1024-10 on digits with one weight decay per weight.

Not a benchmark itself: ``hypergradient_cost.py`` and ``hypergradient_memory.py`` import it, so that both
measure the library against the same bare autograd floor.
"""

from __future__ import annotations

import torch

from lightning_hypergrad.data import split_digits

WIDTH = 1024  # about 1.13 M weights, 4.3 MiB per float32 vector


class FloorProblem:
    """Weights, one log-decay per weight, a training and a validation batch of 64 digits."""

    def __init__(self, device: torch.device, width: int = WIDTH) -> None:
        torch.manual_seed(0)
        self.network = torch.nn.Sequential(
            torch.nn.Linear(64, width),
            torch.nn.Tanh(),
            torch.nn.Linear(width, width),
            torch.nn.Tanh(),
            torch.nn.Linear(width, 10),
        ).to(device)
        self.weights = list(self.network.parameters())
        # Decay e^0.5 keeps H positive definite at the random start (CE alone has λ_min ≈ −1 there), so CG runs all its K products.
        self.log_decays = [torch.full_like(w, 0.5, requires_grad=True) for w in self.weights]
        split = split_digits()
        self.train_batch = (split.train_inputs[:64].to(device), split.train_targets[:64].to(device))
        self.val_batch = (split.val_inputs[:64].to(device), split.val_targets[:64].to(device))

    @property
    def vector_mib(self) -> float:
        return sum(w.numel() for w in self.weights) * 4 / 2**20

    def logits(self, inputs: torch.Tensor, weights: list[torch.Tensor] | None) -> torch.Tensor:
        if weights is None:
            return self.network(inputs)
        names = [name for name, _ in self.network.named_parameters()]
        return torch.func.functional_call(self.network, dict(zip(names, weights)), (inputs,))

    def train_loss(self, weights: list[torch.Tensor] | None = None) -> torch.Tensor:
        inputs, targets = self.train_batch
        used = self.weights if weights is None else weights
        penalty = sum((0.5 * d.exp() * w.pow(2)).sum() for d, w in zip(self.log_decays, used))
        return torch.nn.functional.cross_entropy(self.logits(inputs, weights), targets) + penalty

    def val_loss(self, weights: list[torch.Tensor] | None = None) -> torch.Tensor:
        inputs, targets = self.val_batch
        return torch.nn.functional.cross_entropy(self.logits(inputs, weights), targets)

    def floor(
        self, products: int, train_loss: torch.Tensor | None = None, val_loss: torch.Tensor | None = None
    ) -> None:
        """The least any implicit hypergradient must do: v = ∂L_V/∂w, g = ∂L_T/∂w with its graph, ``products``
        Hessian-vector products through it, and one mixed product ∂(gᵀp)/∂λ, in bare autograd.

        Without losses it builds its own and drops them as soon as it can (their forward graphs outside g's
        graph are freed early); with the caller's losses, whose graphs the caller keeps, it is the floor of any
        function that takes loss tensors, as ``hypergradient`` does."""
        held = train_loss is not None
        val_loss = self.val_loss() if val_loss is None else val_loss
        vector = torch.autograd.grad(val_loss, self.weights, retain_graph=held)
        del val_loss
        train_loss = self.train_loss() if train_loss is None else train_loss
        gradient = torch.autograd.grad(train_loss, self.weights, create_graph=True)
        del train_loss
        for _ in range(products):
            vector = torch.autograd.grad(gradient, self.weights, vector, retain_graph=True)
        torch.autograd.grad(gradient, self.log_decays, vector)

    def bare_neumann(self, products: int, alpha: float) -> None:
        """The truncated Neumann hypergradient written directly in autograd: the floor plus the series' own work
        (the running sum and one update per term), with no library code, for comparison."""
        vector = torch.autograd.grad(self.val_loss(), self.weights)
        gradient = torch.autograd.grad(self.train_loss(), self.weights, create_graph=True)
        term, total = vector, tuple(alpha * part for part in vector)
        for _ in range(products):
            product = torch.autograd.grad(gradient, self.weights, term, retain_graph=True)
            term = tuple(part.sub(change, alpha=alpha) for part, change in zip(term, product))
            del product
            for running, part in zip(total, term):
                running.add_(part, alpha=alpha)
        torch.autograd.grad(gradient, self.log_decays, total)

    def bare_conjugate_gradient(self, products: int) -> None:
        """Conjugate gradient written directly in autograd (x, r, p updated in place, no checks), for comparison."""
        vector = torch.autograd.grad(self.val_loss(), self.weights)
        gradient = torch.autograd.grad(self.train_loss(), self.weights, create_graph=True)
        solution = [torch.zeros_like(part) for part in vector]
        residual, direction = list(vector), [part.clone() for part in vector]
        del vector
        squared = sum(torch.dot(part.view(-1), part.view(-1)) for part in residual)
        for _ in range(products):
            product = torch.autograd.grad(gradient, self.weights, direction, retain_graph=True)
            step = squared / sum(torch.dot(p.view(-1), q.view(-1)) for p, q in zip(direction, product))
            for x, r, p, q in zip(solution, residual, direction, product):
                x.addcmul_(p, step)
                r.addcmul_(q, -step)
            del product
            new_squared = sum(torch.dot(part.view(-1), part.view(-1)) for part in residual)
            for p, r in zip(direction, residual):
                torch.addcmul(r, p, new_squared / squared, out=p)
            squared = new_squared
        torch.autograd.grad(gradient, self.log_decays, solution)
