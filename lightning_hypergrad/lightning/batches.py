"""Where hypersteps get their batches: the hyper (validation) stream and, optionally, a fresh training stream."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lightning.pytorch import LightningModule, Trainer

from lightning_hypergrad.data.batch_indexing import batch_indexing
from lightning_hypergrad.data.cycling import CyclingLoader
from lightning_hypergrad.lightning import adapter, distributed


class HyperBatches:
    """The one place that picks, shards, cycles, replays and converts the batches hypersteps use.

    :meth:`start` finds the loaders (see :func:`hyper_loader` and :func:`fresh_train_loader`), takes its own copy of
    each (:func:`~lightning_hypergrad.lightning.adapter.own_loader`: never the fit loop's iterator or worker
    processes), shards each across processes (:func:`~lightning_hypergrad.lightning.distributed.shard_loader`) and
    cycles it endlessly (:class:`~lightning_hypergrad.data.cycling.CyclingLoader`), indexing whole batches of a
    tensor dataset at once where that gives the loader's exact batches
    (:func:`~lightning_hypergrad.data.batch_indexing.batch_indexing`). Batches come out as Lightning's own loops
    hand them to the module: through ``trainer.precision_plugin.convert_input`` (float64 under ``64-true``, bfloat16
    under ``bf16-true``) and then ``trainer.strategy.batch_to_device`` (which runs the module's batch transfer
    hooks). :meth:`state_dict` records how many batches each stream handed out; after a resume :meth:`start` replays
    that position, so the next batch is the one an uninterrupted run would have drawn. Under
    ``reload_dataloaders_every_n_epochs`` the streams reload when Lightning reloads its loaders, and start there.

    Args:
        fresh_train: also keep a stream over the training data (``train_batch="fresh"``).
        validation_dataloader: which of several validation dataloaders to draw from (see :func:`hyper_loader`).
    """

    def __init__(self, fresh_train: bool, validation_dataloader: int | str = 0) -> None:
        self.fresh_train = fresh_train
        self.validation_dataloader = validation_dataloader
        self.hyper: CyclingLoader | None = None
        self.train: CyclingLoader | None = None
        self.loaded_epoch: int | None = None  # the epoch the loaders were loaded in, when the fit reloads them
        self._resume_at: dict[str, Any] = {}

    def start(self, trainer: Trainer, module: LightningModule) -> None:
        """Open the streams (at the start of training), at the positions a loaded state recorded in the same
        loaders: always without ``reload_dataloaders_every_n_epochs``, else if they were loaded in this epoch."""
        resume_at, self._resume_at = self._resume_at, {}
        self._open(trainer, module)
        if resume_at.get("batches_loaded_epoch") == self.loaded_epoch:
            self.hyper.skip_to(resume_at.get("hyper_batches_drawn", 0))  # type: ignore[union-attr]
            if self.train is not None:
                self.train.skip_to(resume_at.get("train_batches_drawn", 0))

    def next_hyper(self, trainer: Trainer) -> Any:
        """The next validation batch for a hyperstep, on the module's device and in the Trainer's precision."""
        if self.hyper is None:
            raise RuntimeError("HyperBatches.next_hyper called before start(); hypersteps begin with training.")
        self._follow_reloads(trainer)
        return _to_module(trainer, next(self.hyper))

    def next_train(self, trainer: Trainer) -> Any:
        """The next fresh training batch, on the module's device and in the Trainer's precision."""
        if self.train is None:
            raise RuntimeError("HyperBatches.next_train needs fresh_train=True and start().")
        self._follow_reloads(trainer)
        return _to_module(trainer, next(self.train))

    def state_dict(self) -> dict[str, Any]:
        """Batches handed out per stream since its loader was loaded, and the epoch it was loaded in (None when
        the fit does not reload its loaders); pending values before :meth:`start` after a load."""
        pending = self._resume_at
        return {
            "hyper_batches_drawn": self.hyper.drawn if self.hyper else pending.get("hyper_batches_drawn", 0),
            "train_batches_drawn": self.train.drawn if self.train else pending.get("train_batches_drawn", 0),
            "batches_loaded_epoch": self.loaded_epoch if self.hyper else pending.get("batches_loaded_epoch"),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Remember positions to replay at :meth:`start` (missing keys mean the start of each stream)."""
        self._resume_at = {key: int(state.get(key, 0)) for key in ("hyper_batches_drawn", "train_batches_drawn")}
        self._resume_at["batches_loaded_epoch"] = state.get("batches_loaded_epoch")

    def stop(self) -> None:
        """End the streams' iterators and worker processes (at the end of a fit); positions are kept."""
        for stream in (self.hyper, self.train):
            if stream is not None:
                stream.close()
                adapter.end_workers(stream.loader)

    def _open(self, trainer: Trainer, module: LightningModule) -> None:
        self.stop()  # the streams over the loaders before a reload
        self.hyper = _stream(trainer, hyper_loader(trainer, module, self.validation_dataloader))
        self.train = _stream(trainer, fresh_train_loader(trainer, module)) if self.fresh_train else None
        self.loaded_epoch = trainer.current_epoch if trainer.reload_dataloaders_every_n_epochs else None

    def _follow_reloads(self, trainer: Trainer) -> None:
        # Lightning reloads its loaders every n epochs from the fit's start (checked at each epoch's start); the
        # streams reload with it, at their first draw in such an epoch, and start from the new loaders' beginning.
        every = trainer.reload_dataloaders_every_n_epochs
        since = trainer.current_epoch - self.loaded_epoch if self.loaded_epoch is not None else 0
        if every and since >= every:
            self._open(trainer, trainer.lightning_module)
            self.loaded_epoch = trainer.current_epoch - since % every  # the epoch Lightning reloaded in


