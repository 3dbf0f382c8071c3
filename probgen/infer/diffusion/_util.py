"""Argument checks shared by diffusion training, evaluation and sampling."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from probgen._validate import as_tensor
from probgen.models.diffusion.chain import DiffusionChain


def check_chain(chain: Any) -> DiffusionChain:
    """``chain`` if it is a :class:`DiffusionChain`, else a TypeError."""
    if not isinstance(chain, DiffusionChain):
        raise TypeError(f"chain must be a DiffusionChain, got {type(chain).__name__}.")
    return chain


def check_data(chain: DiffusionChain, data: Any, name: str = "data") -> Tensor:
    """``data`` as a tensor of rows ``(N, *event_shape)`` in the chain's dtype."""
    data = as_tensor(name, data, dtype=chain._dtype())
    if tuple(data.shape[1:]) != tuple(chain.event_shape):
        raise ValueError(
            f"{name} must have shape (N, {', '.join(map(str, chain.event_shape))}) to match the chain's "
            f"event_shape, got {tuple(data.shape)}."
        )
    return data


def check_condition(chain: DiffusionChain, condition: Any, num_rows: int, rows_of: str) -> Tensor | None:
    """``condition`` checked against ``chain``'s net and broadcast to ``num_rows`` rows, or ``None``.

    Class labels come back ``(num_rows,)``, covariates ``(num_rows, cond_dim)``; a single row is
    repeated. An unconditional chain must get ``None``, a conditional one a condition.

    :param str rows_of: what has the rows, for messages (``"data"``).
    """
    return chain._check_condition("condition", condition, torch.Size([num_rows]), rows_of)


def repeat_rows(values: Tensor, times: int) -> Tensor:
    """``values`` ``(N, ...)`` repeated as ``(times * N, ...)``: row ``k * N + i`` is row ``i``."""
    return values.expand(times, *values.shape).reshape(-1, *values.shape[1:])
