"""One hypergradient run against an Optuna search (TPE), on the same model, data, epochs and seeds.

Tasks (each run through the shipped config, as a user would run it):

- (a) ``configs/digits_weight_decay_global.yaml``: the digits MLP with one global weight decay. Optuna's TPE tunes
  the same decay (log-uniform in [1e-6, 1e-1]) over ``--trials`` plain trainings of the same config.
- (b) ``configs/breast_cancer_feature_decay.yaml``: logistic regression on scikit-learn's breast-cancer data with
  one decay per feature. Optuna tunes one C (log-uniform in [1e-4, 1e4], decay 1/(C n)) on the same model and
  epochs; scikit-learn's ``LogisticRegressionCV`` (5-fold on the training split, 20 Cs) is a third reference.
- (c) ``configs/digits_noisy_labels.yaml``: digits with 30% of the training labels flipped, clean validation; one
  learned weight per training example, against Optuna tuning a global decay of the same MLP on the same data.
- (d) a regression: a small tanh MLP on scikit-learn's diabetes data with one decay per input feature (10),
  written as a user's module (``feature_regression.py``); Optuna tunes one shared decay (log-uniform in
  [1e-5, 10]). Losses are mean squared errors of the standardised target; accuracies are not defined (nan).

Held-out rows, for the per-feature tasks (b) and (d): the same hypergradient run with a ``HeldOutGuard`` (the
hypersteps tune on half the validation split, the other half picks the λ kept at the end) and with
``decay_spread_penalty`` κ = 0.1 (a prior pulling the decays towards their geometric mean). Every row's test
loss is on the same untouched test split.

Every method is scored by the validation and test loss/accuracy of its final weights; wall time counts training
and the validation that scores it (Optuna's: all trials). Also printed: the time Optuna's search needs to first
reach the hypergradient run's validation loss ("never" if it does not within its trials). Needs
``pip install -e .[bench]``. Run: ``python benchmarks/versus_optuna.py [--tasks a b c --seeds 0 1 2 --trials 20]``.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

import optuna
from config_runs import Outcome, load, quiet, train, without_tuning


@dataclass
class Search:
    """Optuna's trials on one seed: the best trial's outcome and the running time after each trial."""

    best: Outcome
    best_value: float
    losses: list[float]
    elapsed: list[float]

    def time_to_reach(self, target: float) -> float | None:
        """Seconds until a trial first scored a validation loss ``<= target``; ``None`` if none did."""
        return next((t for loss, t in zip(self.losses, self.elapsed) if loss <= target), None)

    def time_to_best(self) -> float:
        return self.elapsed[self.losses.index(min(self.losses))]


def optuna_search(settings: dict[str, Any], seed: int, trials: int, suggest: Any) -> Search:
    """TPE over ``suggest(trial) -> model arguments``, one plain training of ``settings`` per trial."""
    outcomes: list[Outcome] = []
    values: list[float] = []

    def objective(trial: optuna.Trial) -> float:
        arguments = suggest(trial)
        outcome, _ = train(without_tuning(settings, **arguments), seed)
        outcomes.append(outcome)
        values.append(next(iter(arguments.values())))
        return outcome.validation_loss

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    losses = [o.validation_loss for o in outcomes]
    elapsed = [sum(o.seconds for o in outcomes[: i + 1]) for i in range(len(outcomes))]
    best_index = losses.index(min(losses))
    best = copy.copy(outcomes[best_index])
    best.seconds = elapsed[-1]
    return Search(best, values[best_index], losses, elapsed)


def global_decay(trial: optuna.Trial) -> dict[str, float]:
    return {"initial_decay": trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True)}


def task_a(seed: int, trials: int, reinit: int) -> dict[str, Any]:
    settings = load("digits_weight_decay_global.yaml")
    hyper, model = train(settings, seed)
    hyper.extra["learned decay"] = float(model.hyperparameter_values()["weight_decay"])
    plain, _ = train(without_tuning(settings), seed)
    search = optuna_search(settings, seed, trials, global_decay)
    # Noise floor: the same split, other initial weights. Does Optuna's best decay stay ahead of the tuned run?
    init_seeds = [1000 + 10 * seed + i for i in range(reinit)]
    best_decay = without_tuning(settings, initial_decay=search.best_value)
    search_again = [train(best_decay, s, data_seed=seed)[0].validation_loss for s in init_seeds]
    hyper_again = [train(settings, s, data_seed=seed)[0].validation_loss for s in init_seeds]
    return {"hyper": hyper, "plain": plain, "search": search, "reinit": (search_again, hyper_again)}


def task_b(seed: int, trials: int, reinit: int) -> dict[str, Any]:
    settings = load("breast_cancer_feature_decay.yaml")
    hyper, model = train(settings, seed)
    decays = model.hyperparameter_values()["feature_decay"]
    hyper.extra["decay min/max"] = float(decays.min()), float(decays.max())
    plain, _ = train(without_tuning(settings, decay_granularity="global"), seed)
    train_size = len(model.trainer.datamodule.split.train_targets)

    def one_c(trial: optuna.Trial) -> dict[str, Any]:
        c = trial.suggest_float("C", 1e-4, 1e4, log=True)
        # Two-class softmax with ½c‖W‖² equals scikit-learn's binary C at c = 2/(C n) (see the task's docstring).
        return {"initial_decay": 2.0 / (c * train_size), "decay_granularity": "global"}

    search = optuna_search(settings, seed, trials, one_c)
    guarded = copy.deepcopy(settings)
    guarded["data"]["init_args"]["held_out_fraction"] = 0.5
    guarded["trainer"]["callbacks"] = [
        *guarded["trainer"]["callbacks"],
        {"class_path": "lightning_hypergrad.HeldOutGuard"},
    ]
    spread = copy.deepcopy(settings)
    spread["model"]["init_args"]["decay_spread_penalty"] = SPREAD_PENALTY
    return {
        "hyper": hyper,
        "guard": train(guarded, seed)[0],
        "spread": train(spread, seed)[0],
        "plain": plain,
        "search": search,
        "sklearn": logistic_regression_cv(model, seed),
    }


def logistic_regression_cv(model: Any, seed: int) -> Outcome:
    """scikit-learn's LogisticRegressionCV on the same standardised split, scored like the others."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import accuracy_score, log_loss

    split = model.trainer.datamodule.split
    start = time.perf_counter()
    classifier = LogisticRegressionCV(Cs=20, cv=5, max_iter=5000, random_state=seed)
    classifier.fit(split.train_inputs.numpy(), split.train_targets.numpy())
    seconds = time.perf_counter() - start
    scores = []
    for inputs, targets in ((split.val_inputs, split.val_targets), (split.test_inputs, split.test_targets)):
        probabilities = classifier.predict_proba(inputs.numpy())
        scores += [log_loss(targets.numpy(), probabilities), accuracy_score(targets.numpy(), probabilities.argmax(1))]
    return Outcome(*scores, seconds, extra={"C": float(classifier.C_[0])})


