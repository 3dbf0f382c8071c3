"""Small functions behind the diffusion chain: sums over the event, stable log-CDF differences, condition checks."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from probgen._validate import check_positive_int


def sum_event(value: Tensor, event_dim: int) -> Tensor:
    """Sum the trailing ``event_dim`` dimensions of ``value``."""
    if event_dim == 0:
        return value
    return value.sum(dim=tuple(range(-event_dim, 0)))


def log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, accurate on both sides of ``-log 2`` (Maechler, 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def log_normal_interval(lower: Tensor, upper: Tensor) -> Tensor:
    """``log(Phi(upper) - Phi(lower))`` for standard-normal ``Phi`` and ``lower < upper``.

    Both ends are reflected to the left tail when ``lower > 0`` (``Phi(b) - Phi(a) = Phi(-a) - Phi(-b)``),
    where ``log_ndtr`` keeps full relative precision, so narrow bins far in a tail stay finite.
    """
    flip = lower > 0
    a = torch.where(flip, -upper, lower)
    b = torch.where(flip, -lower, upper)
    log_b = torch.special.log_ndtr(b)
    log_a = torch.special.log_ndtr(a)
    return log_b + log1mexp((log_a - log_b).clamp(max=-1e-300 if a.dtype == torch.float64 else -1e-38))


def check_condition_options(num_classes: Any, cond_dim: Any, prefix: str = "") -> tuple[int | None, int | None]:
    """``(num_classes, cond_dim)`` checked: each ``None`` or a positive int, and not both given.

    :param str prefix: put before the names in messages (``"net."`` for a network's attributes).
    """
    if num_classes is not None and cond_dim is not None:
        raise ValueError(
            f"got {prefix}num_classes={num_classes!r} and {prefix}cond_dim={cond_dim!r}; a denoiser is conditioned "
            "on class labels (num_classes) or on covariates (cond_dim), not both."
        )
    if num_classes is not None:
        num_classes = check_positive_int(f"{prefix}num_classes", num_classes)
    if cond_dim is not None:
        cond_dim = check_positive_int(f"{prefix}cond_dim", cond_dim)
    return num_classes, cond_dim


def describe_condition(num_classes: int | None, cond_dim: int | None) -> str:
    """What a denoiser is conditioned on, in words, for messages."""
    if num_classes is not None:
        return f"class labels (num_classes={num_classes})"
    if cond_dim is not None:
        return f"covariates (cond_dim={cond_dim})"
    return "nothing (it is unconditional)"


def check_condition(
    name: str,
    condition: Any,
    *,
    num_classes: int | None,
    cond_dim: int | None,
    batch_shape: torch.Size,
    dtype: torch.dtype,
    owner: str,
    rows_of: str,
) -> Tensor | None:
    """A denoiser's condition checked and broadcast to ``batch_shape`` (labels) or ``(*batch_shape, cond_dim)``.

    Class labels must be an integer tensor with values in ``[0, num_classes)``; covariates a finite
    floating tensor whose last dimension is ``cond_dim`` (cast to ``dtype``). The rest of the shape
    broadcasts against ``batch_shape`` as torch broadcasts: one row (or a label of shape ``()``) serves
    every row.

    :param str name: the argument's name, for messages (``"condition"``, ``"c"``).
    :param str owner: the network, for messages.
    :param str rows_of: what has the rows the condition must match, for messages (``"x0"``).
    :returns: ``None`` for an unconditional network (which must get ``None``), else the broadcast condition.
    :raises ValueError: for a missing or unexpected condition, a wrong shape, labels out of range or
        covariates that are not finite.
    :raises TypeError: for labels that are not integers or covariates that are not floats.
    """
    if num_classes is None and cond_dim is None:
        if condition is not None:
            raise ValueError(
                f"{name} was given, but {owner} is unconditional; drop {name}=, or build the network with "
                "num_classes= (class labels) or cond_dim= (covariates) to condition on it."
            )
        return None
    if condition is None:
        expected = _condition_shape(batch_shape, cond_dim)
        raise ValueError(
            f"{owner} is conditioned on {describe_condition(num_classes, cond_dim)} and needs {name}=..., "
            f"shape {expected}, one row per row of {rows_of}; got none."
        )
    if not isinstance(condition, Tensor):
        condition = torch.as_tensor(condition)
    if num_classes is not None:
        if condition.is_floating_point() or condition.is_complex() or condition.dtype == torch.bool:
            raise TypeError(
                f"{name} must be an integer tensor of class labels in [0, {num_classes}), got dtype "
                f"{condition.dtype}; convert it with .long()."
            )
        lead = condition.shape
    else:
        if not condition.is_floating_point():
            raise TypeError(
                f"{name} must be a floating tensor of covariates, shape {_condition_shape(batch_shape, cond_dim)}, "
                f"got dtype {condition.dtype}; convert it with .to(torch.get_default_dtype())."
            )
        if condition.dim() == 0 or condition.shape[-1] != cond_dim:
            hint = f" Reshape a single covariate with {name}.reshape(-1, 1)." if cond_dim == 1 else ""
            width = condition.shape[-1] if condition.dim() else "no"
            raise ValueError(
                f"{name} has {width} covariates per row (shape {tuple(condition.shape)}), but {owner} expects "
                f"cond_dim={cond_dim}: shape {_condition_shape(batch_shape, cond_dim)}.{hint}"
            )
        lead = condition.shape[:-1]
    try:
        fits = torch.broadcast_shapes(lead, batch_shape) == batch_shape
    except RuntimeError:
        fits = False
    if not fits:
        what = f"the {batch_shape[0]} rows" if len(batch_shape) == 1 else f"the batch shape {tuple(batch_shape)}"
        raise ValueError(
            f"{name} must have shape {_condition_shape(batch_shape, cond_dim)} to match {what} of {rows_of} "
            f"(a dimension of size 1 is broadcast), got shape {tuple(condition.shape)}."
        )
    if num_classes is not None:
        if condition.numel() and (int(condition.min()) < 0 or int(condition.max()) >= num_classes):
            raise ValueError(
                f"{name} holds class labels from {int(condition.min())} to {int(condition.max())}, but {owner} "
                f"has num_classes={num_classes}: labels must lie in [0, {num_classes})."
            )
        return condition.long().expand(batch_shape)
    if not bool(torch.isfinite(condition).all()):
        bad = int((~torch.isfinite(condition)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite covariate value(s); drop or impute them first.")
    return condition.to(dtype).expand(*batch_shape, condition.shape[-1])


def _condition_shape(batch_shape: torch.Size, cond_dim: int | None) -> tuple[int, ...]:
    return tuple(batch_shape) + (() if cond_dim is None else (cond_dim,))
