"""The hyperstep's own loss scale: back-off and retry within a hyperstep, growth after clean ones, its state."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision

from lightning_hypergrad import HypergradientCallback
from lightning_hypergrad.lightning import decision, distributed
from lightning_hypergrad.lightning.decision import HyperstepResult
from lightning_hypergrad.lightning.loss_scale import HyperstepLossScale, weights_loss_scale
from lightning_hypergrad.solvers import Identity
from lightning_hypergrad.solvers.base import SolveResult, SolveStatus

CPU = torch.device("cpu")


def sixteen_mixed(weights_scale: float) -> MixedPrecision:
    return MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=weights_scale))


class Products:
    """An ``attempt``: a solve whose products overflow above ``limit`` (or a hypergradient that does), recording
    each scale it is called with."""

    def __init__(self, limit: float, where: str = "solve") -> None:
        self.limit, self.where, self.scales = limit, where, []

    def __call__(self, scale: float) -> HyperstepResult:
        self.scales.append(scale)
        overflow = scale > self.limit
        solve_fails = overflow and self.where == "solve"
        value = math.inf if overflow and self.where == "mixed" else 0.25
        solve = SolveResult(
            solution=(torch.zeros(3),),
            iterations=2,
            residual_norm=torch.tensor(math.nan if solve_fails else 0.1),
            converged=not solve_fails,
            status=SolveStatus.NON_FINITE if solve_fails else SolveStatus.ITERATIONS_EXHAUSTED,
            hvp_count=2,
        )
        hypergradient = (torch.tensor([0.0 if solve_fails else value]),)
        return HyperstepResult(hypergradient, hypergradient, solve, torch.tensor(1.0), validation_loss=2.0)


@pytest.mark.parametrize("where", ["solve", "mixed"])
def test_an_overflow_backs_off_and_recomputes_within_the_same_hyperstep(where: str) -> None:
    scale, products = HyperstepLossScale(), Products(limit=4096.0, where=where)
    result = scale.run(products, sixteen_mixed(2.0**16), Identity(), CPU)
    assert products.scales == [65536.0, 32768.0, 16384.0, 8192.0, 4096.0]  # starts at the weights' scale
    assert result.solve.converged and result.hypergradients[0].item() == 0.25 and result.loss_scale == 4096.0
    assert scale.state_dict() == {"scale": 4096.0, "clean_hypersteps": 0}


def test_a_hyperstep_that_still_overflows_after_its_retries_is_left_failed_and_the_next_starts_lower() -> None:
    scale, products = HyperstepLossScale(retries=2, backoff_factor=0.25), Products(limit=100.0)
    result = scale.run(products, sixteen_mixed(2.0**16), Identity(), CPU)
    assert products.scales == [65536.0, 16384.0, 4096.0]
    assert result.solve.status is SolveStatus.NON_FINITE and result.loss_scale == 4096.0
    assert scale.scale == 1024.0
    later = Products(limit=100.0)
    scale.run(later, sixteen_mixed(2.0**16), Identity(), CPU)
    assert later.scales == [1024.0, 256.0, 64.0]


def test_the_scale_never_backs_off_below_min_scale() -> None:
    scale, products = HyperstepLossScale(min_scale=8192.0), Products(limit=1.0)
    scale.run(products, sixteen_mixed(2.0**15), Identity(), CPU)
    assert products.scales == [32768.0, 16384.0, 8192.0]  # retries left, but no lower scale to try
    assert scale.scale == 8192.0


def test_the_scale_grows_after_growth_interval_clean_hypersteps_up_to_the_weights_scale() -> None:
    scale = HyperstepLossScale(growth_interval=3)
    scale.load_state_dict({"scale": 1024.0, "clean_hypersteps": 0})
    seen = []
    for _ in range(9):
        products = Products(limit=math.inf)
        scale.run(products, sixteen_mixed(4096.0), Identity(), CPU)
        seen.append(products.scales)
    assert seen == [[1024.0]] * 3 + [[2048.0]] * 3 + [[4096.0]] * 3  # capped at the weights' 4096
    assert scale.state_dict() == {"scale": 4096.0, "clean_hypersteps": 0}


def test_an_overflow_restarts_the_count_of_clean_hypersteps() -> None:
    scale = HyperstepLossScale(growth_interval=2)
    scale.run(Products(limit=math.inf), sixteen_mixed(2.0**16), Identity(), CPU)
    assert scale.state_dict() == {"scale": 65536.0, "clean_hypersteps": 1}
    scale.run(Products(limit=40000.0), sixteen_mixed(2.0**16), Identity(), CPU)
    assert scale.state_dict() == {"scale": 32768.0, "clean_hypersteps": 0}


def test_the_scale_follows_the_weights_scale_down() -> None:
    scale = HyperstepLossScale()
    scale.load_state_dict({"scale": 8192.0})
    products = Products(limit=math.inf)
    scale.run(products, sixteen_mixed(512.0), Identity(), CPU)
    assert products.scales == [512.0] and scale.scale == 512.0


@pytest.mark.parametrize("precision", [Precision(), MixedPrecision("bf16-mixed", "cpu")], ids=["32-true", "bf16"])
def test_without_a_grad_scaler_one_unscaled_attempt_and_nothing_else(precision: Precision) -> None:
    scale, products = HyperstepLossScale(), Products(limit=0.5)  # would overflow at 1 if it were scaled
    generator_state = torch.get_rng_state()
    result = scale.run(products, precision, Identity(), CPU)
    assert products.scales == [1.0] and result.loss_scale is None and not result.solve.converged
    assert scale.state_dict() == {"scale": None, "clean_hypersteps": 0}
    assert torch.equal(torch.get_rng_state(), generator_state)


def test_a_loss_problem_is_not_retried_and_teaches_the_scale_nothing() -> None:
    scale, scales = HyperstepLossScale(), []

    def non_finite_losses(loss_scale: float) -> HyperstepResult:
        scales.append(loss_scale)
        return decision.unsolved_result([torch.zeros(3)], [("decay", torch.zeros(1))], math.nan, "a NaN loss")

    result = scale.run(non_finite_losses, sixteen_mixed(2.0**16), Identity(), CPU)
    assert scales == [65536.0] and result.loss_problem == "a NaN loss"
    assert scale.state_dict() == {"scale": None, "clean_hypersteps": 0}


class CountingIdentity(Identity):
    """A solver whose state changes with every solve."""

    def __init__(self) -> None:
        super().__init__(alpha=0.1)
        self.solves = 0

    def state_dict(self) -> dict:
        return {"solves": self.solves}

    def load_state_dict(self, state: dict) -> None:
        self.solves = state["solves"]


def test_a_retry_starts_from_the_random_and_solver_state_of_the_first_attempt() -> None:
    solver, draws, solves = CountingIdentity(), [], []

    def attempt(loss_scale: float) -> HyperstepResult:
        draws.append(torch.rand(4))  # a dropout mask, say
        solves.append(solver.solves)
        solver.solves += 1
        return Products(limit=1024.0)(loss_scale)

    torch.manual_seed(0)
    HyperstepLossScale().run(attempt, sixteen_mixed(4096.0), solver, CPU)
    assert len(draws) == 3 and all(torch.equal(draw, draws[0]) for draw in draws)
    assert solves == [0, 0, 0] and solver.solves == 1  # the state of one solve, the last one
    torch.manual_seed(0)
    expected = torch.rand(4)
    assert torch.equal(draws[0], expected) and not torch.equal(torch.rand(4), expected)  # one hyperstep's draws


def test_a_process_backs_off_with_the_others_when_one_of_them_overflowed(monkeypatch) -> None:
    agreed = iter([True, True, False])  # what the all-reduce says: another process overflowed twice

    def any_process(flags: list[bool], device: torch.device) -> list[bool]:
        assert flags == [False]  # this process never overflows
        return [next(agreed)]

    monkeypatch.setattr(distributed, "any_process", any_process)
    scale, products = HyperstepLossScale(), Products(limit=math.inf)
    result = scale.run(products, sixteen_mixed(8192.0), Identity(), CPU)
    assert products.scales == [8192.0, 4096.0, 2048.0] and result.loss_scale == 2048.0
    assert scale.state_dict() == {"scale": 2048.0, "clean_hypersteps": 0}


def test_the_state_round_trips_exactly_and_missing_keys_take_defaults() -> None:
    saved = HyperstepLossScale()
    saved.load_state_dict({"scale": 2.0**12 * (1 + 2.0**-40), "clean_hypersteps": 7})
    restored = HyperstepLossScale()
    restored.load_state_dict(saved.state_dict())
    assert restored.state_dict() == saved.state_dict() and restored.scale == 2.0**12 * (1 + 2.0**-40)
    restored.load_state_dict({})
    assert restored.state_dict() == {"scale": None, "clean_hypersteps": 0}


def test_the_callback_saves_and_restores_its_loss_scale() -> None:
    saved = HypergradientCallback(loss_scale=HyperstepLossScale(growth_interval=10))
    saved.loss_scale.load_state_dict({"scale": 2048.0, "clean_hypersteps": 3})
    state = saved.state_dict()
    assert state["loss_scale"] == {"scale": 2048.0, "clean_hypersteps": 3}
    restored = HypergradientCallback()
    restored.load_state_dict(state)
    assert restored.loss_scale.state_dict() == {"scale": 2048.0, "clean_hypersteps": 3}
    older = {key: value for key, value in state.items() if key != "loss_scale"}
    restored.load_state_dict(older)  # a checkpoint written before the key existed
    assert restored.loss_scale.state_dict() == {"scale": None, "clean_hypersteps": 0}


def test_the_weights_scale_is_read_from_an_enabled_grad_scaler_only() -> None:
    assert weights_loss_scale(sixteen_mixed(4096.0)) == 4096.0
    disabled = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", enabled=False))
    assert weights_loss_scale(disabled) is None
    assert weights_loss_scale(MixedPrecision("bf16-mixed", "cpu")) is None
    assert weights_loss_scale(Precision()) is None


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"backoff_factor": 1.0}, r"backoff_factor=1.0\): backoff_factor must lie in \(0, 1\)"),
        ({"backoff_factor": 0.0}, r"backoff_factor=0.0\): backoff_factor must be a finite number > 0"),
        ({"growth_factor": 0.5}, r"growth_factor=0.5\): growth_factor must be a number > 1"),
        ({"growth_interval": 0}, r"growth_interval=0\): growth_interval must be an integer >= 1"),
        ({"retries": -1}, r"retries=-1\): retries must be an integer >= 0"),
        ({"min_scale": math.inf}, r"min_scale=inf\): min_scale must be a finite number > 0"),
    ],
)
def test_bad_settings_are_refused_naming_the_value_and_the_range(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HyperstepLossScale(**arguments)


def test_the_callback_refuses_a_loss_scale_that_is_not_one() -> None:
    with pytest.raises(TypeError, match=r"loss_scale=1024.0\): loss_scale must be a HyperstepLossScale"):
        HypergradientCallback(loss_scale=1024.0)


def test_the_skip_reason_of_an_overflow_names_the_scale_and_what_bounds_the_back_off() -> None:
    overflowed = Products(limit=0.0)(2048.0)  # no loss_scale on it, as without a scaler
    assert "loss scale" not in decision.skip_reason(overflowed, torch.tensor(0.0), True)
    scaled = decision.skip_reason(dataclasses.replace(overflowed, loss_scale=2048.0), torch.tensor(0.0), True)
    assert "the solve failed at the hyperstep's loss scale 2048, the lowest it backed off to" in scaled
    assert "retries and min_scale" in scaled
