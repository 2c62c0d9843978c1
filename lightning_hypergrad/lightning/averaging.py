"""Keeping weight-averaging callbacks from averaging the hyperparameters.

``StochasticWeightAveraging`` and ``WeightAveraging`` (``EMAWeightAveraging``) average every parameter of the
module, λ included, and copy the average back at the end (and swap it in for validation): the tuned λ would be
pulled back towards its past values. Instead, after every hyperstep (and at the start of training) the averaged
copy's hyperparameters are set to the live ones. Every averaging rule in use is a convex combination of the
average and the live value, so an average that equals the live value stays equal: λ is in effect excluded from
the averaging, while the weights are averaged as usual.
"""

from __future__ import annotations

from lightning.pytorch import LightningModule, Trainer

from lightning_hypergrad.lightning import adapter, contract


def keep_hyperparameters_out_of_averages(trainer: Trainer, module: LightningModule) -> None:
    """Copy the live hyperparameters into every weight-averaging callback's averaged copy of ``module``."""
    named = contract.named_hyperparameters(module)
    for average in adapter.averaged_copies(trainer):
        average_parameters = dict(average.named_parameters())
        for name, parameter in named:
            if name in average_parameters:
                average_parameters[name].data.copy_(parameter.data.to(average_parameters[name].device))
