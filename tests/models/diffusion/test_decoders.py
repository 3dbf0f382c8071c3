"""Tests for probgen/models/diffusion/decoders.py: the discretised normal and the decoders.

Statistical checks use ``Z_SCORE * standard error`` from tests/_stats.py (z = 4.5).
"""

from __future__ import annotations

import pytest
import torch

from probgen.models.diffusion import DiscretizedGaussianDecoder, DiscretizedNormal, GaussianDecoder
from tests._stats import Z_SCORE


@pytest.mark.parametrize("loc", [-3.0, -1.0, -0.3, 0.0, 0.97, 2.5])
@pytest.mark.parametrize("scale", [1e-3, 0.05, 1.0, 10.0])
def test_discretized_probabilities_over_all_bins_sum_to_one(loc, scale):
    levels = torch.linspace(-1, 1, 17)
    d = DiscretizedNormal(torch.tensor(loc), torch.tensor(scale), half_width=1 / 16)
    log_p = d.log_prob(levels)
    assert torch.isfinite(log_p).all()
    assert float(log_p.exp().sum()) == pytest.approx(1.0, abs=1e-12)


def test_discretized_matches_cdf_difference_and_sampling():
    loc, scale = torch.tensor(0.2), torch.tensor(0.3)
    levels = torch.linspace(-1, 1, 17)
    d = DiscretizedNormal(loc, scale, half_width=1 / 16)
    normal = torch.distributions.Normal(loc, scale)
    edges = normal.cdf(levels + 1 / 16) - normal.cdf(levels - 1 / 16)
    edges[0] = normal.cdf(levels[0] + 1 / 16)
    edges[-1] = 1 - normal.cdf(levels[-1] - 1 / 16)
    probs = d.log_prob(levels).exp()
    torch.testing.assert_close(probs, edges)
    draws = d.sample((50000,))
    assert set(torch.unique(draws).tolist()) <= set(levels.tolist())
    freq = torch.stack([(draws == v).double().mean() for v in levels])
    # binomial se per bin sqrt(p (1 - p) / n) <= 0.0023; tolerance 4.5 se
    se = (probs * (1 - probs) / 50000).sqrt()
    assert torch.all((freq - probs).abs() <= Z_SCORE * se + 1e-12)


def test_discretized_log_prob_stays_finite_far_in_the_tails():
    d = DiscretizedNormal(torch.tensor(-1.0), torch.tensor(1e-3), half_width=1 / 16)
    log_p = d.log_prob(torch.tensor([1.0, 0.5, -0.875]))
    assert torch.isfinite(log_p).all()
    assert float(log_p[0]) < -1e5


def test_decoder_modes_sit_on_their_grid():
    decoder = DiscretizedGaussianDecoder(17)
    loc = torch.tensor([-3.0, -0.97, 0.03, 0.5, 2.0])
    torch.testing.assert_close(decoder.mode(loc), torch.tensor([-1.0, -1.0, 0.0, 0.5, 1.0]))
    # the mode is the grid value that sampling rounds to
    d = decoder.distribution(loc, torch.full_like(loc, 1e-6))
    torch.testing.assert_close(d.round(loc), decoder.mode(loc))
    assert torch.equal(GaussianDecoder().mode(loc), loc)


def test_decoders_describe_themselves_as_plain_data():
    assert GaussianDecoder().get_config() == {}
    config = DiscretizedGaussianDecoder(5, low=0.0, high=4.0).get_config()
    assert config == {"num_levels": 5, "low": 0.0, "high": 4.0}
    assert DiscretizedGaussianDecoder(**config).half_width == 0.5
