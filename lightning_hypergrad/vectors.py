"""Linear algebra on tuples of tensors: the vectors the solvers work with.

A "vector" here is a tuple of tensors of any shapes (one per weight tensor). Reductions return 0-dim
tensors on the vectors' device, so callers can keep the whole solve on the device without a host sync.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor

Vector = tuple[Tensor, ...]


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation dtype for vectors of ``dtype``: at least float32, so half precision never accumulates."""
    return torch.promote_types(dtype, torch.float32)


def to_working(vector: Sequence[Tensor]) -> Vector:
    """Detach and upcast each part to its working dtype (a copy, so in-place updates never alias the input)."""
    return tuple(part.detach().to(working_dtype(part.dtype), copy=True) for part in vector)


def cast_like(vector: Sequence[Tensor], like: Sequence[Tensor]) -> Vector:
    """Cast each part to the dtype of the matching part of ``like``."""
    return tuple(part.to(reference.dtype) for part, reference in zip(vector, like, strict=True))


def zeros_like(vector: Sequence[Tensor]) -> Vector:
    return tuple(torch.zeros_like(part) for part in vector)


def _stack_scalars(scalars: Sequence[Tensor]) -> Tensor:
    """Stack 0-dim tensors of possibly different dtypes into one 1-D tensor of their promoted dtype."""
    dtype = functools.reduce(torch.promote_types, (s.dtype for s in scalars))
    return torch.stack([s.to(dtype) for s in scalars])


def dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """Euclidean inner product <a, b> summed over all parts, as a 0-dim tensor."""
    if len(a) == 0:
        return torch.zeros(())
    return _stack_scalars([torch.sum(x * y) for x, y in zip(a, b, strict=True)]).sum()


def norm(a: Sequence[Tensor]) -> Tensor:
    """Euclidean norm over all parts, as a 0-dim tensor (a norm of norms, so it does not overflow early)."""
    if len(a) == 0:
        return torch.zeros(())
    return torch.linalg.vector_norm(_stack_scalars([torch.linalg.vector_norm(x) for x in a]))


def add_scaled(a: Sequence[Tensor], scale: Tensor | float, b: Sequence[Tensor]) -> Vector:
    """a + scale * b, out of place."""
    return tuple(x + scale * y for x, y in zip(a, b, strict=True))


def scale(a: Sequence[Tensor], factor: Tensor | float) -> Vector:
    return tuple(factor * x for x in a)


def all_finite(a: Sequence[Tensor]) -> Tensor:
    """A 0-dim bool tensor: every entry of every part is finite."""
    if len(a) == 0:
        return torch.ones((), dtype=torch.bool)
    return torch.stack([torch.isfinite(x).all() for x in a]).all()


def where(condition: Tensor, a: Sequence[Tensor], b: Sequence[Tensor]) -> Vector:
    """Select a (condition true) or b, part by part, without a host sync."""
    return tuple(torch.where(condition, x, y) for x, y in zip(a, b, strict=True))


def flatten(a: Sequence[Tensor]) -> Tensor:
    """Concatenate all parts into one 1-D tensor."""
    return torch.cat([x.reshape(-1) for x in a])


def unflatten(flat: Tensor, like: Sequence[Tensor]) -> Vector:
    """Split a 1-D tensor into parts shaped like ``like``."""
    parts = torch.split(flat, [x.numel() for x in like])
    return tuple(part.reshape(x.shape) for part, x in zip(parts, like, strict=True))
