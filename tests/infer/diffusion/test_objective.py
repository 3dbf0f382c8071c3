"""Tests for probgen/infer/diffusion/objective.py: the ELBO estimator against Pyro, the step sampler.

Statistical checks use ``Z_SCORE * standard error`` from tests/_stats.py (z = 4.5); each states its se.
"""

from __future__ import annotations

import math
import warnings

import pyro
import pytest
import torch

from probgen.infer.diffusion import TIMESTEP_SAMPLINGS, TimestepSampler, eps_mse, estimate_bound
from probgen.models.diffusion import VARIANCES
from tests._stats import Z_SCORE, iid_se_mean
from tests.infer.diffusion._common import DATA_VARIANCE, oracle_chain, pyro_elbo


def _estimator(chain, x0, timestep_probs=None, repeats=4000):
    """Mean and se of the per-t estimator, summed over x0's rows, from ``repeats`` independent draws."""
    with torch.no_grad():
        losses = estimate_bound(chain, x0.repeat(repeats, 1), timestep_probs=timestep_probs).loss
    totals = losses.reshape(repeats, x0.shape[0]).sum(1).numpy()
    return totals.mean(), iid_se_mean(totals)


@pytest.mark.parametrize("variance", VARIANCES)
@pytest.mark.parametrize("weighting", TIMESTEP_SAMPLINGS)
def test_per_t_estimator_matches_pyro_trace_mean_field_elbo(variance, weighting):
    chain = oracle_chain(num_timesteps=8, variance=variance)
    x0 = torch.randn(8, 2) * math.sqrt(DATA_VARIANCE)
    probs = None
    if weighting == "importance":
        probs = torch.arange(1, 9, dtype=torch.float64).flip(0)
        probs = probs / probs.sum()
    pyro_mean, pyro_se = pyro_elbo(chain, chain.guide, x0)
    est_mean, est_se = _estimator(chain, x0, probs)
    # se's are ~1 (Pyro, 30 x 200 particles) and ~3-8 (estimator, 4000 draws) on values ~300-400
    assert abs(est_mean - pyro_mean) < Z_SCORE * math.hypot(pyro_se, est_se)


def test_forward_order_guide_breaks_the_analytic_kl_but_not_trace_elbo():
    chain = oracle_chain(num_timesteps=8)
    x0 = torch.randn(8, 2) * math.sqrt(DATA_VARIANCE)
    right_mean, right_se = pyro_elbo(chain, chain.guide, x0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Failed to verify mean field restriction")
        wrong_mean, wrong_se = pyro_elbo(chain, chain.forward_guide, x0)
    trace_mean, trace_se = pyro_elbo(chain, chain.forward_guide, x0, pyro.infer.Trace_ELBO, particles=1000)
    # the forward-order analytic-KL value is off by ~10% (about 40 nats here), far beyond 4.5 se (~5)
    assert abs(wrong_mean - right_mean) > Z_SCORE * math.hypot(right_se, wrong_se)
    # the same forward-order guide with Monte Carlo log-ratios is right
    assert abs(trace_mean - right_mean) < Z_SCORE * math.hypot(right_se, trace_se)


def test_forward_order_guide_is_flagged_by_pyro():
    chain = oracle_chain(num_timesteps=3)
    with pytest.warns(UserWarning, match="Failed to verify mean field restriction"):
        pyro.infer.TraceMeanField_ELBO().loss(chain.model, chain.forward_guide, torch.zeros(2, 2))


def test_timestep_sampler_importance_weights():
    sampler = TimestepSampler(5, "importance", history=2)
    torch.testing.assert_close(sampler.probs(), torch.full((5,), 0.2, dtype=torch.float64))
    sampler.update(torch.tensor([1, 2, 3, 4, 5] * 2), torch.tensor([1.0, 1.0, 1.0, 1.0, 4.0] * 2))
    probs = sampler.probs()
    assert float(probs.sum()) == pytest.approx(1.0)
    assert float(probs[4]) == pytest.approx(0.999 * 0.5 + 0.001 * 0.2)
    t, weights = sampler.sample(1000, torch.Generator().manual_seed(0))
    # the vectorised ring buffer keeps what a step-by-step loop keeps
    steps, values = torch.randint(1, 6, (40,)), torch.rand(40)
    squares, counts = sampler.squares.clone(), sampler.counts.clone()
    for step, value in zip(steps.tolist(), values.tolist()):
        squares[step - 1, counts[step - 1] % 2] = value**2
        counts[step - 1] += 1
    sampler.update(steps, values)
    torch.testing.assert_close(sampler.squares, squares)
    assert torch.equal(sampler.counts, counts)
    torch.testing.assert_close(weights, 1 / (5 * probs[t - 1]))
    with pytest.raises(ValueError, match="unknown timestep_sampling 'imp'"):
        TimestepSampler(5, "imp")  # type: ignore[arg-type]


@pytest.mark.parametrize("timestep_sampling", TIMESTEP_SAMPLINGS)
def test_timestep_sampler_names_its_method_as_fit_diffusion_does(timestep_sampling):
    sampler = TimestepSampler(4, timestep_sampling=timestep_sampling)
    assert sampler.timestep_sampling == timestep_sampling and sampler.num_timesteps == 4


def test_eps_mse_is_zero_for_the_exact_noise_predictor():
    """A net that returns the true noise: x_t = sqrt(ab) x0 + sqrt(1 - ab) eps with x0 = 0 gives eps exactly."""
    chain = oracle_chain(num_timesteps=6, scale=1.0)
    chain = chain.replace_net(_NoiseOfZeroData(chain))
    assert float(eps_mse(chain, torch.zeros(5, 2), torch.Generator().manual_seed(0)).abs().max()) < 1e-12


class _NoiseOfZeroData(torch.nn.Module):
    def __init__(self, chain):
        super().__init__()
        self.sqrt_1mab = chain.schedule.sqrt_one_minus_alphas_cumprod

    def forward(self, x, t):
        return x / self.sqrt_1mab[t - 1][:, None]
