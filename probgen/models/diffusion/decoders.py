"""Decoders ``p_theta(x_0 | x_1)``: the last reverse step of a diffusion chain, continuous or discretised.

The chain computes the mean and scale of its last step; a :class:`Decoder` turns them into an
elementwise distribution over the data. :class:`GaussianDecoder` gives a density for continuous data,
:class:`DiscretizedGaussianDecoder` a probability for data quantised to evenly spaced levels, so the
chain's bound is on the discrete negative log-likelihood ([1] Section 3.3, eq. 13).

References:

[1] J. Ho, A. Jain, P. Abbeel (2020), "Denoising Diffusion Probabilistic Models", NeurIPS.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch import Tensor
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all

from probgen._validate import check_positive_int
from probgen.models.diffusion._util import log_normal_interval

__all__ = ["Decoder", "DiscretizedGaussianDecoder", "DiscretizedNormal", "GaussianDecoder"]


class DiscretizedNormal(TorchDistribution):
    """A normal distribution discretised to the bin centres of a uniform grid on ``[low, high]``.

    A value ``x`` on the grid owns the bin ``[x - h, x + h]`` of half-width ``h``; its probability is
    ``Phi((x + h - loc)/scale) - Phi((x - h - loc)/scale)``, and the two edge bins extend to
    ``-inf`` and ``+inf``, so the probabilities of all grid values sum to one ([1] eq. 13). Sampling
    draws from the normal and rounds to the nearest grid value, which has exactly these
    probabilities. Elementwise: ``event_shape`` is ``()``.

    :param Tensor loc: the normal's mean.
    :param Tensor scale: the normal's standard deviation.
    :param float half_width: half the distance between neighbouring grid values.
    :param float low: the lowest grid value.
    :param float high: the highest grid value.

    Example::

        >>> d = DiscretizedNormal(torch.tensor(0.0), torch.tensor(0.5), half_width=0.5, low=-1.0, high=1.0)
        >>> round(float(d.log_prob(torch.tensor([-1.0, 0.0, 1.0])).exp().sum()), 6)
        1.0
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = False

    def __init__(
        self,
        loc: Tensor,
        scale: Tensor,
        *,
        half_width: float,
        low: float = -1.0,
        high: float = 1.0,
        validate_args: bool | None = None,
    ) -> None:
        self.loc, self.scale = broadcast_all(loc, scale)
        self.half_width = float(half_width)
        self.low = float(low)
        self.high = float(high)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape: Sequence[int], _instance: Any = None) -> DiscretizedNormal:
        new = self._get_checked_instance(DiscretizedNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        new.scale = self.scale.expand(batch_shape)
        new.half_width, new.low, new.high = self.half_width, self.low, self.high
        super(DiscretizedNormal, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: Tensor) -> Tensor:
        centred = value - self.loc
        upper = (centred + self.half_width) / self.scale
        lower = (centred - self.half_width) / self.scale
        # [1] eq. 13: the edge bins extend to -inf (lowest value) and +inf (highest value)
        first = value < self.low + self.half_width
        last = value > self.high - self.half_width
        interior = log_normal_interval(lower, upper)
        return torch.where(
            first,
            torch.special.log_ndtr(upper),
            torch.where(last, torch.special.log_ndtr(-lower), interior),
        )

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> Tensor:
        with torch.no_grad():
            shape = self._extended_shape(torch.Size(sample_shape))
            x = self.loc.expand(shape) + self.scale.expand(shape) * torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
            return self.round(x)

    def round(self, x: Tensor) -> Tensor:
        """Map real values to the nearest grid value (clamped to ``[low, high]``)."""
        return _round_to_grid(x, self.half_width, self.low, self.high)


def _round_to_grid(x: Tensor, half_width: float, low: float, high: float) -> Tensor:
    """The grid value nearest to ``x``: grid values ``low, low + 2 half_width, ..., high``."""
    width = 2.0 * half_width
    return (low + torch.round((x - low) / width) * width).clamp(low, high)


class Decoder(ABC):
    """The last reverse step ``p_theta(x_0 | x_1)``, given the mean and scale the chain computes.

    Subclass it and implement :meth:`distribution`, returning an elementwise (``event_shape == ()``)
    Pyro distribution; the chain reinterprets the data dimensions as its event. :meth:`mode`
    (a point estimate used by deterministic samplers) defaults to the mean.

    Example::

        >>> class LaplaceDecoder(Decoder):
        ...     def distribution(self, loc, scale):
        ...         return dist.Laplace(loc, scale)
        >>> LaplaceDecoder().distribution(torch.zeros(2), torch.ones(2)).batch_shape
        torch.Size([2])
    """

    @abstractmethod
    def distribution(self, loc: Tensor, scale: Tensor) -> TorchDistribution:
        """The decoder distribution with mean ``loc`` and scale ``scale``, elementwise."""

    def mode(self, loc: Tensor) -> Tensor:
        """The decoder's most probable value for mean ``loc`` (continuous decoders: ``loc``)."""
        return loc

    def get_config(self) -> dict[str, Any] | None:
        """The keyword arguments that rebuild this decoder, as plain data, or ``None`` if there are none.

        :func:`~probgen.models.diffusion.io.save_chain` stores them; a decoder that returns ``None``
        (the default for subclasses) is passed again to :func:`~probgen.models.diffusion.io.load_chain`.
        """
        return None


class GaussianDecoder(Decoder):
    """``p(x_0 | x_1) = N(mu_theta(x_1, 1), sigma_1^2 I)`` for continuous data (a density).

    Example::

        >>> GaussianDecoder().distribution(torch.zeros(3), torch.ones(3)).log_prob(torch.zeros(3)).shape
        torch.Size([3])
    """

    def distribution(self, loc: Tensor, scale: Tensor) -> TorchDistribution:
        return dist.Normal(loc, scale)

    def get_config(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        return "GaussianDecoder()"


class DiscretizedGaussianDecoder(Decoder):
    """A Gaussian decoder discretised to ``num_levels`` evenly spaced values on ``[low, high]``.

    For data quantised to ``num_levels`` levels the bins have half-width
    ``(high - low) / (2 (num_levels - 1))``: 1/16 for scikit-learn's 17-level digits on ``[-1, 1]``,
    1/255 for 8-bit images. The chain's bound is then a bound on the discrete negative
    log-likelihood ([1] Section 3.3, eq. 13).

    :param int num_levels: the number of quantisation levels (at least 2).
    :param float low: the lowest level's value.
    :param float high: the highest level's value.

    Example::

        >>> DiscretizedGaussianDecoder(17).half_width
        0.0625
    """

    def __init__(self, num_levels: int, *, low: float = -1.0, high: float = 1.0) -> None:
        num_levels = check_positive_int("num_levels", num_levels)
        if num_levels < 2:
            raise ValueError(f"num_levels must be at least 2, got {num_levels}.")
        if not high > low:
            raise ValueError(f"high must exceed low, got low={low} and high={high}.")
        self.num_levels = num_levels
        self.low = float(low)
        self.high = float(high)
        self.half_width = (self.high - self.low) / (2.0 * (num_levels - 1))

    def distribution(self, loc: Tensor, scale: Tensor) -> TorchDistribution:
        return DiscretizedNormal(loc, scale, half_width=self.half_width, low=self.low, high=self.high)

    def mode(self, loc: Tensor) -> Tensor:
        # the bin that contains the mean has the largest probability
        return _round_to_grid(loc, self.half_width, self.low, self.high)

    def get_config(self) -> dict[str, Any]:
        return {"num_levels": self.num_levels, "low": self.low, "high": self.high}

    def __repr__(self) -> str:
        return f"DiscretizedGaussianDecoder({self.num_levels}, low={self.low}, high={self.high})"