def _stream(trainer: Trainer, loader: Iterable[Any]) -> CyclingLoader:
    # Its own copy of the loader (never the fit loop's iterator or workers), this process's share, cycled.
    shard = {"num_replicas": trainer.world_size, "rank": trainer.global_rank}
    return CyclingLoader(batch_indexing(distributed.shard_loader(adapter.own_loader(loader), **shard)))


def _to_module(trainer: Trainer, batch: Any) -> Any:
    # The order of Lightning's own training and evaluation loops.
    return trainer.strategy.batch_to_device(trainer.precision_plugin.convert_input(batch))


def hyper_loader(trainer: Trainer, module: LightningModule, validation_dataloader: int | str = 0) -> Iterable[Any]:
    """The validation data for hypersteps: the first of the datamodule's or the module's ``hyper_dataloader()``,
    the datamodule's or the module's ``val_dataloader()``, and the ``val_dataloaders`` passed to ``fit`` (also
    under ``limit_val_batches=0``). Several validation loaders (a list or dict): the one at index (or key)
    ``validation_dataloader``, the first by default.

    Hypersteps cycle through the whole loader: ``limit_val_batches`` limits the validation loop only. Under
    ``reload_dataloaders_every_n_epochs`` they ask for it again whenever Lightning reloads its loaders.
    """
    datamodule = trainer.datamodule
    for owner in (datamodule, module):
        if owner is not None and callable(getattr(owner, "hyper_dataloader", None)):
            return owner.hyper_dataloader()
    if datamodule is not None and adapter.overrides(datamodule, "val_dataloader"):
        return select_loader(datamodule.val_dataloader(), validation_dataloader)
    if adapter.overrides(module, "val_dataloader"):
        return select_loader(module.val_dataloader(), validation_dataloader)
    loaders = adapter.validation_dataloaders(trainer)
    if loaders is not None:
        return select_loader(loaders, validation_dataloader)
    raise ValueError(
        "HypergradientCallback found no validation data for hypersteps: define hyper_dataloader() or "
        "val_dataloader() on the datamodule or module, or pass val_dataloaders to trainer.fit."
    )


def select_loader(loaders: Any, choice: int | str) -> Iterable[Any]:
    """``loaders[choice]`` for a list/tuple (an index) or a dict (a key, or an index into its keys); a single
    loader for choice 0."""
    where = f"HypergradientCallback(validation_dataloader={choice!r})"
    if isinstance(loaders, Mapping):
        keys = list(loaders)
        if isinstance(choice, int) and 0 <= choice < len(keys):
            return loaders[keys[choice]]
        if choice in loaders:
            return loaders[choice]
        raise ValueError(f"{where}: the validation dataloaders are a dict with keys {keys}; name one or its index.")
    if isinstance(loaders, (list, tuple)):
        if isinstance(choice, int) and 0 <= choice < len(loaders):
            return loaders[choice]
        raise ValueError(f"{where}: there are {len(loaders)} validation dataloaders (a list); give an index below it.")
    if choice != 0:
        raise ValueError(f"{where}: there is a single validation dataloader; leave validation_dataloader at 0.")
    return loaders


def validation_metric_name(trainer: Trainer | None, dataloader_idx: int) -> str:
    """What ``validation_step`` logs its loss as: ``validation_loss`` for the first (or only) validation loader,
    ``validation_loss/<key>`` for the others of a dict, ``validation_loss/dataloader_idx_<k>`` of a list."""
    if dataloader_idx == 0:
        return "validation_loss"
    loaders = trainer.val_dataloaders if trainer is not None else None
    if isinstance(loaders, Mapping):
        return f"validation_loss/{list(loaders)[dataloader_idx]}"
    return f"validation_loss/dataloader_idx_{dataloader_idx}"


def fresh_train_loader(trainer: Trainer, module: LightningModule) -> Iterable[Any]:
    """A second training loader for ``train_batch="fresh"`` (its own iterator, not the fit loop's)."""
    datamodule = trainer.datamodule
    if datamodule is not None and adapter.overrides(datamodule, "train_dataloader"):
        return datamodule.train_dataloader()
    if adapter.overrides(module, "train_dataloader"):
        return module.train_dataloader()
    return trainer.train_dataloader
