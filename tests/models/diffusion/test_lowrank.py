"""Tests for the low-rank weight posterior: weights.py's LowRankWeights, and chain.py and io.py with ``posterior_rank=``.

Exact checks: the closed-form KL against torch's multivariate-Normal KL, the draws against their
formula, the Pyro programs' structure, errors, and save/reload. Statistical checks (the draws'
covariance, the ELBO against Pyro's) use ``Z_SCORE * standard error`` from tests/_stats.py (z = 4.5),
each stating its se. The ELBO's stand-in is the Gaussian oracle of tests/models/diffusion/_oracle.py
with a per-dimension scale and shift, four Bayesian scalars whose errors the factor correlates.
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch import nn
from torch.nn import functional as F

from probgen.infer.diffusion import estimate_bayesian_loss, evaluate_bound, fit_diffusion
from probgen.models.diffusion import (
    DiffusionChain,
    LowRankWeights,
    MeanFieldWeights,
    Schedule,
    get_schedule,
    load_chain,
    save_chain,
)
from probgen.priors import GaussianPrior
from tests._stats import Z_SCORE, iid_se_mean
from tests.models.diffusion._oracle import GaussianOracle
from tests.models.diffusion.test_bayesian import LAST_LAYER, _LaplacePrior, _net


def _chain(prior=LAST_LAYER, init_scale=0.05, posterior_rank=3, **condition) -> DiffusionChain:
    return DiffusionChain(
        _net(**condition), get_schedule("cosine", 5), event_shape=(2,), prior=prior, init_scale=init_scale,
        posterior_rank=posterior_rank,
    )  # fmt: skip


def _moved(posterior: LowRankWeights, seed: int = 1) -> LowRankWeights:
    """``posterior`` away from its start: shifted locations, a larger relative factor, smaller diagonal."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        posterior.loc.add_(0.3 * torch.randn(posterior.loc.shape, generator=generator))
        posterior.relative_factor.mul_(4.0).add_(0.3 * torch.randn(posterior.relative_factor.shape, generator=generator))
        posterior.unconstrained_scale.sub_(0.5)
    return posterior


def _covariance(posterior: LowRankWeights) -> torch.Tensor:
    diag = F.softplus(posterior.unconstrained_scale).detach() ** 2
    factor = posterior.cov_factor.detach()
    return torch.diag(diag) + factor @ factor.T


def test_the_closed_form_kl_is_the_multivariate_normal_kl():
    chain = _chain(prior=GaussianPrior(2.0, fan_in=True, bias_scale=0.5, deterministic=LAST_LAYER.deterministic))
    posterior, priors = _moved(chain.weight_posterior), chain.weight_priors()
    assert isinstance(posterior, LowRankWeights) and posterior.num_weights == 18 and posterior.rank == 3
    prior_loc = torch.cat([priors[name].base_dist.loc.expand(priors[name].event_shape).reshape(-1) for name in posterior.names])
    prior_scale = torch.cat([priors[name].base_dist.scale.expand(priors[name].event_shape).reshape(-1) for name in posterior.names])
    q = torch.distributions.LowRankMultivariateNormal(
        posterior.loc, posterior.cov_factor, F.softplus(posterior.unconstrained_scale) ** 2
    )
    expected = torch.distributions.kl_divergence(q, torch.distributions.MultivariateNormal(prior_loc, torch.diag(prior_scale**2)))
    kl = posterior.kl(priors)
    torch.testing.assert_close(kl, expected, rtol=1e-12, atol=1e-12)  # float64, and no Monte Carlo
    # the factor's correlations lower the entropy: independent marginals would have a smaller KL
    marginal = MeanFieldWeights(posterior.locs(), init_scale=1.0)
    with torch.no_grad():
        marginal.unconstrained_scale.copy_(torch.cat([s.reshape(-1) for s in posterior.scales().values()]).expm1().log())
    assert float(kl.detach()) > float(marginal.kl(priors).detach()) + 1.0
    kl.backward()  # differentiable in every parameter of q
    assert posterior.relative_factor.grad is not None and bool(posterior.relative_factor.grad.abs().sum() > 0)
    assert posterior.unconstrained_scale.grad is not None and posterior.loc.grad is not None


