"""Lanczos estimates of a symmetric operator's extreme eigenvalues from Hessian-vector products."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_hypergrad.engine import vectors
from lightning_hypergrad.engine.vectors import Vector
from lightning_hypergrad.solvers.base import HVP
from lightning_hypergrad.solvers.plumbing import apply_hvp

BREAKDOWN_TOLERANCE = 64  # β below this many ulps of ‖H q_j‖ means q_j spans an invariant subspace


def extreme_eigenvalues(hvp: HVP, start: Sequence[Tensor], steps: int) -> tuple[Tensor, Tensor]:
    """Estimates of H's smallest and largest eigenvalues along ``start``, by ``steps`` Lanczos steps.

    The Lanczos recurrence ``β_{j+1} q_{j+1} = H q_j − α_j q_j − β_j q_{j−1}`` builds an orthonormal basis of
    the Krylov space ``span{b, Hb, …, H^{k−1}b}`` in which H is the tridiagonal ``T`` of the α's and β's; the
    extreme eigenvalues of ``T`` (Ritz values) lie inside H's spectrum and converge to its extremes. Only
    two vectors and the product are kept (no reorthogonalisation: lost orthogonality only repeats converged Ritz values).

    A breakdown (β ≈ 0: the start lies in an invariant subspace, e.g. on an eigenvector) ends the recurrence;
    the remaining steps repeat ``α_0``, the Rayleigh quotient of the start, which lies between the Ritz values
    already found, so both estimates stay inside the spectrum. Returns two 0-dim tensors on the vectors'
    device; nothing waits for the host. Non-finite products give NaN estimates, never an exception; a zero
    start gives ``(0, 0)`` (the recurrence breaks down at once on ``H·0 = 0``).
    """
    start = tuple(start)
    norm = vectors.norm(start)
    tiny = torch.finfo(norm.dtype).tiny
    eps = torch.finfo(norm.dtype).eps
    current = vectors.scale(start, 1.0 / norm.clamp_min(tiny))
    previous: Vector = ()  # q_{-1}, which the first step multiplies by β_0 = 0
    beta = torch.zeros_like(norm)
    finite = torch.isfinite(norm)
    broken = torch.zeros((), dtype=torch.bool, device=norm.device)
    diagonal: list[Tensor] = []
    off_diagonal: list[Tensor] = []
    for _ in range(steps):
        product = apply_hvp(hvp, current)  # the caller's own: updated in place into q_{j+1}
        if previous:
            vectors.add_scaled_(product, -beta, previous)
        alpha = vectors.dot(product, current)
        vectors.add_scaled_(product, -alpha, current)
        beta = vectors.norm(product)
        finite = finite & torch.isfinite(alpha) & torch.isfinite(beta)
        diagonal.append(torch.where(broken, diagonal[0], alpha) if diagonal else alpha)
        # ‖H q_j − β_j q_{j−1}‖² = α_j² + β_{j+1}² (an orthogonal split): the breakdown test needs no extra pass.
        broken = broken | (beta <= BREAKDOWN_TOLERANCE * eps * (alpha.square() + beta.square()).sqrt())
        off_diagonal.append(torch.where(broken, torch.zeros_like(beta), beta))
        # After a breakdown q_{j+1} would be rounding noise blown up by 1/β: continue with zero vectors instead.
        inverse = torch.where(broken, torch.zeros_like(beta), 1.0 / beta.clamp_min(tiny))
        previous, current = current, vectors.scale_(product, inverse)
    tridiagonal = torch.diag(torch.stack(diagonal))
    if steps > 1:
        couplings = torch.stack(off_diagonal[:-1])
        tridiagonal = tridiagonal + torch.diag(couplings, 1) + torch.diag(couplings, -1)
    # eigvalsh raises on NaN: decompose a finite stand-in, then report NaN.
    ritz_values = torch.linalg.eigvalsh(torch.where(finite, tridiagonal, torch.zeros_like(tridiagonal)))
    not_a_number = torch.full_like(ritz_values[0], float("nan"))
    return torch.where(finite, ritz_values[0], not_a_number), torch.where(finite, ritz_values[-1], not_a_number)
