"""Tests for probgen/models/diffusion/networks.py: shapes, batching and argument checks."""

from __future__ import annotations

import pytest
import torch

from probgen.models.diffusion import ConvDenoiser, MLPDenoiser, SinusoidalEmbedding


def test_sinusoidal_embedding_distinguishes_steps():
    emb = SinusoidalEmbedding(16)(torch.arange(1, 51))
    assert emb.shape == (50, 16)
    assert torch.cdist(emb, emb).fill_diagonal_(1.0).min() > 1e-3


def test_mlp_denoiser_handles_extra_batch_dims():
    net = MLPDenoiser(3, hidden_dim=16, num_blocks=2)
    x = torch.randn(4, 5, 3)
    t = torch.randint(1, 10, (4, 5))
    out = net(x, t)
    assert out.shape == x.shape
    # the same as running the rows one by one
    torch.testing.assert_close(out[2, 3], net(x[2, 3][None], t[2, 3][None])[0])


def test_conv_denoiser_shapes_and_time_dependence():
    net = ConvDenoiser(1, hidden_channels=8, num_blocks=2)
    x = torch.randn(3, 1, 8, 8)
    out1 = net(x, torch.tensor([1, 1, 1]))
    out2 = net(x, torch.tensor([50, 50, 50]))
    assert out1.shape == x.shape
    assert not torch.allclose(out1, out2)


def test_network_errors():
    with pytest.raises(ValueError, match="x has 3 features but the network expects 2"):
        MLPDenoiser(2, hidden_dim=8)(torch.zeros(4, 3), torch.ones(4, dtype=torch.long))
    with pytest.raises(ValueError, match="multiple of 8"):
        ConvDenoiser(1, hidden_channels=12)
    with pytest.raises(ValueError, match="dim must be even"):
        SinusoidalEmbedding(7)
    with pytest.raises(ValueError, match=r"x must have shape \(\*batch, 1, height, width\)"):
        ConvDenoiser(1, hidden_channels=8)(torch.zeros(2, 3, 8, 8), torch.ones(2, dtype=torch.long))
