"""Tests for probgen/models/diffusion/chain.py: q, p, the closed-form terms and the Pyro programs.

Statistical checks use ``Z_SCORE * standard error`` from tests/_stats.py (z = 4.5).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from probgen.models.diffusion import (
    PREDICTIONS,
    VARIANCES,
    ConvDenoiser,
    DiffusionChain,
    DiscretizedGaussianDecoder,
    DiscretizedNormal,
    MLPDenoiser,
    get_schedule,
)
from tests._stats import Z_SCORE, iid_se_mean


def _chain(num_timesteps=10, variance="fixed_large", prediction="epsilon", decoder=None, schedule="cosine"):
    net = MLPDenoiser(2, hidden_dim=16, num_blocks=1)
    return DiffusionChain(
        net,
        get_schedule(schedule, num_timesteps),
        event_shape=(2,),
        variance=variance,
        prediction=prediction,
        decoder=decoder,
    )


def test_q_sample_moments_match_closed_form():
    chain = _chain(num_timesteps=10)
    x0 = torch.tensor([[1.5, -0.5]]).expand(20000, 2)
    t = 6
    draws = chain.q_sample(x0, t)
    ab = float(chain.schedule.alphas_cumprod[t - 1])
    mean = draws.mean(0)
    # sd = sqrt(1 - ab) <= 1 and n = 20000, so se <= 0.0071 and 4.5 se <= 0.032
    se = math.sqrt(1 - ab) / math.sqrt(20000)
    assert torch.all((mean - math.sqrt(ab) * x0[0]).abs() < Z_SCORE * se)
    # var of a sample variance: 2 sigma^4 / (n - 1); 4.5 se ~ 0.045 (1 - ab)
    var_se = math.sqrt(2 / 19999) * (1 - ab)
    assert torch.all((draws.var(0) - (1 - ab)).abs() < Z_SCORE * var_se)


@pytest.mark.parametrize("t", [2, 5, 10])
def test_q_posterior_is_gaussian_conditioning(t):
    """q(x_{t-1} | x_t, x_0) from conjugate Gaussian algebra: prior q(x_{t-1}|x_0), likelihood q(x_t|x_{t-1})."""
    chain = _chain(num_timesteps=10)
    x0, x_t = torch.randn(5, 2), torch.randn(5, 2)
    s = chain.schedule
    ab_prev, alpha, beta = s.alphas_cumprod_prev[t - 1], s.alphas[t - 1], s.betas[t - 1]
    precision = 1 / (1 - ab_prev) + alpha / beta
    mean = (ab_prev.sqrt() * x0 / (1 - ab_prev) + alpha.sqrt() * x_t / beta) / precision
    got_mean, got_var, got_log_var = chain.q_posterior(x0, x_t, t)
    torch.testing.assert_close(got_mean, mean)
    torch.testing.assert_close(got_var.expand(5, 2), (1 / precision).expand(5, 2))
    torch.testing.assert_close(got_log_var.exp().expand(5, 2), (1 / precision).expand(5, 2))


def test_prior_kl_matches_monte_carlo():
    chain = _chain(num_timesteps=5, schedule="linear")  # alpha_bar_T far from 0, so L_T is not negligible
    chain = DiffusionChain(chain.net, get_schedule("linear", 200), event_shape=(2,))
    x0 = torch.tensor([[2.0, -1.0]])
    s = chain.schedule
    q = dist.Normal(s.sqrt_alphas_cumprod[-1] * x0, s.sqrt_one_minus_alphas_cumprod[-1]).to_event(1)
    draws = q.sample((40000,))
    log_ratio = q.log_prob(draws) - dist.Normal(0.0, 1.0).expand([2]).to_event(1).log_prob(draws)
    exact = float(chain.prior_kl(x0)[0])
    # se from the draws (~0.05 / 200 = 2.5e-4); tolerance 4.5 se
    assert abs(float(log_ratio.mean()) - exact) < Z_SCORE * iid_se_mean(log_ratio.numpy())


@pytest.mark.parametrize("variance", VARIANCES)
@pytest.mark.parametrize("t", [2, 7])
def test_kl_term_matches_monte_carlo(variance, t):
    chain = _chain(num_timesteps=10, variance=variance)
    x0 = torch.tensor([[0.7, -1.2]])
    noise = torch.randn(1, 2)
    with torch.no_grad():
        exact = float(chain.vlb_term(x0, t, noise)[0])
        x_t = chain.q_sample(x0, t, noise)
        q_mean, q_var, _ = chain.q_posterior(x0, x_t, t)
        q = dist.Normal(q_mean, q_var.sqrt().expand_as(q_mean)).to_event(1)
        out = chain.p_mean_variance(x_t, t)
        p = dist.Normal(out.mean, out.variance.sqrt().expand_as(out.mean)).to_event(1)
        draws = q.sample((40000,))
        log_ratio = (q.log_prob(draws) - p.log_prob(draws))[:, 0]
    # the log-ratio's sd sets the se (<= a few percent of the KL); tolerance 4.5 se
    assert abs(float(log_ratio.mean()) - exact) < Z_SCORE * iid_se_mean(log_ratio.numpy())


def test_decoder_term_is_negative_log_likelihood():
    chain = _chain(num_timesteps=10, decoder=DiscretizedGaussianDecoder(17))
    x0 = torch.tensor([[-1.0, 0.125]])
    noise = torch.randn(1, 2)
    with torch.no_grad():
        term = chain.vlb_term(x0, 1, noise)
        out = chain.p_mean_variance(chain.q_sample(x0, 1, noise), 1)
        log_p = DiscretizedNormal(out.mean, out.variance.sqrt().expand(1, 2), half_width=1 / 16).log_prob(x0).sum()
    torch.testing.assert_close(term, -log_p[None])


def test_mean_from_epsilon_is_the_posterior_mean_of_the_predicted_x0():
    chain = _chain(num_timesteps=10)
    x_t, t = torch.randn(6, 2), torch.tensor([2, 3, 4, 5, 6, 10])
    out = chain.p_mean_variance(x_t, t)
    torch.testing.assert_close(out.mean, chain.q_posterior(out.pred_x0, x_t, t)[0])


class _X0FromEpsilon(nn.Module):
    def __init__(self, chain):
        super().__init__()
        self.chain = chain
        self.inner = chain.net

    def forward(self, x, t):
        ab = self.chain.schedule.alphas_cumprod[t - 1][:, None]
        return (x - (1 - ab).sqrt() * self.inner(x, t)) / ab.sqrt()


def test_x0_prediction_gives_the_same_reverse_step():
    chain = _chain(num_timesteps=10)
    x0_chain = DiffusionChain(_X0FromEpsilon(chain), chain.schedule, event_shape=(2,), prediction="x0")
    x_t, t = torch.randn(6, 2), torch.tensor([1, 3, 4, 5, 6, 10])
    a, b = chain.p_mean_variance(x_t, t), x0_chain.p_mean_variance(x_t, t)
    torch.testing.assert_close(a.mean, b.mean)
    torch.testing.assert_close(a.pred_eps, b.pred_eps)


def test_model_and_guide_site_order():
    chain = _chain(num_timesteps=4)
    x0 = torch.randn(3, 2)
    model_trace = pyro.poutine.trace(chain.model).get_trace(x0)
    guide_trace = pyro.poutine.trace(chain.guide).get_trace(x0)
    names = ["x_4", "x_3", "x_2", "x_1"]
    assert [n for n in model_trace.stochastic_nodes if n.startswith("x_")] == names
    assert model_trace.nodes["x_0"]["is_observed"]
    assert [n for n in guide_trace.stochastic_nodes if n.startswith("x_")] == names
    forward_trace = pyro.poutine.trace(chain.forward_guide).get_trace(x0)
    assert [n for n in forward_trace.stochastic_nodes if n.startswith("x_")] == names[::-1]


@pytest.mark.parametrize("variance", VARIANCES)
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_every_variance_and_prediction_gives_a_finite_bound(variance, prediction):
    chain = _chain(num_timesteps=4, variance=variance, prediction=prediction)
    x0 = torch.randn(3, 2)
    assert chain.variance == variance and chain.prediction == prediction
    assert torch.isfinite(chain.vlb_term(x0, torch.tensor([1, 2, 4]))).all()
    assert math.isfinite(pyro.infer.TraceMeanField_ELBO().loss(chain.model, chain.guide, x0))


def test_image_event_shape_runs_through_every_method():
    net = ConvDenoiser(1, hidden_channels=8, num_blocks=1)
    decoder = DiscretizedGaussianDecoder(17)
    chain = DiffusionChain(net, get_schedule("cosine", 5), event_shape=(1, 4, 4), decoder=decoder)
    x0 = torch.randint(0, 17, (3, 1, 4, 4)) / 8.0 - 1.0
    assert chain.prior_kl(x0).shape == (3,)
    assert chain.vlb_term(x0, torch.tensor([1, 2, 5])).shape == (3,)
    trace = pyro.poutine.trace(chain.model).get_trace(num_samples=2)
    sample = trace.nodes["x_0"]["value"]
    assert sample.shape == (2, 1, 4, 4)
    assert torch.allclose(sample * 8, (sample * 8).round())  # on the 17-level grid
    elbo = pyro.infer.TraceMeanField_ELBO().loss(chain.model, chain.guide, x0)
    assert math.isfinite(elbo)


def test_chain_errors_name_the_problem():
    net = MLPDenoiser(2, hidden_dim=8)
    schedule = get_schedule("linear", 10)
    with pytest.raises(ValueError, match="unknown variance 'small'; expected one of 'fixed_small', 'fixed_large'"):
        DiffusionChain(net, schedule, event_shape=(2,), variance="small")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown prediction 'eps'"):
        DiffusionChain(net, schedule, event_shape=(2,), prediction="eps")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="schedule must be a Schedule"):
        DiffusionChain(net, torch.ones(10), event_shape=(2,))  # type: ignore[arg-type]
    chain = DiffusionChain(net, schedule, event_shape=(2,))
    with pytest.raises(ValueError, match=r"x0 must have shape \(batch, 2\)"):
        chain.model(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="model needs x0 or num_samples"):
        chain.model()
    with pytest.raises(ValueError, match="num_levels must be at least 2"):
        DiscretizedGaussianDecoder(1)
