"""Import paths of the flat layout before 0.2, kept working: each old module forwards to its new home, with a warning.

A YAML ``class_path`` or an import written for the old layout (``lightning_hypergrad.callback.HypergradientCallback``)
still finds its object, and a :class:`DeprecationWarning` names the path to use instead.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType

MOVED = {
    "lightning_hypergrad.checks": ("lightning_hypergrad.arguments",),
    "lightning_hypergrad.hypergradient": ("lightning_hypergrad.engine.hypergradient",),
    "lightning_hypergrad.vectors": ("lightning_hypergrad.engine.vectors",),
    "lightning_hypergrad.callback": ("lightning_hypergrad.lightning.callback",),
    "lightning_hypergrad.module": ("lightning_hypergrad.lightning.module",),
    "lightning_hypergrad.contract": ("lightning_hypergrad.lightning.contract",),
    "lightning_hypergrad.weight_steps": ("lightning_hypergrad.lightning.weight_steps",),
    "lightning_hypergrad.distributed": ("lightning_hypergrad.lightning.distributed",),
    "lightning_hypergrad.averaging": ("lightning_hypergrad.lightning.averaging",),
    "lightning_hypergrad.schedules": ("lightning_hypergrad.lightning.schedules",),
    "lightning_hypergrad.hyper_batches": ("lightning_hypergrad.lightning.batches",),
    "lightning_hypergrad.loss_evaluation": (
        "lightning_hypergrad.lightning.losses",
        "lightning_hypergrad.lightning.loss_scale",
    ),
    "lightning_hypergrad.safeguards": (
        "lightning_hypergrad.lightning.decision",
        "lightning_hypergrad.lightning.update",
        "lightning_hypergrad.lightning.guard",
    ),
    "lightning_hypergrad.hyper_update": (
        "lightning_hypergrad.lightning.update",
        "lightning_hypergrad.lightning.decision",
    ),
    "lightning_hypergrad.metrics": ("lightning_hypergrad.lightning.records",),
    "lightning_hypergrad.internals": ("lightning_hypergrad.lightning.adapter",),
}


class _ForwardingModule(ModuleType):
    """An old module: every attribute is looked up in the new modules (first match wins), with a warning."""

    def __init__(self, name: str, targets: tuple[str, ...]) -> None:
        super().__init__(name, f"Moved to {' and '.join(targets)}.")
        self.__dict__["_targets"] = targets

    def __getattr__(self, attribute: str) -> object:
        targets = self.__dict__["_targets"]
        if attribute.startswith("__"):  # import machinery and introspection probing, not a user's lookup
            raise AttributeError(attribute)
        for target in targets:
            module = importlib.import_module(target)
            if hasattr(module, attribute):
                warnings.warn(
                    f"{self.__name__}.{attribute} moved to {target}.{attribute}; import it from there (public "
                    "names also from lightning_hypergrad). The old path will be removed in a later release.",
                    DeprecationWarning,
                    stacklevel=2,
                )
                return getattr(module, attribute)
        raise AttributeError(f"module {self.__name__!r} has no attribute {attribute!r} (it moved to {self.__doc__})")


def install() -> None:
    """Register each old path in ``sys.modules`` (never as an attribute of the package: ``lightning_hypergrad.
    hypergradient`` stays the function), so imports, YAML class paths and pickles written for it resolve."""
    for old, targets in MOVED.items():
        sys.modules.setdefault(old, _ForwardingModule(old, targets))
