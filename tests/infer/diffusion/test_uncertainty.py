"""Tests for probgen/infer/diffusion/uncertainty.py and ensemble.py: read-outs under weight uncertainty.

The exact stand-in is a *linear-Gaussian oracle*: the exact denoiser of ``y | c ~ N(c W, 0.09)`` with the
matrix ``W`` Bayesian, so that every weight draw is a well-behaved regression and the epistemic spread
of the predictive mean grows with ``|c|``. Statistical checks use ``Z_SCORE * standard error`` from
tests/_stats.py (z = 4.5); each states its se. The trained stand-in is a small deep ensemble fitted
briefly on a 1-D regression toy; its check compares read-outs on and off the data, with a margin set
from training seeds 0-5 (the off-data epistemic variance was 3-22 times the on-data one).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from probgen._compat import import_arviz
from probgen.infer.arviz import as_inference_data, to_arviz
from probgen.infer.diffusion import (
    EnsembleFit,
    MutualInformation,
    PredictiveUncertainty,
    SampleUncertainty,
    evaluate_bound,
    filter_by_uncertainty,
    fit_diffusion,
    fit_ensemble,
    member_seeds,
    mutual_information,
    predictive_uncertainty,
    sample_ddim,
    sample_uncertainty,
)
from probgen.infer.diffusion._util import weight_seed
from probgen.models.diffusion import DiffusionChain, MLPDenoiser, Schedule, get_schedule
from probgen.priors import GaussianPrior
from tests._stats import Z_SCORE

NOISE_VARIANCE = 0.09


class LinearOracle(nn.Module):
    """``E[epsilon | x_t, c]`` for ``y | c ~ N(c @ weight, 0.09 I)``, with ``weight`` a parameter (a prior can pick it)."""

    def __init__(self, schedule: Schedule, weight: Tensor) -> None:
        super().__init__()
        self.alphas_cumprod = schedule.alphas_cumprod
        self.weight = nn.Parameter(weight.clone())
        self.cond_dim = int(weight.shape[0])

    def forward(self, x: Tensor, t: Tensor, c: Tensor) -> Tensor:
        ab = self.alphas_cumprod.to(x.dtype)[t - 1].reshape(t.shape + (1,))
        mean = c @ self.weight
        return (1 - ab).sqrt() * (x - ab.sqrt() * mean) / (ab * NOISE_VARIANCE + 1 - ab)


def _oracle_chain(init_scale: float = 0.3, num_timesteps: int = 20, prior=None) -> DiffusionChain:
    schedule = get_schedule("cosine", num_timesteps)
    prior = GaussianPrior(1.0) if prior is None else prior
    net = LinearOracle(schedule, torch.tensor([[1.0]]))
    return DiffusionChain(net, schedule, event_shape=(1,), variance="fixed_small", prior=prior, init_scale=init_scale)


CONDITIONS = torch.tensor([[0.0], [1.0], [2.0]])


def _jackknife_se(samples: Tensor, statistic) -> Tensor:
    """The jackknife standard error over the weight draws (dim 0, independent) of ``statistic(samples)``."""
    num = samples.shape[0]
    leave_out = torch.stack([statistic(torch.cat([samples[:i], samples[i + 1 :]])) for i in range(num)])
    return ((num - 1) / num * ((leave_out - leave_out.mean(0)) ** 2).sum(0)).sqrt()


def test_the_variance_decomposition_identity():
    chain = _oracle_chain()
    S, K = 200, 10
    result = predictive_uncertainty(chain, CONDITIONS, num_samples=K, num_posterior_draws=S, seed=0)
    assert isinstance(result, PredictiveUncertainty) and result.samples.shape == (S, K, 3, 1)
    a, e, total = result.aleatoric_var, result.epistemic_var, result.total_var
    # 1. the estimators' exact ANOVA identity: (SK - 1) total = S (K - 1) aleatoric + K (S - 1) epistemic
    torch.testing.assert_close((S * K - 1) * total, S * (K - 1) * a + K * (S - 1) * e)
    # 2. the law of total variance of the model's predictive: aleatoric + epistemic (less the aleatoric / K that
    # the within-draw means keep) against the variance of independent predictive draws, one per weight draw
    def decomposed(y: Tensor) -> Tensor:
        within = y.var(dim=1).mean(dim=0)
        return within + y.mean(dim=1).var(dim=0) - within / K

    estimate, estimate_se = decomposed(result.samples), _jackknife_se(result.samples, decomposed)
    independent = predictive_uncertainty(chain, CONDITIONS, num_samples=2, num_posterior_draws=3000, seed=1).samples[:, 0]
    direct = independent.var(dim=0)
    direct_se = ((independent - independent.mean(0)) ** 2).std(dim=0) / math.sqrt(independent.shape[0])
    # Var(y | c) = E Var(y | W, c) + 0.09 c^2 is about 0.07, 0.15, 0.41 (the 20-step chain's own noise is ~0.065);
    # se's are ~0.002-0.04 (jackknife over 200 draws) and ~0.002-0.011 (3000 draws): 4.5 se is 4-20% of each value
    assert bool((abs(estimate - direct) < Z_SCORE * torch.hypot(estimate_se, direct_se)).all())
    # and the epistemic share grows with |c| (Var_w E[y | w, c] = 0.09 c^2 for q(W) = N(1, 0.3^2))
    epistemic = (e - a / K).ravel()
    assert epistemic[0] < epistemic[1] < epistemic[2]
    assert float(epistemic[2]) == pytest.approx(0.09 * 4, rel=0.35)  # 200 draws: relative se ~ 0.1


def test_sample_uncertainty_splits_ddim_and_ancestral_spread():
    chain = _oracle_chain()
    cond = torch.tensor([[0.0], [2.0], [2.0], [0.0]])
    result = sample_uncertainty(chain, num_samples=4, num_posterior_draws=6, num_ancestral=5, seed=2, condition=cond)
    assert isinstance(result, SampleUncertainty) and result.source == "posterior"
    assert result.ddim_samples.shape == (6, 4, 1) and result.ancestral_samples.shape == (6, 5, 4, 1)
    torch.testing.assert_close(result.epistemic_var, result.ddim_samples.var(0))
    torch.testing.assert_close(result.aleatoric_var, result.ancestral_samples.var(1).mean(0))
    torch.testing.assert_close(result.total_var, result.epistemic_var + result.aleatoric_var)
    assert result.epistemic_score.shape == (4,)
    # DDIM under draw s, from the shared x_T, is sample_ddim of the chain with weights w_s and the same seed
    draws = chain.weight_posterior.sample(6, torch.Generator().manual_seed(weight_seed(2)))
    one = chain.with_weights({name: value[3] for name, value in draws.items()})
    alone = sample_ddim(one, num_samples=4, seed=2, condition=cond, return_chain=True)
    torch.testing.assert_close(result.ddim_samples[3], alone.samples[0])
    assert torch.equal(result.x_T, alone.trajectory[0, :, 0])  # the same starting noise
    # the epistemic spread follows the condition: c = 0 leaves the weight out of the mean
    assert float(result.epistemic_var[0]) < 1e-3 < float(result.epistemic_var[1])
    assert torch.equal(result.steps, torch.arange(20, -1, -1))


def test_sample_uncertainty_warns_when_a_weight_draw_diverges(monkeypatch):
    from probgen.infer.diffusion import uncertainty

    real = uncertainty._ddim

    def one_draw_overflows(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = real(*args, **kwargs).clone()
        out[1] = float("inf")  # as a chain under a far-out weight draw gives
        return out

    monkeypatch.setattr(uncertainty, "_ddim", one_draw_overflows)
    with pytest.warns(RuntimeWarning, match="1 of 3 weight draws gave non-finite DDIM samples"):
        result = sample_uncertainty(_oracle_chain(), num_samples=2, num_posterior_draws=3, num_ancestral=2, seed=0,
                                    condition=torch.zeros(2, 1))  # fmt: skip
    assert not bool(torch.isfinite(result.epistemic_var).all())


def test_mutual_information_matches_its_closed_form_and_vanishes_without_weight_uncertainty():
    chain = _oracle_chain()
    cond = torch.tensor([[0.0], [1.5]])
    scored = mutual_information(chain, num_samples=2, num_posterior_draws=8, seed=0, condition=cond)
    assert isinstance(scored, MutualInformation) and scored.per_step.shape == (20, 2)
    torch.testing.assert_close(scored.score, scored.per_step.mean(0))
    assert bool((scored.per_step >= 0).all())
    assert float(scored.score[0]) < 1e-6 < float(scored.score[1])  # c = 0: every draw proposes the same step
    # with no weight uncertainty at all (everything deterministic) there is no information to carry
    fixed = _oracle_chain(prior=GaussianPrior(1.0, deterministic=("weight",)))
    none = mutual_information(fixed, num_samples=3, num_posterior_draws=4, seed=0, condition=cond[1:])
    assert torch.equal(none.score, torch.zeros(3, dtype=torch.float64))
    quiet = sample_uncertainty(fixed, num_samples=3, num_posterior_draws=3, num_ancestral=2, seed=0, condition=cond[1:])
    assert torch.equal(quiet.epistemic_var, torch.zeros(3, 1))


def test_the_first_step_score_is_the_gaussian_bound_on_the_mixture():
    chain = _oracle_chain(num_timesteps=5)
    cond = torch.tensor([[1.0]])
    scored = mutual_information(chain, num_samples=1, num_posterior_draws=5, seed=3, condition=cond)
    draws = chain.weight_posterior.sample(5, torch.Generator().manual_seed(weight_seed(3)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        x_T = torch.randn(1, 1)
    out = chain.p_mean_variance(x_T.expand(5, 1, 1), 5, condition=cond, weights=draws)
    expected = 0.5 * torch.log1p(out.mean.var(0, unbiased=False) / out.variance[0]).sum()
    torch.testing.assert_close(scored.per_step[0, 0], expected.double())


def test_filter_by_uncertainty_keeps_the_least_uncertain():
    samples = torch.arange(10.0)[:, None]
    scores = torch.tensor([5.0, 1.0, 9.0, 0.5, 3.0, 3.0, 8.0, 0.1, 7.0, 2.0])
    kept = filter_by_uncertainty(samples, scores, keep=0.3)
    assert kept.indices.tolist() == [1, 3, 7] and kept.samples[:, 0].tolist() == [1.0, 3.0, 7.0]
    assert kept.threshold == 1.0 and kept.scores.tolist() == [1.0, 0.5, 0.1]
    assert filter_by_uncertainty(samples, scores, keep=0.01).indices.tolist() == [7]  # at least one
    assert filter_by_uncertainty(samples, scores, keep=1.0).indices.tolist() == list(range(10))
    with pytest.raises(ValueError, match="keep must lie in"):
        filter_by_uncertainty(samples, scores, keep=1.5)
    with pytest.raises(ValueError, match="keep must lie in \\(0, 1\\]"):
        filter_by_uncertainty(samples, scores, keep=0.0)
    with pytest.raises(ValueError, match="one value per sample"):
        filter_by_uncertainty(samples, scores[:4])
    with pytest.raises(ValueError, match="NaN or infinite"):
        filter_by_uncertainty(samples, torch.full((10,), float("nan")))


def test_read_outs_refuse_a_point_estimate_chain_and_bad_sizes():
    point = _oracle_chain().with_weights({})
    cond = torch.tensor([[1.0]])
    for call in (
        lambda: sample_uncertainty(point, num_samples=2, num_posterior_draws=3, condition=cond),
        lambda: predictive_uncertainty(point, cond, num_samples=2, num_posterior_draws=3),
        lambda: mutual_information(point, num_samples=2, num_posterior_draws=3, condition=cond),
    ):
        with pytest.raises(ValueError, match="point-estimate chain \\(no prior\\), which has none"):
            call()
    chain = _oracle_chain()
    with pytest.raises(ValueError, match="num_posterior_draws >= 2"):
        sample_uncertainty(chain, num_samples=2, num_posterior_draws=1, condition=cond)
    with pytest.raises(ValueError, match="needs num_posterior_draws=S"):
        predictive_uncertainty(chain, cond, num_samples=2)
    with pytest.raises(ValueError, match="num_ancestral must be at least 2"):
        sample_uncertainty(chain, num_samples=2, num_posterior_draws=2, num_ancestral=1, condition=cond)
    with pytest.raises(ValueError, match="num_samples must be at least 2"):
        predictive_uncertainty(chain, cond, num_samples=1, num_posterior_draws=2)
    with pytest.raises(ValueError, match="needs condition=|conditioned on covariates"):
        mutual_information(chain, num_samples=2, num_posterior_draws=2)
    with pytest.raises(TypeError, match="takes a Bayesian DiffusionChain"):
        mutual_information("chain", num_samples=2, num_posterior_draws=2)  # type: ignore[arg-type]


def test_read_outs_are_seeded_and_leave_the_global_rng_alone():
    chain = _oracle_chain()
    torch.manual_seed(7)
    before = torch.get_rng_state()
    first = predictive_uncertainty(chain, CONDITIONS, num_samples=3, num_posterior_draws=4, seed=11)
    assert torch.equal(torch.get_rng_state(), before)
    second = predictive_uncertainty(chain, CONDITIONS, num_samples=3, num_posterior_draws=4, seed=11)
    assert torch.equal(first.samples, second.samples)


# ------------------------------------------------------------------------------------------------ ensembles
def _regression_toy(n: int = 256) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, generator=generator, dtype=torch.float64) * 2 - 1
    return x, torch.sin(2 * x) + 0.1 * torch.randn(n, 1, generator=generator, dtype=torch.float64)


@functools.cache
def _ensemble() -> EnsembleFit:
    """Four members fitted for 200 steps on y = sin(2x) + noise, x in [-1, 1] (about 2 s), built once."""
    x, y = _regression_toy()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = MLPDenoiser(1, hidden_dim=32, num_blocks=1, cond_dim=1).double()
    chain = DiffusionChain(net, get_schedule("linear", 20), event_shape=(1,))
    return fit_ensemble(
        chain, y, num_members=4, seed=0, num_steps=200, batch_size=64, lr=3e-3, condition=x, progress_bar=False
    )


def test_ensemble_members_are_independently_initialised_and_seeded():
    ensemble = _ensemble()
    assert ensemble.num_members == 4 and ensemble.seeds == member_seeds(0, 4)
    assert len(set(ensemble.seeds)) == 4 and ensemble.losses.shape == (4, 200)
    first, second = (chain.net.inp.weight for chain in ensemble.chains[:2])
    assert not torch.equal(first, second)
    assert [member.seed for member in ensemble.members] == list(ensemble.seeds)
    stacked = ensemble.stacked_parameters()
    assert stacked["inp.weight"].shape == (4, 32, 1)
    assert "4 members" in repr(ensemble)


def test_ensemble_epistemic_uncertainty_is_larger_away_from_the_data():
    ensemble = _ensemble()
    where = torch.tensor([[-0.5], [0.0], [0.5], [3.0], [-3.0]])  # three inside [-1, 1], two far outside
    predictive = predictive_uncertainty(ensemble, where, num_samples=16, seed=0)
    assert predictive.source == "ensemble" and predictive.samples.shape == (4, 16, 5, 1)
    epistemic = predictive.epistemic_var.ravel()
    # over training seeds 0-5 the off-data mean was 3 to 22 times the on-data mean
    assert float(epistemic[3:].mean()) > 2 * float(epistemic[:3].mean())
    scored = mutual_information(ensemble, num_samples=5, seed=0, condition=where)
    assert float(scored.score[3:].min()) > float(scored.score[:3].max())
    kept = filter_by_uncertainty(scored.samples, scored.score, keep=0.6)
    assert kept.indices.tolist() == [0, 1, 2]  # the filter drops the off-data samples


def test_ensemble_read_outs_take_the_members_as_draws():
    ensemble = _ensemble()
    x, y = _regression_toy()
    bound = evaluate_bound(ensemble, y[:20], condition=x[:20], seed=0, progress_bar=False)
    assert bound.per_example.shape == (4, 20) and bound.source == "ensemble" and bound.weight_kl is None
    member = evaluate_bound(ensemble.chains[2], y[:20], condition=x[:20], seed=0, progress_bar=False)
    torch.testing.assert_close(bound.per_example[2], member.per_example)
    result = sample_uncertainty(ensemble, num_samples=3, num_ancestral=2, seed=0, condition=torch.tensor([[0.5]]))
    assert result.ddim_samples.shape == (4, 3, 1) and result.source == "ensemble"
    with pytest.raises(ValueError, match="the ensemble has 4 members"):
        sample_uncertainty(ensemble, num_samples=3, num_posterior_draws=5, condition=torch.tensor([[0.5]]))


def test_fit_ensemble_refuses_what_it_cannot_do():
    chain = DiffusionChain(MLPDenoiser(1, hidden_dim=8, num_blocks=1), get_schedule("linear", 5), event_shape=(1,))
    data = torch.randn(8, 1)
    with pytest.raises(ValueError, match="does not take init_state="):
        fit_ensemble(chain, data, num_members=2, num_steps=1, init_state=None)
    with pytest.raises(ValueError, match="does not take checkpoint="):
        fit_ensemble(chain, data, num_members=2, num_steps=1, checkpoint="x.pt")
    with pytest.raises(ValueError, match="num_members must be a positive int"):
        fit_ensemble(chain, data, num_members=0, num_steps=1)
    bayes = DiffusionChain(chain.net, chain.schedule, event_shape=(1,), prior=GaussianPrior(1.0))
    with pytest.raises(ValueError, match="trains point-estimate members"):
        fit_ensemble(bayes, data, num_members=2, num_steps=1)
    same = fit_ensemble(chain, data, num_members=2, num_steps=1, seed=0, reinitialise=False, progress_bar=False)
    assert not torch.equal(same.members[0].state.net_state["inp.weight"], same.members[1].state.net_state["inp.weight"])
    torch.testing.assert_close(same.chains[0].net.out[1].bias, same.chains[1].net.out[1].bias, atol=1e-2, rtol=0)


# ---------------------------------------------------------------------------------------------------- arviz
def test_a_bayesian_fit_and_its_read_outs_reach_arviz(tmp_path):
    chain = _oracle_chain(num_timesteps=5)
    cond = torch.tensor([[0.5], [1.0], [-1.0], [2.0]])
    y = cond * 1.0 + 0.3 * torch.randn(4, 1)
    fit = fit_diffusion(chain, y, num_steps=3, batch_size=4, seed=0, condition=cond, progress_bar=False)
    idata = fit.to_arviz(num_posterior_draws=7)
    assert idata.groups() == ["posterior", "losses"]
    assert idata.posterior["weight"].dims == ("chain", "draw", "weight_dim_0", "weight_dim_1")
    assert idata.posterior["weight"].shape == (1, 7, 1, 1) and idata.attrs["weight_sites"] == ["weight"]
    bound = evaluate_bound(fit, y, num_posterior_draws=3, seed=0, condition=cond, progress_bar=False)
    idata = bound.to_arviz()
    assert idata.groups() == ["observed_data", "constant_data", "bound", "bound_terms"]
    assert idata.constant_data["condition"].dims == ("obs_id", "condition_dim_0")
    np.testing.assert_array_equal(idata.constant_data["condition"].values, cond.numpy())
    assert idata.bound["x_0"].dims == ("chain", "draw", "obs_id") and idata.bound["x_0"].shape == (1, 3, 4)
    np.testing.assert_array_equal(idata.bound["x_0"].values[0], bound.per_example.numpy())
    assert idata.bound_terms["x_0"].shape == (1, 3, 6) and idata.attrs["bound_num_posterior_draws"] == 3
    readout = sample_uncertainty(fit, num_samples=4, num_posterior_draws=3, num_ancestral=2, seed=0, condition=cond)
    idata = readout.to_arviz()
    assert idata.groups() == ["posterior_predictive", "constant_data", "uncertainty"]
    assert idata.posterior_predictive["x_0"].dims == ("chain", "draw", "sample_id", "x_0_dim_0")
    assert idata.posterior_predictive["x_0_ancestral"].shape == (1, 3, 2, 4, 1)
    np.testing.assert_array_equal(idata.uncertainty["epistemic_var"].values, readout.epistemic_var.numpy())
    assert "DDIM" in idata.uncertainty.attrs["epistemic_var"]
    predictive = predictive_uncertainty(fit, cond, num_samples=2, num_posterior_draws=3, seed=0).to_arviz()
    assert predictive.uncertainty["total_var"].dims == ("obs_id", "x_0_dim_0")
    scored = mutual_information(fit, num_samples=4, num_posterior_draws=3, seed=0, condition=cond).to_arviz()
    assert scored.uncertainty["mutual_information_per_step"].dims == ("step", "sample_id")
    # the generic converters take every new result
    for result in (fit, bound, readout):
        assert to_arviz(result).groups() == as_inference_data(result).groups()
    # everything together in one file, and back
    both = fit.to_arviz(bound=bound, uncertainty=readout, num_posterior_draws=2)
    path = tmp_path / "bayes.nc"
    both.to_netcdf(str(path))
    again = import_arviz().from_netcdf(str(path))
    assert set(again.groups()) == {"posterior", "losses", "observed_data", "bound", "bound_terms", "posterior_predictive",
                                   "constant_data", "uncertainty"}


def test_an_ensemble_reaches_arviz():
    idata = _ensemble().to_arviz()
    assert idata.groups() == ["posterior", "losses"]
    assert idata.losses["loss"].dims == ("member", "step") and idata.posterior["inp.weight"].shape == (1, 4, 32, 1)
    assert idata.attrs["num_members"] == 4
