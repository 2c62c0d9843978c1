"""Lanczos estimates of a symmetric operator's extreme eigenvalues from Hessian-vector products."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_hypergrad import vectors
from lightning_hypergrad.solvers.base import HVP, apply_hvp


def extreme_eigenvalues(hvp: HVP, start: Sequence[Tensor], steps: int) -> tuple[Tensor, Tensor]:
    """Estimates of H's smallest and largest eigenvalues along ``start``, by ``steps`` Lanczos steps.

    The Lanczos recurrence ``β_{j+1} q_{j+1} = H q_j − α_j q_j − β_j q_{j−1}`` builds an orthonormal basis of
    the Krylov space ``span{b, Hb, …, H^{k−1}b}`` in which H is the tridiagonal ``T`` of the α's and β's; the
    extreme eigenvalues of ``T`` (Ritz values) lie inside H's spectrum and converge to its extremes. Only
    three vectors are kept (no reorthogonalisation: lost orthogonality only repeats converged Ritz values).
    Returns two 0-dim tensors on the vectors' device; nothing waits for the host.
    """
    start = tuple(start)
    norm = vectors.norm(start)
    tiny = torch.finfo(norm.dtype).tiny
    current = vectors.scale(start, 1.0 / norm.clamp_min(tiny))
    previous = vectors.zeros_like(current)
    beta = torch.zeros_like(norm)
    diagonal, off_diagonal = [], []
    for _ in range(steps):
        product = vectors.add_scaled(apply_hvp(hvp, current), -beta, previous)
        alpha = vectors.dot(product, current)
        product = vectors.add_scaled(product, -alpha, current)
        beta = vectors.norm(product)
        diagonal.append(alpha)
        off_diagonal.append(beta)
        # An invariant subspace (β = 0) ends the recurrence; later steps then add exact zeros to T.
        previous, current = current, vectors.scale(product, 1.0 / beta.clamp_min(tiny))
    tridiagonal = torch.diag(torch.stack(diagonal))
    if steps > 1:
        couplings = torch.stack(off_diagonal[:-1])
        tridiagonal = tridiagonal + torch.diag(couplings, 1) + torch.diag(couplings, -1)
    ritz_values = torch.linalg.eigvalsh(tridiagonal)
    return ritz_values[0], ritz_values[-1]
