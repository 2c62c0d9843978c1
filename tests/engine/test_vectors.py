"""Which parts of a vector may be written over in place, and the in-place updates the solvers use."""

from __future__ import annotations

import torch

from lightning_hypergrad.engine import vectors


def test_fresh_dense_parts_are_writable_in_any_layout() -> None:
    transposed = torch.randn(4, 3).t()  # what a Linear layer's weight gradient can look like
    assert vectors.writable((torch.randn(3), transposed, torch.randn(2, 3, 4).permute(2, 0, 1)), ()) == [True] * 3


def test_a_part_of_the_input_passed_straight_through_is_not_writable() -> None:
    vector = (torch.randn(3), torch.randn(2))
    assert vectors.writable((vector[1], torch.randn(3)), avoid=vector) == [False, True]
    assert vectors.writable((vector[0][1:],), avoid=vector) == [False]  # a view into an input part


def test_the_same_tensor_twice_is_writable_once() -> None:
    part = torch.randn(3)
    assert vectors.writable((part, part, torch.randn(3))) == [True, False, True]


def test_an_expanded_view_is_not_writable_but_disjoint_views_of_one_buffer_are() -> None:
    flat = torch.randn(10)
    assert vectors.writable((torch.zeros(()).expand(4), torch.ones(1, 3).expand(2, 3))) == [False, False]
    assert vectors.writable((flat[:4], flat[4:].view(2, 3))) == [True, True]
    assert vectors.writable((flat[:5], flat[3:8])) == [True, False]  # overlapping views
    assert vectors.writable((torch.empty(0), torch.empty(0))) == [True, True]  # nothing to overlap


def test_owned_copies_only_the_parts_that_are_not_writable() -> None:
    vector = (torch.randn(3), torch.randn(2))
    fresh = torch.randn(3)
    result = vectors.owned((fresh, vector[1], torch.zeros(()).expand(2)), avoid=vector)
    assert result[0] is fresh
    assert result[1] is not vector[1] and torch.equal(result[1], vector[1])
    assert torch.equal(result[2], torch.zeros(2)) and vectors.writable(result, avoid=vector) == [True] * 3


def test_in_place_updates_match_their_formulas() -> None:
    a = (torch.tensor([1.0, 2.0]), torch.tensor([[3.0]]))
    b = (torch.tensor([0.5, -1.0]), torch.tensor([[2.0]]))
    step = torch.tensor(0.5)
    written = vectors.subtract_scaled_into(a, step, tuple(part.clone() for part in b))
    assert torch.equal(written[0], torch.tensor([0.75, 2.5])) and torch.equal(written[1], torch.tensor([[2.0]]))
    written = vectors.subtract_scaled_into(a, 2.0, tuple(part.clone() for part in b))
    assert torch.equal(written[0], torch.tensor([0.0, 4.0])) and torch.equal(written[1], torch.tensor([[-1.0]]))
    scaled = vectors.scale_(tuple(part.clone() for part in a), step)
    assert torch.equal(scaled[0], torch.tensor([0.5, 1.0])) and torch.equal(scaled[1], torch.tensor([[1.5]]))


def test_dot_of_parts_in_any_layout_matches_the_elementwise_sum() -> None:
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(16, 8, 3, 3, dtype=torch.float64, generator=generator)
    other = torch.randn(16, 8, 3, 3, dtype=torch.float64, generator=generator)
    pairs = [
        (weights, other),  # contiguous
        (weights.to(memory_format=torch.channels_last), other.to(memory_format=torch.channels_last)),
        (weights.transpose(0, 1), other.transpose(0, 1)),  # one permuted layout
        (weights, other.to(memory_format=torch.channels_last)),  # two layouts
        (torch.zeros((), dtype=torch.float64).expand(4, 5), torch.ones(4, 5, dtype=torch.float64)),  # a broadcast zero
    ]
    for x, y in pairs:
        expected = (x.contiguous() * y.contiguous()).sum()
        torch.testing.assert_close(vectors.dot([x], [y]), expected, rtol=1e-14, atol=1e-14)


def test_all_finite_answers_entry_by_entry_even_where_a_sum_overflows() -> None:
    huge = torch.full((4,), 3e38)  # finite float32 entries whose sum is inf
    half = torch.full((8,), 6e4, dtype=torch.float16)  # the same in float16
    assert vectors.all_finite([]) is True
    assert vectors.all_finite([torch.ones(3), torch.zeros(2, 2, dtype=torch.float64)]) is True
    assert vectors.all_finite([huge, half, -huge]) is True
    for bad in (float("nan"), float("inf"), float("-inf")):
        for dtype in (torch.float32, torch.float16, torch.float64):
            part = torch.ones(5, dtype=dtype)
            part[3] = bad
            assert vectors.all_finite([torch.ones(2), part]) is False, (bad, dtype)
            assert vectors.all_finite([huge, part]) is False, (bad, dtype)
    cancelling = torch.tensor([float("inf"), float("-inf")])  # sums to NaN, and is not finite either
    assert vectors.all_finite([cancelling]) is False
