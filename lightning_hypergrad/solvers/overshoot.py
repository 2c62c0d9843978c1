"""The Neumann series' proof of overshoot: a Ritz value of ``I − αH`` below −1, from inner products it already has."""

from __future__ import annotations

import torch
from torch import Tensor

RITZ_MARGIN = 1e-2  # a Ritz value of I − αH below −(1 + this) proves αλ > 2 for some λ along b
PARALLEL_LIMIT = 1e-2  # 1 − cos² between the last two terms below this: their 2-D Ritz values are rounding noise


def smallest_ritz_value(moments: list[tuple[Tensor, Tensor]], alpha: float) -> Tensor:
    """The smallest Ritz value of ``M = I − αH`` on the span of the checked terms, from their moments alone.

    With ``t_{j+1} = M t_j`` and M symmetric, every inner product needed is known: ``t_jᵀ t_{j+1} = ‖t_j‖² −
    α t_jᵀHt_j`` and ``t_jᵀ M t_{j+1} = ‖t_{j+1}‖²``. The 2×2 pencil ``(G1, G0)`` of the last two terms is
    solved in closed form in float64; when those terms are nearly parallel only their Rayleigh quotients count.
    """
    (squared_first, curvature_first), *rest = [(s.double(), c.double()) for s, c in moments]
    tiny = torch.finfo(torch.float64).tiny
    first = 1 - alpha * curvature_first / squared_first.clamp_min(tiny)  # Rayleigh quotient of M at t_{K−2}
    if not rest:
        return torch.where(squared_first > 0, first, 0)
    squared_second, curvature_second = rest[0]
    second = 1 - alpha * curvature_second / squared_second.clamp_min(tiny)
    # Normalised: G0 = [[1, r], [r, 1]], G1 = [[first, o], [o, second]].
    scale = (squared_first * squared_second).sqrt().clamp_min(tiny)
    r = first * squared_first / scale
    o = squared_second / scale
    a, b, c = 1 - r**2, first + second - 2 * o * r, first * second - o**2
    pair = (b - (b**2 - 4 * a * c).clamp_min(0).sqrt()) / (2 * a.clamp_min(tiny))
    smallest = torch.minimum(first, second)
    smallest = torch.where(a > PARALLEL_LIMIT, torch.minimum(smallest, pair), smallest)
    return torch.where((squared_first > 0) & (squared_second > 0), smallest, 0)
