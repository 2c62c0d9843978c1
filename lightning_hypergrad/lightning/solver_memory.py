"""What one hyperstep's solve leaves to the next, tied to the weights by parameter name, never by position.

Two things outlive a solve: the warm start (the previous solution, one vector per weight tensor) and the solver's
own state (conjugate gradient's preconditioner basis, Neumann's λ_max estimate), built on the weights that were
trainable then. When the trainable weights change — a backbone unfrozen mid-fit, as Lightning's
``BackboneFinetuning`` does, or a checkpoint resumed into a module that trains other weights — pairing either with
today's weights by position would crash the solve or, where shapes happen to agree, start it from vectors of other
weights. So both are keyed by the weights' names and shapes (their *layout*): on any difference the next solve
starts cold and the solver's state is reset (:meth:`~lightning_hypergrad.solvers.IHVPSolver.reset_state`), with
one rank-zero info line in the log. That is an expected event, not a fault, so it is no warning.

Checkpoints from before names were kept hold the warm start as a positional list and no layout: the list is used
while it still matches today's weights part by part in shape, else dropped (with a note); their solver state is
kept, and conjugate gradient rebuilds a basis whose shapes no longer fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from lightning_hypergrad.solvers import IHVPSolver

Layout = tuple[tuple[str, tuple[int, ...]], ...]
LISTED_NAMES = 4  # a note lists this many changed names, then counts the rest


def layout_of(named_weights: Sequence[tuple[str, Tensor]]) -> Layout:
    """The weights' names and shapes, in order: what a warm start and a solver's state are built on."""
    return tuple((name, tuple(weight.shape)) for name, weight in named_weights)


def describe_change(before: Layout, after: Layout) -> str:
    """Which names became trainable, stopped training or changed shape, a few of each."""
    old, new = dict(before), dict(after)
    groups = {
        "now trainable": [name for name in new if name not in old],
        "no longer trainable": [name for name in old if name not in new],
        "reshaped": [name for name in new if name in old and new[name] != old[name]],
    }
    parts = []
    for label, names in groups.items():
        if names:
            more = f" and {len(names) - LISTED_NAMES} more" if len(names) > LISTED_NAMES else ""
            parts.append(f"{label}: {', '.join(names[:LISTED_NAMES])}{more}")
    return "; ".join(parts) or "the same weights in another order"


class SolverMemory:
    """The warm start by weight name, and the layout of the weights that it and the solver's state belong to.

    Attributes:
        solution: the last kept solution, ``{name: tensor}``; a list from a checkpoint written before names were
            kept; ``None`` when the next solve starts cold.
        layout: names and shapes of the weights of the last solve (restored from a checkpoint); ``None`` before
            the first solve and after loading an older checkpoint.
    """

    def __init__(self) -> None:
        self.solution: dict[str, Tensor] | list[Tensor] | None = None
        self.layout: Layout | None = None

    def start(
        self, solver: IHVPSolver, named_weights: Sequence[tuple[str, Tensor]], step: int, warm_start: bool
    ) -> list[Tensor] | None:
        """The warm start for a solve over ``named_weights`` (on their devices), or ``None`` for a cold start.

        Args:
            solver: the callback's solver; its state is reset if the weights changed since the last solve.
            named_weights: ``(name, weight)`` of today's trainable weights, in the order of the solve's vectors.
            step: the weight step, for the log line.
            warm_start: whether warm starts are on; the solver's state is checked either way.
        """
        layout = layout_of(named_weights)
        if self.layout is not None and layout != self.layout:
            solver.reset_state()
            self.solution = None
            rank_zero_info(
                f"HypergradientCallback: the trainable weights changed before the hyperstep at step {step} "
                f"({describe_change(self.layout, layout)}). This solve starts cold and {type(solver).__name__} "
                "rebuilds any state it keeps between solves."
            )
        self.layout = layout
        if not warm_start or self.solution is None:
            return None
        initial = self._aligned(named_weights)
        if initial is None:
            rank_zero_info(
                f"HypergradientCallback: the warm start from an older checkpoint ({len(self.solution)} parts, "
                f"paired by position) does not fit the {len(named_weights)} trainable weights at step {step}; "
                "this solve starts cold."
            )
            self.solution = None
        return initial

    def keep(self, solution: Sequence[Tensor]) -> None:
        """Keep ``solution`` (of the last :meth:`start`'s weights) for the next solve, by weight name."""
        if self.layout is None:
            raise RuntimeError("SolverMemory.keep needs a solve started by SolverMemory.start first.")
        self.solution = {name: part.detach().clone() for (name, _), part in zip(self.layout, solution, strict=True)}

    def drop(self) -> None:
        """Start the next solve cold (a start from a failed hyperstep would fail the same way)."""
        self.solution = None

    def state_dict(self) -> dict[str, Any]:
        """``warm_start_solution`` (name → tensor) and ``solver_weights`` (``[name, shape]`` pairs, or None)."""
        layout = None if self.layout is None else [[name, list(shape)] for name, shape in self.layout]
        return {"warm_start_solution": self.solution, "solver_weights": layout}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; an older checkpoint's positional list, without a layout, too."""
        self.solution = state.get("warm_start_solution")
        layout = state.get("solver_weights")
        self.layout = None if layout is None else tuple((name, tuple(shape)) for name, shape in layout)

    def _aligned(self, named_weights: Sequence[tuple[str, Tensor]]) -> list[Tensor] | None:
        """The kept solution in the order and on the devices of ``named_weights``, or None where it does not fit."""
        solution = self.solution
        if isinstance(solution, dict):
            if list(solution) != [name for name, _ in named_weights]:
                return None
            parts = [solution[name] for name, _ in named_weights]
        else:
            parts = list(solution or [])
        if [tuple(part.shape) for part in parts] != [tuple(weight.shape) for _, weight in named_weights]:
            return None
        return [part.to(weight.device) for part, (_, weight) in zip(parts, named_weights)]
