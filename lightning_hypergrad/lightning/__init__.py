"""The Lightning adapter: the module users subclass, the callback that takes hypersteps, and the hyperstep's units."""

from lightning_hypergrad.lightning.callback import HypergradientCallback
from lightning_hypergrad.lightning.held_out import HeldOutGuard
from lightning_hypergrad.lightning.module import BilevelLightningModule

__all__ = ["BilevelLightningModule", "HeldOutGuard", "HypergradientCallback"]
