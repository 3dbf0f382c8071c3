"""Exact stand-ins shared by the diffusion inference tests: oracle chains and Pyro's own ELBO."""

from __future__ import annotations

import numpy as np
import pyro
import torch

from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
from tests._stats import iid_se_mean
from tests.models.diffusion._oracle import GaussianOracle

DATA_VARIANCE = 0.5


def oracle_chain(num_timesteps=8, variance="fixed_large", scale=0.8, schedule="cosine"):
    """A chain whose denoiser is the exact one for N(0, 0.5 I) data, mis-scaled by ``scale``."""
    sched = get_schedule(schedule, num_timesteps)
    return DiffusionChain(GaussianOracle(sched, DATA_VARIANCE, scale), sched, event_shape=(2,), variance=variance)


def pyro_elbo(chain, guide, x0, elbo_class=pyro.infer.TraceMeanField_ELBO, repeats=30, particles=200):
    """Mean and se of Pyro's loss (negative ELBO, summed over x0's rows) from independent repeats."""
    elbo = elbo_class(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    with torch.no_grad():
        values = np.array([elbo.loss(chain.model, guide, x0) for _ in range(repeats)])
    return values.mean(), iid_se_mean(values)


def small_chain(variance="fixed_small"):
    """An untrained 2-D chain with shrunken weights (a smooth, non-trivial denoiser)."""
    net = MLPDenoiser(2, hidden_dim=16, num_blocks=1)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.5)
    return DiffusionChain(net, get_schedule("cosine", 10), event_shape=(2,), variance=variance)
