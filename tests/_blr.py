"""Bayesian linear regression with a known noise scale: the exact posterior that inference must recover.

A BNN with no hidden layer (one ``nn.Linear(d, 1)``), a Gaussian prior of scale ``s`` on weight
and bias, and Gaussian noise of known scale ``sigma`` is Bayesian linear regression. With the
design ``A = [X, 1]`` the posterior over ``theta = [w, b]`` is Gaussian with

    Sigma = (A^T A / sigma^2 + I / s^2)^-1,    mu = Sigma A^T y / sigma^2.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from probgen import BNN, Gaussian, GaussianPrior

PRIOR_SCALE = 1.0
NOISE_SCALE = 0.5


class BLRProblem(NamedTuple):
    model: BNN
    x: Tensor
    y: Tensor
    mean: Tensor  # exact posterior mean of [w_1..w_d, b]
    cov: Tensor  # exact posterior covariance


def make_blr(num_points: int = 40, num_features: int = 2, seed: int = 1) -> BLRProblem:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_points, num_features, generator=gen, dtype=torch.float64)
    w_true = torch.tensor([1.0, -0.5, 0.25, 2.0], dtype=torch.float64)[:num_features]
    y = x @ w_true + 0.3 + NOISE_SCALE * torch.randn(num_points, generator=gen, dtype=torch.float64)
    design = torch.cat([x, torch.ones(num_points, 1, dtype=torch.float64)], dim=1)
    precision = design.T @ design / NOISE_SCALE**2 + torch.eye(num_features + 1, dtype=torch.float64) / PRIOR_SCALE**2
    cov = torch.linalg.inv(precision)
    mean = cov @ design.T @ y / NOISE_SCALE**2
    net = nn.Linear(num_features, 1).double()
    model = BNN(net, GaussianPrior(PRIOR_SCALE), Gaussian(noise_scale=NOISE_SCALE))
    return BLRProblem(model, x, y, mean, cov)


def stack_theta(samples: dict[str, Tensor]) -> Tensor:
    """Draws of ``[w, b]`` shaped ``(chain, draw, d + 1)``."""
    w = samples["weight"]  # (chain, draw, 1, d)
    b = samples["bias"]  # (chain, draw, 1)
    return torch.cat([w[..., 0, :], b], dim=-1)
