"""An endless iterator over a DataLoader that can replay its position after a resume."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any


class CyclingLoader:
    """Draws batches from ``loader`` forever, starting a new pass (a new "epoch") whenever one runs out.

    Before pass k it calls ``set_epoch(k)`` on the loader's sampler and batch sampler when they have one, so
    shuffling samplers such as :class:`~lightning_hypergrad.data.EpochShuffleSampler` or ``DistributedSampler``
    reshuffle per pass. ``drawn`` counts batches handed out; :meth:`skip_to` replays that position in a fresh
    process, which reproduces the same next batch whenever the order of each pass depends only on its index.

    Args:
        loader: any iterable of batches, usually a DataLoader; it must yield at least one batch per pass.
    """

    def __init__(self, loader: Iterable[Any]) -> None:
        if _length(loader) == 0:  # refused when hypersteps start, not at the first one after warm-up
            raise ValueError(
                "A dataloader the hypersteps draw from has no batches (length 0: an empty dataset, or drop_last "
                "with fewer examples than batch_size per process); they need at least one."
            )
        self.loader = loader
        self.drawn = 0
        self._pass = 0
        self._iterator: Iterator[Any] | None = None
        self._closed = False

    def __next__(self) -> Any:
        if self._closed:  # replay the position in a new iterator, as after a resume
            self._closed = False
            self.skip_to(self.drawn)
        if self._iterator is None:
            self._start_pass()
        try:
            batch = next(self._iterator)  # type: ignore[arg-type]
        except StopIteration:
            self._pass += 1
            self._start_pass()
            try:
                batch = next(self._iterator)  # type: ignore[arg-type]
            except StopIteration:
                raise ValueError("The dataloader yielded no batches; the hyperstep needs at least one.") from None
        self.drawn += 1
        return batch

    def __iter__(self) -> CyclingLoader:
        return self

    def skip_to(self, drawn: int) -> None:
        """Position the iterator as if ``drawn`` batches had been handed out since the start."""
        self.drawn, self._pass, self._iterator = 0, 0, None
        length = _length(self.loader)
        if length:
            self._pass, remainder = divmod(drawn, length)
            self.drawn = drawn - remainder
        else:
            remainder = drawn
        for _ in range(remainder):
            next(self)

    def close(self) -> None:
        """Drop the current pass's iterator, ending a non-persistent loader's worker processes with it; a later draw
        continues at the same position."""
        self._iterator, self._closed = None, True

    def _start_pass(self) -> None:
        for attribute in ("sampler", "batch_sampler"):
            sampler = getattr(self.loader, attribute, None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(self._pass)
        self._iterator = iter(self.loader)


def _length(loader: Iterable[Any]) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None