def test_the_kl_of_a_non_normal_prior_is_the_log_ratio_at_the_draw():
    chain = _chain(prior=_LaplacePrior())
    posterior, priors = _moved(chain.weight_posterior), chain.weight_priors()
    draw = posterior.rsample(torch.Generator().manual_seed(0))
    flat = torch.cat([draw[name].reshape(-1) for name in posterior.names])
    expected = posterior.joint().log_prob(flat) - sum(priors[name].log_prob(draw[name]) for name in posterior.names)
    torch.testing.assert_close(posterior.kl(priors, draw), expected)
    with pytest.raises(ValueError, match="pass draw="):
        posterior.kl(priors)
    with pytest.raises(ValueError, match="pass chain.weight_priors"):
        posterior.kl({})


def test_draws_are_loc_plus_factor_noise_plus_diagonal_noise_and_differentiable():
    posterior = _moved(LowRankWeights({"a": torch.zeros(2, 3), "b": torch.ones(2)}, init_scale=0.2, rank=2))
    one = posterior.rsample(torch.Generator().manual_seed(3))
    eps = torch.randn(2 + 8, generator=torch.Generator().manual_seed(3))  # the factor's noise first, then the diagonal's
    flat = posterior.loc + posterior.cov_factor @ eps[:2] + F.softplus(posterior.unconstrained_scale) * eps[2:]
    torch.testing.assert_close(one["a"], flat[:6].reshape(2, 3))
    torch.testing.assert_close(one["b"], flat[6:])
    # sample draws the same stream, batched and without gradient
    batch = posterior.sample(1, torch.Generator().manual_seed(3))
    assert not batch["a"].requires_grad and batch["a"].shape == (1, 2, 3)
    torch.testing.assert_close(batch["b"][0], one["b"].detach())
    one["b"].sum().backward()  # reparameterised: gradients reach the factor, the diagonal and the locations
    assert posterior.relative_factor.grad is not None and bool(posterior.relative_factor.grad[6:].abs().sum() > 0)
    assert posterior.unconstrained_scale.grad is not None and posterior.loc.grad is not None


def test_the_draws_covariance_is_diagonal_plus_factor():
    posterior = _moved(LowRankWeights({"a": torch.zeros(2, 2), "b": torch.zeros(2)}, init_scale=0.3, rank=2))
    covariance = _covariance(posterior)
    num_draws = 40_000
    draws = posterior.sample(num_draws, torch.Generator().manual_seed(0))
    centred = (torch.cat([draws["a"].reshape(num_draws, -1), draws["b"]], dim=1) - posterior.loc.detach()).numpy()
    # each entry's estimate is the mean of the products (w_i - m_i)(w_j - m_j) about the exact mean, so
    # unbiased; its se is the products' sd / sqrt(40000), sqrt(Sigma_ii Sigma_jj + Sigma_ij^2) / 200 for
    # Normal draws, 0.5-1% of the entry: the factor's off-diagonals (|rho| up to ~0.9) are far outside it
    for i in range(6):
        for j in range(i, 6):
            products = centred[:, i] * centred[:, j]
            assert abs(products.mean() - float(covariance[i, j])) < Z_SCORE * iid_se_mean(products), (i, j)
    assert float((covariance - torch.diag(covariance.diagonal())).abs().max()) > 0.1 * float(covariance.diagonal().min())


