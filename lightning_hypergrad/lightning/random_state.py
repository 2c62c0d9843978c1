"""The process's random state in the callback's checkpoint, so dropout masks continue as if never interrupted.

Lightning's checkpoints hold no random state, so a resumed fit draws its dropout masks (fixed or learned:
:class:`~lightning_hypergrad.hparams.ConcreteDropout`) from wherever ``seed_everything`` left the generators, and
leaves the uninterrupted run after its first batch. The callback saves the generators' states with its own and
sets them again when the resumed fit starts training (``on_train_start``, after Lightning has restored the loops
and built the first epoch's loader iterators).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture() -> dict[str, Any]:
    """The torch CPU generator's state, each initialised CUDA device's, Python's ``random`` and NumPy's."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": _numpy_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any] | None) -> None:
    """Set the generators to ``state`` (from :func:`capture`); ``None`` (an older checkpoint) leaves them alone.

    CUDA states are restored only where this process has as many CUDA devices as the saving one had.
    """
    if state is None:
        return
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, numpy["position"], numpy["has_gauss"], numpy["cached_gaussian"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _numpy_state() -> dict[str, Any]:
    """NumPy's legacy generator state in types a ``weights_only`` checkpoint load accepts (no NumPy arrays)."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "position": int(position),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }
