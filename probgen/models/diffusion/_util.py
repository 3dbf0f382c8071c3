"""Small pure functions behind the diffusion chain: sums over the event, stable log-CDF differences."""

from __future__ import annotations

import math

import torch
from torch import Tensor


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
