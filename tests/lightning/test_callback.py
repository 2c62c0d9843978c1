"""HypergradientCallback on scikit-learn's digits: tuning works, matches the engine, resumes exactly, refuses misuse."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lightning_hypergrad import HypergradientCallback, HypergradientWarning, hypergradient
from lightning_hypergrad.models import MLPClassifier
from lightning_hypergrad.solvers import ConjugateGradient, Identity, Neumann
from tests.lightning_helpers import RecordingCallback, TinyBilevel, digits, make_trainer, small_classifier


def fit_classifier(callback: Callback | None, seed: int = 0, max_epochs: int = 6, **model_options):
    L.seed_everything(seed, verbose=False)
    model = small_classifier(**model_options)
    trainer = make_trainer([callback] if callback else [], max_epochs=max_epochs)
    trainer.fit(model, digits())
    return model, trainer


def test_tuning_a_far_too_strong_decay_lowers_the_validation_loss() -> None:
    options = {"initial_decay": 0.3, "network": MLPClassifier(hidden=(64,))}
    baseline, baseline_trainer = fit_classifier(None, **options)
    # Near the collapsed, saddle-like start the Hessian has strong negative curvature; a short series keeps
    # the unrolled answer within Neumann's growth limit.
    callback = HypergradientCallback(
        Neumann(iterations=5),
        hyper_optimizer=lambda params: torch.optim.Adam(params, lr=0.1),
        every_n_steps=2,
        warmup_steps=5,
    )
    tuned, tuned_trainer = fit_classifier(callback, **options)
    start = float(torch.tensor(0.3).log())
    assert float(baseline.weight_decay.raw[0].detach()) == pytest.approx(start)
    assert float(tuned.weight_decay.raw[0].detach()) < start - 1.0  # the decay fell by more than a factor e
    assert callback.taken > 20 and callback.skipped == 0
    tuned_loss = float(tuned_trainer.callback_metrics["validation_loss"])
    baseline_loss = float(baseline_trainer.callback_metrics["validation_loss"])
    assert tuned_loss < 0.8 * baseline_loss


def test_the_callback_hypergradient_equals_the_engine_on_the_same_batches() -> None:
    callback = RecordingCallback(Neumann(iterations=8, alpha=0.5), every_n_steps=4, warmup_steps=3)
    model, _ = fit_classifier(callback, max_epochs=1)
    assert len(callback.records) == 3  # steps 7, 11, 15 of 17
    for record in callback.records:
        model.load_state_dict(record["state"])
        model.eval()  # validation_mode="eval"
        validation_loss = model.validation_loss(record["validation_batch"])
        model.train()
        train_loss = model.training_loss(record["train_batch"])
        expected = hypergradient(
            train_loss, validation_loss, model.weight_parameters(), model.hyperparameters(), Neumann(8, 0.5)
        )
        for actual, wanted in zip(record["result"].hypergradients, expected):
            torch.testing.assert_close(actual, wanted, rtol=0, atol=0)


def test_the_current_training_batch_is_the_one_the_weights_just_used() -> None:
    seen = []

    class Spy(RecordingCallback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(batch)
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    callback = Spy(Identity(), every_n_steps=5)
    fit_classifier(callback, max_epochs=1)
    assert torch.equal(callback.records[0]["train_batch"][0], seen[4][0])


def test_fresh_training_batches_come_from_their_own_iterator() -> None:
    callback = RecordingCallback(Identity(), every_n_steps=1, train_batch="fresh")
    fit_classifier(callback, max_epochs=1)
    first_batches = [record["train_batch"][0] for record in callback.records[:2]]
    assert not torch.equal(first_batches[0], first_batches[1])
    assert callback.batches.train is not None and callback.batches.train.drawn == len(callback.records)


def fit_with_checkpoint(tmp_path, epochs: int, resume_from=None):
    L.seed_everything(0, verbose=False)
    model = small_classifier(decay_granularity="per_tensor")
    callback = HypergradientCallback(
        Neumann(iterations=5),
        hyper_optimizer=lambda params: torch.optim.Adam(params, lr=0.05),
        hyper_lr_scheduler=lambda optimizer: torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5),
        every_n_steps=5,  # does not divide the 17 steps of an epoch
        warmup_steps=2,
        warm_start=True,
    )
    trainer = make_trainer([callback], max_epochs=epochs)
    trainer.fit(model, digits(hyper_batch_size=100), ckpt_path=resume_from)
    return model, callback, trainer


def test_resuming_from_a_checkpoint_reproduces_the_uninterrupted_run(tmp_path) -> None:
    straight, straight_callback, _ = fit_with_checkpoint(tmp_path, epochs=4)
    _, _, first_half = fit_with_checkpoint(tmp_path, epochs=2)
    checkpoint = tmp_path / "half.ckpt"
    first_half.save_checkpoint(checkpoint)
    resumed, resumed_callback, _ = fit_with_checkpoint(tmp_path, epochs=4, resume_from=checkpoint)

    assert resumed_callback.taken == straight_callback.taken == (4 * 17 - 2) // 5
    assert resumed_callback.batches.hyper.drawn == straight_callback.batches.hyper.drawn
    for (name, expected), actual in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-7, msg=f"{name} differs after resume")
    assert not torch.equal(straight.weight_decay.raw[0], torch.tensor(float(torch.tensor(1e-2).log())))


def test_checkpoint_state_holds_optimizer_counters_and_warm_start(tmp_path) -> None:
    _, callback, _ = fit_with_checkpoint(tmp_path, epochs=1)
    state = callback.state_dict()
    assert state["taken"] == 3 and state["skipped"] == 0 and state["last_step_seen"] == 17
    assert state["hyper_batches_drawn"] == 3
    assert state["hyper_optimizer"]["state"]  # Adam moments exist
    assert state["hyper_lr_scheduler"]["last_epoch"] == 3
    shapes = {
        "network.0.weight": (32, 64),
        "network.0.bias": (32,),
        "network.2.weight": (10, 32),
        "network.2.bias": (10,),
    }
    assert {name: tuple(part.shape) for name, part in state["warm_start_solution"].items()} == shapes
    assert state["solver_weights"] == [[name, list(shape)] for name, shape in shapes.items()]
    fresh = HypergradientCallback()
    fresh.load_state_dict({})  # an old checkpoint without this callback's keys still loads
    assert fresh.taken == 0


def test_bf16_mixed_precision_runs_and_moves_the_hyperparameters() -> None:
    callback = RecordingCallback(Neumann(iterations=5), every_n_steps=3)
    L.seed_everything(0, verbose=False)
    model = small_classifier()
    start = model.weight_decay.raw[0].detach().clone()
    make_trainer([callback], max_epochs=1, precision="bf16-mixed").fit(model, digits())
    assert callback.taken == 5 and callback.skipped == 0
    assert all(
        torch.isfinite(torch.cat([g.reshape(-1) for g in r["result"].hypergradients])).all() for r in callback.records
    )
    assert torch.isfinite(model.weight_decay.raw[0]) and not torch.equal(model.weight_decay.raw[0], start)


def test_gradient_accumulation_counts_weight_steps_not_batches() -> None:
    callback = RecordingCallback(Identity(), every_n_steps=3)
    _, trainer = fit_classifier(callback, max_epochs=1, accumulate_grad_batches=2)
    assert trainer.global_step == 9  # 17 batches: 8 full windows and the epoch's last batch
    assert callback.taken == 3


def test_batch_norm_statistics_are_unchanged_by_a_hyperstep() -> None:
    class Checking(HypergradientCallback):
        def compute_hypergradient(self, trainer, module, train_batch, validation_batch):
            before = {name: buffer.clone() for name, buffer in module.named_buffers()}
            result = super().compute_hypergradient(trainer, module, train_batch, validation_batch)
            after = dict(module.named_buffers())
            assert any("running_mean" in name for name in before)
            for name, buffer in before.items():
                assert torch.equal(buffer, after[name]), name
            assert module.training  # modes restored too
            return result

    for mode in ("train", "eval"):
        callback = Checking(Neumann(iterations=3), every_n_steps=4, validation_mode=mode)
        fit_classifier(callback, max_epochs=1, network=MLPClassifier(hidden=(32,), batch_norm=True, dropout=0.2))
        assert callback.taken == 4


def test_a_divergent_solve_skips_the_hyperstep_and_leaves_hyperparameters_alone() -> None:
    callback = HypergradientCallback(Neumann(iterations=30, alpha=1e4), every_n_steps=4)
    L.seed_everything(0, verbose=False)
    model = small_classifier()
    start = model.weight_decay.raw[0].detach().clone()
    with pytest.warns(
        HypergradientWarning, match=r"Skipped the hyperstep at step \d+: the solve failed \(diverged"
    ) as caught:
        make_trainer([callback], max_epochs=1).fit(model, digits())
    messages = [str(w.message) for w in caught if issubclass(w.category, HypergradientWarning)]
    assert "at step 4:" in messages[0] and len(messages) == 4
    assert callback.skipped == 4 and callback.taken == 0
    assert torch.equal(model.weight_decay.raw[0].detach(), start)


def test_non_finite_hypergradients_are_never_applied() -> None:
    class Poisoned(small_classifier().__class__):
        def validation_loss(self, batch):
            return super().validation_loss(batch) * float("nan")

    L.seed_everything(0, verbose=False)
    model = Poisoned(network=MLPClassifier(hidden=(32,)), decay_granularity="global", initial_decay=1e-2)
    start = model.weight_decay.raw[0].detach().clone()
    callback = HypergradientCallback(Identity(), every_n_steps=5)
    with pytest.warns(HypergradientWarning, match="Skipped the hyperstep"):
        make_trainer([callback], max_epochs=1).fit(model, digits())
    assert callback.skipped == 3
    assert torch.equal(model.weight_decay.raw[0].detach(), start)


def test_hypergradient_clipping_bounds_each_step() -> None:
    callback = HypergradientCallback(
        Identity(alpha=100.0),
        hyper_optimizer=lambda params: torch.optim.SGD(params, lr=1.0),
        every_n_steps=1,
        max_hypergradient_norm=1e-3,
    )
    values = []

    class Watch(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            values.append(float(pl_module.weight_decay.raw[0].detach()))

    L.seed_everything(0, verbose=False)
    model = small_classifier()
    make_trainer([callback, Watch()], max_epochs=1).fit(model, digits())
    steps = torch.tensor(values).diff().abs()
    assert steps.max() <= 1e-3 * (1 + 1e-5) and steps.max() > 5e-4


def test_alpha_can_follow_the_weight_learning_rate() -> None:
    callback = RecordingCallback(Neumann(iterations=2, alpha=1.0), every_n_steps=5, alpha_from_learning_rate=True)
    fit_classifier(callback, max_epochs=1, learning_rate=3e-3)
    assert [record["result"].solve.alpha for record in callback.records] == [pytest.approx(3e-3)] * 3


def test_warm_start_feeds_the_previous_solution_to_the_solver() -> None:
    callback = RecordingCallback(Neumann(iterations=4, alpha=0.5), every_n_steps=5, warm_start=True)
    fit_classifier(callback, max_epochs=1)
    counts = [record["result"].solve.hvp_count for record in callback.records]
    assert counts == [4, 5, 5]  # later solves spend one product on the warm start's residual


def test_project_hyperparameters_runs_after_every_hyperstep() -> None:
    class Clamped(small_classifier().__class__):
        def project_hyperparameters(self) -> None:
            self.weight_decay.raw[0].clamp_(min=-4.6, max=-4.5)

    L.seed_everything(0, verbose=False)
    model = Clamped(network=MLPClassifier(hidden=(32,)), decay_granularity="global", initial_decay=1e-2)
    callback = HypergradientCallback(
        Identity(), hyper_optimizer=lambda p: torch.optim.SGD(p, lr=100.0), every_n_steps=5
    )
    make_trainer([callback], max_epochs=1).fit(model, digits())
    assert -4.6 <= float(model.weight_decay.raw[0].detach()) <= -4.5


@pytest.mark.parametrize("reuse_training_graph", ["auto", False])  # inside the weight step, or after it
def test_metrics_reach_the_loggers_every_hyperstep(tmp_path, reuse_training_graph) -> None:
    from lightning.pytorch.loggers import CSVLogger

    callback = HypergradientCallback(Neumann(iterations=3), every_n_steps=3, reuse_training_graph=reuse_training_graph)
    L.seed_everything(0, verbose=False)
    logger = CSVLogger(tmp_path, name="run")
    make_trainer([callback], max_epochs=1, logger=logger, log_every_n_steps=50).fit(small_classifier(), digits())
    import csv

    rows = list(csv.DictReader(open(logger.experiment.metrics_file_path)))
    hyper_rows = [row for row in rows if row.get("hyper/hypergradient_norm")]
    assert [int(row["step"]) for row in hyper_rows] == [3, 6, 9, 12, 15]
    for key in (
        "hyper/validation_loss",
        "hyper/train_gradient_norm",
        "hyper/solver_iterations",
        "hyper/solver_residual",
        "hyper/solver_converged",
        "hyper/skipped",
        "hparam/weight_decay.raw.0",
    ):
        assert all(row[key] != "" for row in hyper_rows), key


# --- misuse ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (
            {"every_n_steps": 0},
            ValueError,
            r"HypergradientCallback\(every_n_steps=0\): every_n_steps must be an integer >= 1",
        ),
        (
            {"warmup_steps": -1},
            ValueError,
            r"HypergradientCallback\(warmup_steps=-1\): warmup_steps must be an integer >= 0",
        ),
        ({"solver": "neumann"}, TypeError, r"HypergradientCallback\(solver='neumann'\): solver must be an IHVPSolver"),
        ({"validation_mode": "test"}, ValueError, r"validation_mode='test'\): allowed values are 'eval' and 'train'"),
        ({"train_batch": "next"}, ValueError, r"train_batch='next'\): allowed values are 'current' and 'fresh'"),
        ({"damping": -1.0}, ValueError, r"damping=-1.0\): damping must be a finite number >= 0"),
        ({"max_hypergradient_norm": 0}, ValueError, r"max_hypergradient_norm must be a finite number > 0"),
        (
            {"solver": ConjugateGradient(), "alpha_from_learning_rate": True},
            ValueError,
            r"alpha_from_learning_rate=True\) needs a solver with a step size alpha",
        ),
    ],
)
def test_bad_arguments_are_refused(arguments, error, message) -> None:
    with pytest.raises(error, match=message):
        HypergradientCallback(**arguments)


@pytest.mark.parametrize(
    ("break_with", "error", "message"),
    [
        ("empty", ValueError, r"TinyBilevel.hyperparameters\(\) returned nothing"),
        ("not_leaf", ValueError, r"TinyBilevel.hyperparameters\(\)\[0\] \(shape \(\)\) is not a leaf tensor"),
        ("no_grad", ValueError, r"TinyBilevel.hyperparameters\(\)\[0\] \(shape \(\)\) does not require grad"),
        ("unregistered", ValueError, r"hyperparameters\(\)\[0\] \(shape \(\)\) is not registered on the module"),
        (
            "shared_optimizer",
            ValueError,
            r"Hyperparameters \['log_decay'\] are also in the weights' optimizer 0 \(SGD\)",
        ),
        ("automatic", ValueError, r"TinyBilevel.automatic_optimization is True"),
    ],
)
def test_misconfigured_modules_are_refused(break_with, error, message) -> None:
    with pytest.raises(error, match=message):
        make_trainer([HypergradientCallback()], max_epochs=1).fit(TinyBilevel(break_with), digits())


def test_a_plain_lightning_module_is_refused() -> None:
    class Plain(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(64, 10)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with pytest.raises(TypeError, match="HypergradientCallback needs a BilevelLightningModule; Plain is not one"):
        make_trainer([HypergradientCallback()], max_epochs=1).fit(Plain(), digits())


def test_hyperparameters_that_do_not_touch_the_training_loss_are_named() -> None:
    with pytest.warns(
        HypergradientWarning, match=r"Hyperparameters \['unused'\] do not influence TinyBilevel.training_loss"
    ):
        make_trainer([HypergradientCallback(Identity(), every_n_steps=5)], max_epochs=1).fit(
            TinyBilevel("idle"), digits()
        )


def test_missing_validation_data_is_refused() -> None:
    loader = digits().train_dataloader()
    with pytest.raises(ValueError, match="HypergradientCallback found no validation data for hypersteps"):
        make_trainer([HypergradientCallback()], max_epochs=1, limit_val_batches=0).fit(TinyBilevel(), loader)


def test_validation_loaders_passed_to_fit_are_used() -> None:
    data = digits()
    callback = RecordingCallback(Identity(), every_n_steps=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_trainer([callback], max_epochs=1).fit(TinyBilevel(), data.train_dataloader(), data.val_dataloader())
    assert len(callback.records) == 3
    assert callback.records[0]["validation_batch"][0].shape[0] == 359


def test_the_progress_bar_shows_the_validation_loss_and_hyperparameters() -> None:
    callback = HypergradientCallback(Identity(), every_n_steps=5)
    _, trainer = fit_classifier(callback, max_epochs=1, decay_granularity="per_tensor")
    shown = trainer.progress_bar_metrics
    assert {"validation_loss", "hyper/validation_loss", "hyper/skipped"} <= set(shown)
    assert {"hparam/weight_decay.raw.0", "hparam/weight_decay.raw.3"} <= set(shown)  # per-tensor scalars


def test_checkpointing_can_monitor_the_hypersteps_validation_loss(tmp_path) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    callback = HypergradientCallback(Identity(), every_n_steps=5)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="hyper/validation_loss", mode="min")
    L.seed_everything(0, verbose=False)
    trainer = make_trainer([callback, checkpoint], max_epochs=2, enable_checkpointing=True)
    trainer.fit(small_classifier(), digits())
    losses = [entry["validation_loss"] for entry in callback.history]
    assert checkpoint.best_model_path and float(checkpoint.best_model_score) in losses
    assert float(trainer.callback_metrics["hyper/validation_loss"]) == losses[-1]