def task_c(seed: int, trials: int, reinit: int) -> dict[str, Any]:
    settings = load("digits_noisy_labels.yaml")
    hyper, model = train(settings, seed)
    hyper.extra.update({k: round(v, 4) for k, v in model.report_metrics().items()})
    noisy_decay = load("digits_weight_decay_global.yaml")
    noisy_decay["data"]["init_args"].update(settings["data"]["init_args"])
    noisy_decay["data"]["init_args"]["indexed"] = False
    noisy_decay["trainer"]["max_epochs"] = settings["trainer"]["max_epochs"]
    plain, _ = train(without_tuning(noisy_decay), seed)
    return {"hyper": hyper, "plain": plain, "search": optuna_search(noisy_decay, seed, trials, global_decay)}


def regression_outcome(scores: dict[str, float]) -> Outcome:
    extra = {"decay min/max": (scores["decay_min"], scores["decay_max"])}
    return Outcome(scores["val"], math.nan, scores["test"], math.nan, scores["seconds"], extra=extra)


def task_d(seed: int, trials: int, reinit: int) -> dict[str, Any]:
    import feature_regression as regression

    def fit(**options: Any) -> Outcome:
        return regression_outcome(regression.fit(seed, **options))

    outcomes: list[Outcome] = []
    decays: list[float] = []

    def objective(trial: optuna.Trial) -> float:
        decays.append(trial.suggest_float("decay", 1e-5, 10.0, log=True))
        outcomes.append(fit(tuned=False, initial_decay=decays[-1]))
        return outcomes[-1].validation_loss

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    losses = [o.validation_loss for o in outcomes]
    elapsed = [sum(o.seconds for o in outcomes[: i + 1]) for i in range(len(outcomes))]
    best = copy.copy(outcomes[losses.index(min(losses))])
    best.seconds = elapsed[-1]
    return {
        "hyper": fit(tuned=True),
        "guard": fit(tuned=True, guard=True),
        "spread": fit(tuned=True, spread_penalty=SPREAD_PENALTY),
        "plain": fit(tuned=False),
        "search": Search(best, decays[losses.index(min(losses))], losses, elapsed),
    }