def test_scales_are_the_marginal_standard_deviations_and_start_at_init_scale():
    posterior = LowRankWeights({"a": torch.zeros(4, 3), "b": torch.zeros(4)}, init_scale=0.02, rank=5)
    torch.testing.assert_close(torch.cat([s.reshape(-1) for s in posterior.scales().values()]).detach(), torch.full((16,), 0.02))
    torch.testing.assert_close(F.softplus(posterior.unconstrained_scale).detach(), torch.full((16,), 0.02 / math.sqrt(2)))
    _moved(posterior)
    flat = torch.cat([s.reshape(-1) for s in posterior.scales().values()]).detach()
    torch.testing.assert_close(flat, _covariance(posterior).diagonal().sqrt())
    torch.testing.assert_close(flat, posterior.joint().covariance_matrix.diagonal().sqrt().detach())
    assert posterior.scales()["a"].shape == (4, 3)
    torch.testing.assert_close(posterior.cov_factor, F.softplus(posterior.unconstrained_scale)[:, None] * posterior.relative_factor)
    # the factor's start is torch's global stream, or the generator's
    again = LowRankWeights({"a": torch.zeros(4, 3), "b": torch.zeros(4)}, init_scale=0.02, rank=5, generator=torch.Generator().manual_seed(0))
    same = LowRankWeights({"a": torch.zeros(4, 3), "b": torch.zeros(4)}, init_scale=0.02, rank=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.relative_factor, same.relative_factor)


def test_the_guide_draws_the_flat_vector_once_and_gives_each_parameter_its_piece():
    chain = _chain()
    x0 = torch.randn(10, 2)
    guide = poutine.trace(chain.guide).get_trace(x0, subsample_size=4)
    model = poutine.trace(poutine.replay(chain.model, trace=guide)).get_trace(x0, subsample_size=4)
    assert guide.stochastic_nodes[:3] == ["_weights", "out.1.weight", "out.1.bias"]
    auxiliary = guide.nodes["_weights"]
    assert auxiliary["infer"] == {"is_auxiliary": True} and auxiliary["cond_indep_stack"] == ()
    assert isinstance(auxiliary["fn"], dist.LowRankMultivariateNormal) and "_weights" not in model.nodes
    pieces = chain.weight_posterior.split(auxiliary["value"])
    for name in chain.weight_sites:
        site = guide.nodes[name]
        assert isinstance(site["fn"], dist.Delta) and site["fn"].event_dim == chain.net.get_parameter(name).dim()
        assert site["cond_indep_stack"] == () and torch.equal(site["value"], pieces[name])
        assert isinstance(model.nodes[name]["fn"].base_dist, dist.Normal)  # the model side is the prior, as before
    assert model.nodes["x_0"]["scale"] == pytest.approx(10 / 4)
    # under Pyro's vectorised particles each particle has its own flat draw
    def particles(*args, **kwargs):
        with pyro.plate("particles", 4, dim=-2):
            return chain.guide(*args, **kwargs)

    vectorised = poutine.trace(particles).get_trace(x0, subsample_size=3)
    assert vectorised.nodes["_weights"]["value"].shape == (4, 1, 18)
    assert vectorised.nodes["out.1.weight"]["value"].shape == (4, 1, 2, 8)
    for elbo in (pyro.infer.Trace_ELBO, pyro.infer.TraceMeanField_ELBO):
        loss = elbo(num_particles=4, vectorize_particles=True, max_plate_nesting=1).loss(chain.model, chain.guide, x0, subsample_size=3)
        assert math.isfinite(loss)
    # forward_guide draws the weights the same way
    forward = poutine.trace(chain.forward_guide).get_trace(x0)
    assert forward.stochastic_nodes[:3] == ["_weights", "out.1.weight", "out.1.bias"]


class _AffineOracle(GaussianOracle):
    """The oracle with a per-dimension ``scale`` (1 = exact) and ``shift`` (0 = exact): four Bayesian scalars."""

    def __init__(self, schedule: Schedule, variance: float) -> None:
        super().__init__(schedule, variance)
        self.scale = nn.Parameter(torch.ones(2))
        self.shift = nn.Parameter(torch.zeros(2))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return super().forward(x, t) + self.shift


