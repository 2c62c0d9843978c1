"""Inverse-Hessian-vector-product solvers: each approximates ``H⁻¹ b`` from Hessian-vector products."""

from lightning_hypergrad.solvers.amortized import Amortized
from lightning_hypergrad.solvers.base import HVP, IHVPSolver, SolveResult, SolveStatus
from lightning_hypergrad.solvers.conjugate_gradient import ConjugateGradient
from lightning_hypergrad.solvers.exact import Exact
from lightning_hypergrad.solvers.identity import Identity
from lightning_hypergrad.solvers.neumann import Neumann

__all__ = [
    "HVP",
    "Amortized",
    "ConjugateGradient",
    "Exact",
    "IHVPSolver",
    "Identity",
    "Neumann",
    "SolveResult",
    "SolveStatus",
]
