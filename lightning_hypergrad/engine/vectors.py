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


def to_working(vector: Sequence[Tensor], copy: bool = True) -> Vector:
    """Detach and upcast each part to its working dtype.

    With ``copy=True`` each part is a fresh tensor, so in-place updates never alias the input; ``copy=False``
    returns parts already in working precision as they are (no weight-sized allocation).
    """
    return tuple(part.detach().to(working_dtype(part.dtype), copy=copy) for part in vector)


def zeros_like(vector: Sequence[Tensor]) -> Vector:
    """A vector of zeros shaped, typed and placed like ``vector``."""
    return tuple(torch.zeros_like(part) for part in vector)


def _stack_scalars(scalars: Sequence[Tensor]) -> Tensor:
    """Stack 0-dim tensors of possibly different dtypes into one 1-D tensor of their promoted dtype."""
    dtype = functools.reduce(torch.promote_types, (s.dtype for s in scalars))
    return torch.stack([s.to(dtype) for s in scalars])


def _part_dot(x: Tensor, y: Tensor) -> Tensor:
    if x.dtype == y.dtype and x.is_floating_point():
        if x.is_contiguous() and y.is_contiguous():
            return torch.dot(x.view(-1), y.view(-1))  # no temporary of the part's size
        if x.stride() == y.stride():  # one dense layout, say channels-last products: read it in memory order
            order = sorted(range(x.dim()), key=lambda dim: -x.stride(dim))
            x, y = x.permute(order), y.permute(order)
            if x.is_contiguous():
                return torch.dot(x.view(-1), y.view(-1))
    return torch.sum(x * y)  # reshape(-1) would copy both parts of a non-contiguous pair anyway


def dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """Euclidean inner product <a, b> summed over all parts, as a 0-dim tensor."""
    if len(a) == 0:
        return torch.zeros(())
    return _stack_scalars([_part_dot(x, y) for x, y in zip(a, b, strict=True)]).sum()


def norm(a: Sequence[Tensor]) -> Tensor:
    """Euclidean norm over all parts, as a 0-dim tensor (a norm of norms, so it does not overflow early)."""
    if len(a) == 0:
        return torch.zeros(())
    return torch.linalg.vector_norm(_stack_scalars([torch.linalg.vector_norm(x) for x in a]))


def owned(vector: Sequence[Tensor], avoid: Sequence[Tensor] = ()) -> Vector:
    """``vector`` with every part safe to write over in place: the parts :func:`writable` rejects are copied."""
    return tuple(
        part if keep else part.clone(memory_format=torch.contiguous_format)
        for part, keep in zip(vector, writable(vector, avoid))
    )


def writable(vector: Sequence[Tensor], avoid: Sequence[Tensor] = ()) -> list[bool]:
    """Per part of ``vector``: may it be written over in place without touching ``avoid`` or another part?

    No when its memory overlaps a part of ``avoid`` or an earlier writable part, or when it is not dense (an
    expanded view, where one element stands for many). Autograd's results are usually fresh dense tensors; a
    gradient passed straight through (an identity-like graph) is the exception. Disjoint views of one buffer
    (an all-reduced flat vector) are all writable.
    """
    if all(part.is_contiguous() for part in vector):  # the usual case, decided without address arithmetic
        storages = [_storage(part) for part in vector if part.numel()]
        if len(set(storages)) == len(storages) and not set(storages) & {_storage(part) for part in avoid}:
            return [True] * len(vector)
    avoided: dict[int, list[tuple[int, int]]] = {}
    for part in avoid:
        if part.numel():
            avoided.setdefault(_storage(part), []).append(_span(part))
    keep = [True] * len(vector)
    reach: dict[int, int] = {}  # per storage, the end of the writable parts so far (visited in address order)
    for index in sorted(range(len(vector)), key=lambda index: (_storage(vector[index]), vector[index].data_ptr())):
        part = vector[index]
        if not part.numel():
            continue
        storage, (start, end) = _storage(part), _span(part)
        overlaps = start < reach.get(storage, start) or any(
            start < other_end and other_start < end for other_start, other_end in avoided.get(storage, ())
        )
        keep[index] = not overlaps and _dense(part)
        if keep[index]:
            reach[storage] = max(reach.get(storage, end), end)
    return keep


