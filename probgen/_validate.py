"""Argument checks and error-message helpers used at probgen's public boundary.

Every public function validates its inputs once, here, so that a bad value fails
early with a message that says what was expected, what arrived, and how to fix it.
This module imports nothing from probgen.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

T = TypeVar("T")


def check_choice(name: str, value: Any, choices: Iterable[T]) -> T:
    """Return ``value`` if it is one of ``choices``; otherwise raise a ValueError listing them."""
    options = tuple(choices)
    if value not in options:
        listed = ", ".join(repr(c) for c in options)
        raise ValueError(f"unknown {name} {value!r}; expected one of {listed}.")
    return value


def lookup(name: str, value: str, registry: Mapping[str, T]) -> T:
    """Fetch ``registry[value]``, raising a ValueError that lists the valid keys."""
    check_choice(name, value, registry.keys())
    return registry[value]


def check_positive_int(name: str, value: Any, *, allow_zero: bool = False) -> int:
    """Check that ``value`` is an int (not a bool) that is positive (or zero if allowed)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}.")
    lowest = 0 if allow_zero else 1
    if value < lowest:
        kind = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{name} must be {kind} int, got {value}.")
    return int(value)


def check_positive_float(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Check that ``value`` is a finite real number that is positive (or zero if allowed)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}.")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a finite {kind} number, got {value}.")
    return value


def check_probability(name: str, value: Any, *, open_interval: bool = True) -> float:
    """Check that ``value`` lies in (0, 1) (or [0, 1] when ``open_interval`` is False)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise TypeError(f"{name} must be a number in (0, 1), got {type(value).__name__}.")
    value = float(value)
    ok = 0 < value < 1 if open_interval else 0 <= value <= 1
    if not ok:
        raise ValueError(f"{name} must lie in {'(0, 1)' if open_interval else '[0, 1]'}, got {value}.")
    return value


def check_seed(seed: Any) -> int:
    """Return an int seed; ``None`` draws a fresh one so that it can be recorded."""
    if seed is None:
        return random.SystemRandom().randrange(2**31)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__} {seed!r}.")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}.")
    return int(seed)


def as_tensor(
    name: str,
    value: Any,
    *,
    dtype: torch.dtype | None = None,
    ndim: int | tuple[int, ...] | None = None,
    allow_integer: bool = True,
) -> Tensor:
    """Convert ``value`` to a tensor and check its dtype, rank and finiteness.

    :param str name: the argument's name, used in error messages.
    :param value: a tensor, NumPy array, pandas object or nested sequence of numbers.
    :param dtype: the floating dtype to cast to; ``None`` means torch's default dtype.
        Integer input is kept as ``torch.long`` when ``allow_integer`` and ``dtype`` is integral.
    :param ndim: the allowed rank(s).
    :raises TypeError: for non-numeric input (strings, objects, complex numbers).
    :raises ValueError: for a wrong rank, an empty array, or NaN/infinite entries.
    """
    if hasattr(value, "to_numpy"):  # pandas Series / DataFrame
        value = value.to_numpy()
    if isinstance(value, Tensor):
        tensor = value
    else:
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(
                f"{name} must hold real numbers, got an array of dtype {array.dtype}; "
                "encode categorical columns as numbers first."
            )
        if not array.flags.writeable:  # pandas copy-on-write hands out read-only views
            array = array.copy()
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.dtype.is_complex or tensor.dtype == torch.bool and not allow_integer:
        raise TypeError(f"{name} must hold real numbers, got dtype {tensor.dtype}.")
    target = dtype if dtype is not None else torch.get_default_dtype()
    if target.is_floating_point:
        tensor = tensor.to(target)
    else:
        if tensor.is_floating_point():
            rounded = tensor.round()
            if not torch.equal(rounded, tensor):
                raise TypeError(f"{name} must hold integer class labels, got non-integer values.")
        tensor = tensor.to(target)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if tensor.dim() not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            hint = " Reshape a single feature with x.reshape(-1, 1)." if 2 in allowed and tensor.dim() == 1 else ""
            raise ValueError(f"{name} must be {want}, got shape {tuple(tensor.shape)}.{hint}")
    if tensor.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(tensor.shape)}).")
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s); drop or impute them first.")
    return tensor


def check_same_length(x_name: str, x: Tensor, y_name: str, y: Tensor) -> None:
    """Check that two arrays share their first dimension."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{x_name} and {y_name} must have the same number of rows, got {x.shape[0]} and {y.shape[0]}."
        )


def check_both_or_neither(x: Any, y: Any) -> None:
    """Raise a ValueError unless inputs ``x`` and targets ``y`` are both given or both ``None``.

    Scores and figures of a fit take new data as ``(x, y)`` and fall back on the training data when
    neither is given; half a data set is always a mistake.
    """
    if (x is None) != (y is None):
        raise ValueError("pass both x and y, or neither to use the training data.")


def reject_unknown_options(function: str, unknown: Mapping[str, Any], options: Iterable[str]) -> None:
    """Raise a TypeError for keyword arguments that ``function`` does not take.

    Names close to a real option are suggested; anything else is probably model data passed by
    keyword, which belongs in ``model_kwargs`` (or positionally).
    """
    if not unknown:
        return
    import difflib

    choices = list(options)
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, choices, n=1)
        if close:
            hints.append(f"{name!r} (did you mean {close[0]!r}?)")
        else:
            hints.append(repr(name))
    raise TypeError(
        f"{function} got unexpected keyword argument(s) {', '.join(hints)}. Model data go positionally, "
        f"{function}(model, x, y), or as model_kwargs={{...}}; the options are {', '.join(sorted(choices))}."
    )
