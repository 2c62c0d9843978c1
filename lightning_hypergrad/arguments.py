"""Argument checks shared by constructors: each error names the argument, the value and what is allowed."""

from __future__ import annotations

import math
from collections.abc import Sequence


def check_count(owner: str, name: str, value: object, minimum: int) -> int:
    """Return ``value`` if it is an int >= ``minimum``, else raise naming the value and the allowed range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{owner}({name}={value!r}): {name} must be an integer >= {minimum}, got {type(value).__name__}."
        )
    if value < minimum:
        raise ValueError(f"{owner}({name}={value!r}): {name} must be an integer >= {minimum}, got {value}.")
    return value


def check_positive(owner: str, name: str, value: object) -> float:
    """Return ``value`` as a float if it is finite and > 0, else raise naming the value and the allowed range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}({name}={value!r}): {name} must be a finite number > 0, got {type(value).__name__}.")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{owner}({name}={value!r}): {name} must be a finite number > 0, got {value}.")
    return float(value)


def check_non_negative(name: str, value: object, owner: str | None = None) -> float:
    """Return ``value`` as a float if it is finite and >= 0, else raise naming the value and the allowed range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        given = f"{name}={value!r}" if owner is None else f"{owner}({name}={value!r})"
        raise ValueError(f"{given}: {name} must be a finite number >= 0.")
    return float(value)


def check_choice(owner: str, name: str, value: object, allowed: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise naming the value and the allowed values."""
    if value not in allowed:
        listed = (
            ", ".join(repr(choice) for choice in allowed[:-1]) + f" and {allowed[-1]!r}"
            if len(allowed) > 1
            else repr(allowed[0])
        )
        raise ValueError(f"{owner}({name}={value!r}): allowed values are {listed}.")
    return value  # type: ignore[return-value]