def test_pyros_trace_elbo_with_the_low_rank_guide_is_the_minibatch_loss_in_expectation():
    """estimate_bayesian_loss (closed-form KL, one step per row) against Trace_ELBO(chain.model, chain.guide)."""
    schedule = get_schedule("cosine", 6)
    chain = DiffusionChain(
        _AffineOracle(schedule, 0.5), schedule, event_shape=(2,), prior=GaussianPrior(0.5), posterior_rank=2
    )
    posterior = chain.weight_posterior
    # errors of about 0.03 in two directions that mix every scale and shift, and almost none across them
    # (D = 1e-5): the correlations are strong, and the weights' draws keep the x_T step's term (divided
    # by sqrt(alpha_T) ~ 0.03) tame
    with torch.no_grad():  # W = D C
        posterior.relative_factor.copy_(0.2e5 * torch.tensor([[0.15, 0.0], [0.1, 0.1], [-0.1, 0.05], [0.0, -0.15]]))
        posterior.unconstrained_scale.fill_(math.log(math.expm1(1e-5)))
    num_data, batch = 12, 3
    x0 = torch.randn(num_data, 2) * math.sqrt(0.5)
    elbo = pyro.infer.Trace_ELBO(num_particles=400, vectorize_particles=True, max_plate_nesting=1)
    with torch.no_grad():
        pyro_values = np.array([elbo.loss(chain.model, chain.guide, x0, subsample_size=batch) for _ in range(60)])
    pyro_mean, pyro_se = pyro_values.mean(), iid_se_mean(pyro_values)

    def ours(chain: DiffusionChain) -> tuple[float, float]:
        generator = torch.Generator().manual_seed(1)
        values = []
        with torch.no_grad():  # minibatches drawn as fit_diffusion draws them (with replacement); 240 rows for a smaller se
            for _ in range(3000):
                index = torch.randint(num_data, (240,), generator=generator)
                values.append(float(estimate_bayesian_loss(chain, x0[index], num_data=num_data, generator=generator).loss) * num_data)
        return float(np.mean(values)), iid_se_mean(np.array(values))

    ours_mean, ours_se = ours(chain)
    # Trace_ELBO scores every site by Monte Carlo, the x_t's and the weights' log q - log p included:
    # se ~0.5 over 60 x 400 particles; ours ~0.35 over 3000 draws (mostly the weight draw's spread); so a
    # tolerance of ~2.7 nats on a loss of ~70 nats, of which ~29 are the KL
    tolerance = Z_SCORE * math.hypot(pyro_se, ours_se)
    assert tolerance < 3.5
    assert abs(ours_mean - pyro_mean) < tolerance
    # the comparison sees the correlations: the mean-field posterior with the same marginals has a
    # loss ~14 nats lower (its KL is; each of the two thin directions pays log(0.03 / 1e-5) more), which
    # is more than 3 tolerances away
    mean_field = DiffusionChain(chain.net, schedule, event_shape=(2,), prior=GaussianPrior(0.5), init_scale=1.0)
    with torch.no_grad():
        mean_field.weight_posterior.loc.copy_(posterior.loc)
        scales = torch.cat([s.reshape(-1) for s in posterior.scales().values()])
        mean_field.weight_posterior.unconstrained_scale.copy_(scales.expm1().log())
    independent_mean, _ = ours(mean_field)
    assert abs(independent_mean - pyro_mean) > 3 * tolerance


