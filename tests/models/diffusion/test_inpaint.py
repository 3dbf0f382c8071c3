"""Tests for probgen/models/diffusion/inpaint.py: the replacement method as an effect handler."""

from __future__ import annotations

import pyro
import torch

from probgen.models.diffusion import DiffusionChain, InpaintMessenger, MLPDenoiser, get_schedule


def _chain(num_timesteps=6):
    return DiffusionChain(MLPDenoiser(2, hidden_dim=16, num_blocks=1), get_schedule("cosine", num_timesteps), event_shape=(2,))


def test_inpaint_messenger_keeps_observed_coordinates():
    chain = _chain(num_timesteps=6)
    x_obs = torch.tensor([[0.3, 0.0]]).expand(50, 2)
    with InpaintMessenger(chain, x_obs, torch.tensor([True, False])):
        trace = pyro.poutine.trace(chain.model).get_trace(num_samples=50)
    assert torch.equal(trace.nodes["x_0"]["value"][:, 0], x_obs[:, 0])
    # intermediate states carry noisy copies of the observation, not the observation itself
    assert trace.nodes["x_3"]["value"][:, 0].std() > 0.1
