"""Argument checks shared by diffusion training, evaluation and sampling."""

from __future__ import annotations

from typing import Any

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