def test_fit_diffusion_trains_a_low_rank_posterior_and_it_saves_and_reloads(tmp_path):
    chain = _chain(init_scale=0.01, posterior_rank=4)
    data = torch.randn(64, 2) * 0.5
    fit = fit_diffusion(chain, data, num_steps=30, batch_size=16, lr=1e-2, seed=0, progress_bar=False)
    posterior = fit.weight_posterior
    assert isinstance(posterior, LowRankWeights) and posterior is fit.chain.weight_posterior
    assert fit.chain.posterior_rank == 4 and posterior.rank == 4
    assert not torch.equal(posterior.relative_factor, chain.weight_posterior.relative_factor)  # the factor trained
    assert "relative_factor" in fit.state.weight_state and torch.isfinite(fit.losses).all()
    for name, loc in posterior.locs().items():  # the trained net holds the posterior means
        assert torch.equal(fit.chain.net.get_parameter(name), loc.detach())
    bound = evaluate_bound(fit, data, num_posterior_draws=3, seed=0, progress_bar=False)
    assert bound.weight_kl == pytest.approx(float(posterior.kl(fit.chain.weight_priors()).detach()))
    save_chain(fit.chain, tmp_path / "lowrank.pt")
    saved = torch.load(tmp_path / "lowrank.pt", weights_only=True)
    assert saved["weight_posterior"]["rank"] == 4
    again = load_chain(tmp_path / "lowrank.pt")
    assert isinstance(again.weight_posterior, LowRankWeights) and again.posterior_rank == 4
    assert again.describe() == fit.chain.describe() and again.describe()["posterior_rank"] == 4
    state, other = posterior.state_dict(), again.weight_posterior.state_dict()
    assert list(state) == list(other) == ["loc", "unconstrained_scale", "relative_factor"]
    for key, value in state.items():
        assert torch.equal(other[key], value)
    first = posterior.sample(5, torch.Generator().manual_seed(7))
    second = again.weight_posterior.sample(5, torch.Generator().manual_seed(7))
    for name in posterior.names:
        assert torch.equal(first[name], second[name])
    # a mean-field chain's file has no rank, as before
    save_chain(_chain(posterior_rank=None), tmp_path / "meanfield.pt")
    assert "rank" not in torch.load(tmp_path / "meanfield.pt", weights_only=True)["weight_posterior"]
    assert type(load_chain(tmp_path / "meanfield.pt").weight_posterior) is MeanFieldWeights


def test_the_rank_is_kept_by_describe_replace_net_and_repr_only_when_set():
    chain = _chain(posterior_rank=5)
    assert chain.describe()["posterior_rank"] == 5 and "posterior_rank=5" in repr(chain)
    assert repr(chain.weight_posterior) == "LowRankWeights(2 parameters, 18 weights, rank 5)"
    other = chain.replace_net(_net())
    assert isinstance(other.weight_posterior, LowRankWeights) and other.posterior_rank == 5
    assert other.weight_posterior is not chain.weight_posterior
    assert other.weight_posterior.init_scale == chain.weight_posterior.init_scale
    mean_field = _chain(posterior_rank=None)
    assert "posterior_rank" not in mean_field.describe() and "posterior_rank" not in repr(mean_field)
    assert type(mean_field.replace_net(_net()).weight_posterior) is MeanFieldWeights
    assert chain.with_weights(chain.weight_posterior.mean()).posterior_rank is None


def test_bad_ranks_give_clear_errors():
    params = {"a": torch.zeros(2, 3)}
    with pytest.raises(ValueError, match="rank must be a positive int, got 0"):
        LowRankWeights(params, rank=0)
    with pytest.raises(ValueError, match="rank must be a positive int, got -2"):
        LowRankWeights(params, rank=-2)
    with pytest.raises(ValueError, match=r"rank must be at most the number of Bayesian weights \(6\), got 7"):
        LowRankWeights(params, rank=7)
    with pytest.raises(TypeError, match="rank must be an int"):
        LowRankWeights(params, rank=2.0)  # type: ignore[arg-type]
    assert LowRankWeights(params, rank=6).rank == 6  # a full covariance
    with pytest.raises(ValueError, match="posterior_rank sets the weight posterior of a Bayesian chain; pass prior="):
        DiffusionChain(_net(), get_schedule("linear", 4), event_shape=(2,), posterior_rank=2)
    with pytest.raises(ValueError, match=r"posterior_rank must be at most the number of Bayesian weights \(18\), got 19"):
        _chain(posterior_rank=19)
    with pytest.raises(ValueError, match="posterior_rank must be a positive int, got 0"):
        _chain(posterior_rank=0)
    with pytest.raises(NotImplementedError, match="sample the flat vector from joint"):
        _chain().weight_posterior.distributions()
