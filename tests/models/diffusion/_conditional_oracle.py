"""An exact conditional denoiser for Gaussian data, the stand-in that makes conditional diffusion tests exact."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from probgen.models.diffusion import DiffusionChain, Schedule, get_schedule


class ConditionalGaussianOracle(nn.Module):
    """``E[epsilon | x_t, c]`` for data ``x_0 | c ~ N(m(c), variance I)``, times a learnable ``scale`` (1 = exact).

    ``m(c) = means[c]`` for class labels (``means`` of shape ``(num_classes, D)``), or ``m(c) = c @ weights``
    for covariates (``weights`` of shape ``(cond_dim, D)``). Under ``q``,
    ``x_t | c ~ N(sqrt(alpha_bar_t) m(c), s_t I)`` with ``s_t = alpha_bar_t variance + 1 - alpha_bar_t``, so
    ``E[epsilon | x_t, c] = sqrt(1 - alpha_bar_t) (x_t - sqrt(alpha_bar_t) m(c)) / s_t``.
    Like probgen's own nets it says what it is conditioned on through ``num_classes`` or ``cond_dim``.
    """

    def __init__(
        self, schedule: Schedule, variance: float, *, means: Tensor | None = None, weights: Tensor | None = None
    ) -> None:
        super().__init__()
        self.alphas_cumprod = schedule.alphas_cumprod
        self.variance = variance
        self.means = means
        self.weights = weights
        self.num_classes = None if means is None else int(means.shape[0])
        self.cond_dim = None if weights is None else int(weights.shape[0])
        self.scale = nn.Parameter(torch.tensor(1.0))

    def mean(self, c: Tensor) -> Tensor:
        """``m(c)``, shape ``(*batch, D)``."""
        if self.means is not None:
            return self.means.to(self.scale.dtype)[c]
        assert self.weights is not None
        return c @ self.weights.to(c.dtype)

    def forward(self, x: Tensor, t: Tensor, c: Tensor) -> Tensor:
        ab = self.alphas_cumprod.to(x.dtype)[t - 1].reshape(t.shape + (1,))
        return self.scale * (1 - ab).sqrt() * (x - ab.sqrt() * self.mean(c)) / (ab * self.variance + 1 - ab)


#: The class means of the two-class oracle: class 0 around (-2, 1), class 1 around (2, -1).
CLASS_MEANS = torch.tensor([[-2.0, 1.0], [2.0, -1.0]])
#: The data variance of every oracle chain here.
ORACLE_VARIANCE = 0.09


def class_oracle_chain(num_timesteps: int = 100, variance: str = "fixed_small") -> DiffusionChain:
    """A chain whose denoiser is the exact one for two classes ``N(CLASS_MEANS[c], 0.09 I)`` in 2-D."""
    sched = get_schedule("cosine", num_timesteps)
    net = ConditionalGaussianOracle(sched, ORACLE_VARIANCE, means=CLASS_MEANS)
    return DiffusionChain(net, sched, event_shape=(2,), variance=variance)


def covariate_oracle_chain(weights: Tensor, num_timesteps: int = 100) -> DiffusionChain:
    """A chain whose denoiser is the exact one for ``y | c ~ N(c @ weights, 0.09 I)``."""
    sched = get_schedule("cosine", num_timesteps)
    net = ConditionalGaussianOracle(sched, ORACLE_VARIANCE, weights=weights)
    return DiffusionChain(net, sched, event_shape=(int(weights.shape[1]),), variance="fixed_small")