def _storage(part: Tensor) -> int:
    return part.untyped_storage().data_ptr()


def _span(part: Tensor) -> tuple[int, int]:
    """The byte addresses ``[first, last + 1)`` a non-empty part can touch."""
    extent = 1 + sum((size - 1) * abs(stride) for size, stride in zip(part.shape, part.stride()))
    return part.data_ptr(), part.data_ptr() + extent * part.element_size()


def _dense(part: Tensor) -> bool:
    """No two elements share memory and no gap lies between them (any order of dimensions)."""
    expected = 1
    for stride, size in sorted((stride, size) for stride, size in zip(part.stride(), part.shape) if size > 1):
        if stride != expected:
            return False
        expected *= size
    return True


def add_scaled(a: Sequence[Tensor], scale: Tensor | float, b: Sequence[Tensor]) -> Vector:
    """a + scale * b, out of place, one fused kernel per part (no temporary for ``scale * b``)."""
    if isinstance(scale, Tensor):
        return tuple(torch.addcmul(x, y, scale) for x, y in zip(a, b, strict=True))
    return tuple(torch.add(x, y, alpha=scale) for x, y in zip(a, b, strict=True))


def add_scaled_(a: Sequence[Tensor], scale: Tensor | float, b: Sequence[Tensor]) -> Vector:
    """a += scale * b in place (``a`` must be the caller's own tensors); returns ``a``."""
    for x, y in zip(a, b, strict=True):
        if isinstance(scale, Tensor):
            x.addcmul_(y, scale)
        else:
            x.add_(y, alpha=scale)
    return tuple(a)


def subtract_scaled_into(a: Sequence[Tensor], scale: Tensor | float, b: Sequence[Tensor]) -> Vector:
    """a − scale * b in one pass per part, written over ``b`` (the caller's own tensors); returns ``b``."""
    for x, y in zip(a, b, strict=True):
        if isinstance(scale, Tensor):
            torch.addcmul(x, y, -scale, out=y)  # elementwise, so writing over y as it is read is safe
        else:
            torch.add(x, y, alpha=-scale, out=y)
    return tuple(b)


def scale_and_add_(a: Sequence[Tensor], scale: Tensor | float, b: Sequence[Tensor]) -> Vector:
    """a ← scale * a + b in place (``a`` must be the caller's own tensors); returns ``a``."""
    for x, y in zip(a, b, strict=True):
        if isinstance(scale, Tensor):
            torch.addcmul(y, x, scale, out=x)  # one pass; elementwise, so writing over x as it is read is safe
        else:
            torch.add(y, x, alpha=scale, out=x)
    return tuple(a)


def scale(a: Sequence[Tensor], factor: Tensor | float) -> Vector:
    """factor * a, out of place."""
    return tuple(factor * x for x in a)


def scale_(a: Sequence[Tensor], factor: Tensor | float) -> Vector:
    """``a ← factor · a`` in place (``a`` must be the caller's own tensors); returns ``a``."""
    for x in a:
        x.mul_(factor)
    return tuple(a)


def all_finite(a: Sequence[Tensor]) -> bool:
    """Whether every entry of every part is finite (one host sync, two where a sum overflowed).

    A part's sum is finite unless the part holds a NaN or inf or its finite entries overflow the sum; only then
    is it checked entry by entry. A sum reads each part once, where ``isfinite().all()`` also writes and reads a
    bool copy of it (``benchmarks/scale_cost.py --breakdown`` prints both, against a training step).
    """
    if len(a) == 0:
        return True
    if bool(torch.stack([x.sum() for x in a]).isfinite().all()):
        return True
    return all(bool(torch.isfinite(x).all()) for x in a)


def flatten(a: Sequence[Tensor]) -> Tensor:
    """Concatenate all parts into one 1-D tensor."""
    return torch.cat([x.reshape(-1) for x in a])


def unflatten(flat: Tensor, like: Sequence[Tensor]) -> Vector:
    """Split a 1-D tensor into parts shaped like ``like``."""
    parts = torch.split(flat, [x.numel() for x in like])
    return tuple(part.reshape(x.shape) for part, x in zip(parts, like, strict=True))
