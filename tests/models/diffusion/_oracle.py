"""An exact denoiser for Gaussian data, the stand-in that makes diffusion tests exact."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from probgen.models.diffusion import Schedule


class GaussianOracle(nn.Module):
    """``E[epsilon | x_t]`` for data ``x_0 ~ N(0, variance I)``, times a learnable ``scale`` (1 = exact).

    Under ``q``, ``x_t ~ N(0, (alpha_bar_t variance + 1 - alpha_bar_t) I)`` and
    ``E[epsilon | x_t] = sqrt(1 - alpha_bar_t) x_t / (alpha_bar_t variance + 1 - alpha_bar_t)``.
    """

    def __init__(self, schedule: Schedule, variance: float, scale: float = 1.0, event_dim: int = 1) -> None:
        super().__init__()
        self.alphas_cumprod = schedule.alphas_cumprod
        self.variance = variance
        self.event_dim = event_dim
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        ab = self.alphas_cumprod.to(x.dtype)[t - 1].reshape(t.shape + (1,) * self.event_dim)
        return self.scale * (1 - ab).sqrt() * x / (ab * self.variance + 1 - ab)