SPREAD_PENALTY = 0.1
TASKS = {
    "a": ("(a) digits MLP, one global weight decay", task_a, "hypergradient, global decay"),
    "b": ("(b) breast-cancer logistic regression", task_b, "hypergradient, decay per feature"),
    "c": ("(c) digits, 30% of training labels flipped", task_c, "hypergradient, weight per example"),
    "d": ("(d) diabetes MLP regression (MSE)", task_d, "hypergradient, decay per feature"),
}


def report(title: str, hyper_name: str, results: list[dict[str, Any]], trials: int) -> None:
    names = {
        "hyper": hyper_name,
        "guard": "  + HeldOutGuard (half the validation)",
        "spread": f"  + decay_spread_penalty {SPREAD_PENALTY}",
        "plain": "one run, config defaults, no tuning",
        "search": f"Optuna TPE, {trials} trials (best)",
        "sklearn": "LogisticRegressionCV (5-fold, 20 Cs)",
    }
    print(f"\n{title} — mean over seeds {[r['seed'] for r in results]}")
    print(f"{'method':<42} {'val loss':>9} {'val acc':>8} {'test loss':>10} {'test acc':>9} {'time s':>8}")
    for key, name in names.items():
        if key not in results[0]:
            continue
        outcomes = [r[key].best if key == "search" else r[key] for r in results]
        columns = [
            statistics.mean(getattr(o, a) for o in outcomes)
            for a in ("validation_loss", "validation_accuracy", "test_loss", "test_accuracy", "seconds")
        ]
        print(f"{name:<42} {columns[0]:9.4f} {columns[1]:8.4f} {columns[2]:10.4f} {columns[3]:9.4f} {columns[4]:8.1f}")
    search_best = statistics.mean(r["search"].best.validation_loss for r in results)
    hyper_mean = statistics.mean(r["hyper"].validation_loss for r in results)
    print(
        f"hypergradient validation loss is {100 * (hyper_mean / search_best - 1):+.2f}% from Optuna's best "
        f"(means over seeds); hypergradient time / Optuna's time to its best = "
        f"{statistics.mean(r['hyper'].seconds for r in results) / statistics.mean(r['search'].time_to_best() for r in results):.2f}"
    )
    if "reinit" in results[0] and results[0]["reinit"][0]:
        again = [statistics.mean(r["reinit"][i]) for r in results for i in (0, 1)]
        spread = statistics.mean(statistics.stdev(r["reinit"][i]) for r in results for i in (0, 1))
        print(
            f"re-initialised ({len(results[0]['reinit'][0])} other initial weights per seed, same splits): Optuna's "
            f"best decay {statistics.mean(again[0::2]):.4f}, hypergradient run {statistics.mean(again[1::2]):.4f}; "
            f"standard deviation over initial weights {spread:.4f}"
        )
    for r in results:
        reached = r["search"].time_to_reach(r["hyper"].validation_loss)
        when = "never" if reached is None else f"{reached:.1f} s ({reached / r['hyper'].seconds:.1f}× the run)"
        print(
            f"  seed {r['seed']}: hypergradient {r['hyper'].validation_loss:.4f} in {r['hyper'].seconds:.1f} s; "
            f"Optuna best {r['search'].best.validation_loss:.4f} (at {r['search'].best_value:.3g}, after "
            f"{r['search'].time_to_best():.1f} s); Optuna first reaches the hypergradient loss: {when}; "
            + ", ".join(f"{k} {_short(v)}" for k, v in r["hyper"].extra.items())
        )


def _short(value: Any) -> str:
    if isinstance(value, tuple):
        return "/".join(f"{v:.3g}" for v in value)
    return f"{value:.4g}" if isinstance(value, float) and not math.isnan(value) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=sorted(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--reinit", type=int, default=5, help="(a): re-runs with other initial weights; 0 = off")
    arguments = parser.parse_args()
    quiet()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for task in arguments.tasks:
        title, run, hyper_name = TASKS[task]
        results = [{"seed": seed, **run(seed, arguments.trials, arguments.reinit)} for seed in arguments.seeds]
        report(title, hyper_name, results, arguments.trials)


if __name__ == "__main__":
    main()
