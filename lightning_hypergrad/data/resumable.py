"""A DataLoader that a fit resumed from a mid-epoch checkpoint continues where it stopped, not at the epoch's start."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset


class ResumableDataLoader(DataLoader):
    """A DataLoader with the ``state_dict`` / ``load_state_dict`` pair Lightning looks for in a training loader.

    Lightning stores a training loader's ``state_dict()`` in every checkpoint and, resuming in the middle of an
    epoch, gives it back to ``load_state_dict()`` before iterating again. A plain DataLoader has neither: the resumed
    epoch restarts from its first batch, trains on those twice and never on its last ones (Lightning warns "You're
    resuming from a checkpoint that ended before the epoch ended"). The state here is the number of batches of the
    current pass already handed out; the next pass loads and drops that many first. The resumed run then sees the
    uninterrupted run's batches when each pass's order depends only on its epoch, as with
    :class:`~lightning_hypergrad.data.EpochShuffleSampler` (a ``RandomSampler`` without a generator of its own draws
    its order from the global random state, which checkpoints do not hold). Starting a pass leaves the global
    random state alone (a DataLoader's iterator draws its workers' base seed from it unless given a ``generator``),
    so that dropout masks drawn from it continue as in the uninterrupted run when the callback restores it.

    Args:
        *args: the positional arguments of :class:`~torch.utils.data.DataLoader`.
        **kwargs: its keyword arguments; the dataset must be map-style (one with a length: Lightning counts the
            batches of an epoch from it, and fetches ahead of the step without one, so the count would be off).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(self.dataset, IterableDataset):
            raise ValueError(
                f"ResumableDataLoader(dataset={type(self.dataset).__name__}): the dataset is an IterableDataset; "
                "resuming needs a map-style dataset (with __len__ and __getitem__)."
            )
        self.handed_out = 0  # batches of the current pass handed out
        self.skip_at_next_pass = 0  # from load_state_dict

    def __iter__(self) -> Iterator[Any]:
        skip, self.skip_at_next_pass = self.skip_at_next_pass, 0
        self.handed_out = skip
        return self._batches(skip)

    def _batches(self, skip: int) -> Iterator[Any]:
        # A generator: the pass (and its sampler's order) starts at the first draw, after Lightning's set_epoch.
        with torch.random.fork_rng(devices=[]):  # the base-seed draw must not move the global generator
            batches = super().__iter__()
        for _ in range(skip):
            next(batches)
        for batch in batches:
            self.handed_out += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """``{"batches_handed_out": k}``: the batches of the current pass handed out, 0 once a pass is complete."""
        return {"batches_handed_out": self.handed_out % len(self) if len(self) else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next pass skip the batches ``state`` says were handed out (0 when the key is missing)."""
        self.skip_at_next_pass = int(state.get("batches_handed_out", 0))
