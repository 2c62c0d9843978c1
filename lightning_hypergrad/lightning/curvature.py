"""Advice when conjugate gradient keeps stopping at negative curvature: the Hessian is not positive definite.

CG solves ``H x = b`` only for a positive definite H. On a non-convex network (an MLP, a CNN) the training loss's
Hessian has negative eigenvalues at the weights it reaches, CG meets ``pᵀHp ≤ 0`` within a few iterations and
keeps the iterate built before it (``SolveStatus.NEGATIVE_CURVATURE``). One such stop is harmless; on most
hypersteps it means the hypergradient comes from the first CG steps only, whatever ``iterations`` says, and
nothing else would tell the user.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn

from lightning_hypergrad.engine.hypergradient import HypergradientWarning
from lightning_hypergrad.solvers.base import SolveStatus

MIN_HYPERSTEPS = 5  # solves seen before judging "most"


def negative_curvature_share(history: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """How many of the history's solves stopped at negative curvature, and how many solves ran."""
    statuses = [entry.get("solver_status") for entry in history]
    ran = [status for status in statuses if status not in (None, SolveStatus.NOT_RUN.value)]
    return sum(status == SolveStatus.NEGATIVE_CURVATURE.value for status in ran), len(ran)


def warn_once_if_mostly_negative_curvature(history: Sequence[dict[str, Any]], damping: float) -> bool:
    """Warn when at least half of at least ``MIN_HYPERSTEPS`` (5) solves stopped at negative curvature; returns
    True when it warned (once per fit is enough)."""
    stopped, ran = negative_curvature_share(history)
    if ran < MIN_HYPERSTEPS or 2 * stopped < ran:
        return False
    damped = f"raise damping (now {damping:g}) " if damping > 0 else "set damping=μ "
    rank_zero_warn(
        f"The solver stopped at negative curvature (pᵀHp ≤ 0) on {stopped} of {ran} hypersteps: the training loss's "
        "Hessian is not positive definite at these weights (a non-convex network), so conjugate gradient keeps only "
        "its first iterations and the hypergradient is that truncated estimate, whatever `iterations` says. "
        f"Either {damped}(CG then solves H + μI, positive definite once μ exceeds the most negative eigenvalue; "
        "a biased but stable hypergradient), or use Neumann() or Amortized(), whose truncated series needs no "
        "positive definiteness (docs/solvers.md).",
        category=HypergradientWarning,
    )
    return True
