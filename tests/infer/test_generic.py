"""Inference on Pyro programs the user writes: exact posteriors through the generic path, every
kind of site the seam supports, ArviZ and reload, and the errors a new user meets first.

Exact answers come from conjugate models; tolerances are z = 4.5 Monte Carlo standard errors
(tests/_stats.py), computed from the draws with ArviZ's ESS.
"""

from __future__ import annotations

import math

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

import probgen
from probgen import fit_nuts, fit_svi, load_result
from tests._blr import NOISE_SCALE, PRIOR_SCALE, make_blr
from tests._stats import Z_SCORE, mcse_mean

QUIET = dict(progress_bar=False, compile=False)

SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
Y8 = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])


def eight_schools(sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("J", len(sigma)):
        theta_raw = pyro.sample("theta_raw", dist.Normal(0.0, 1.0))
        theta = pyro.deterministic("theta", mu + tau * theta_raw)
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def linear_regression(x, y=None):
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1], dtype=x.dtype), PRIOR_SCALE).to_event(1))
    b = pyro.sample("b", dist.Normal(torch.tensor(0.0, dtype=x.dtype), PRIOR_SCALE))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dist.Normal(x @ w + b, NOISE_SCALE), obs=y)


def _theta(samples: dict[str, torch.Tensor]) -> np.ndarray:
    """Draws of ``[w, b]``, ``(chain, draw, d + 1)``."""
    return torch.cat([samples["w"], samples["b"][..., None]], dim=-1).numpy()


def _assert_moments(theta: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> None:
    for i in range(theta.shape[-1]):
        draws = theta[..., i]
        assert abs(draws.mean() - mean[i]) < Z_SCORE * mcse_mean(draws), i
        for j in range(i, theta.shape[-1]):
            # E[(t_i - mu_i)(t_j - mu_j)] = Sigma_ij; the product's MCSE bounds the error
            prod = (theta[..., i] - mean[i]) * (theta[..., j] - mean[j])
            assert abs(prod.mean() - cov[i, j]) < Z_SCORE * mcse_mean(prod), (i, j)


# -- exact posteriors ----------------------------------------------------------------------------


@pytest.mark.slow
def test_nuts_on_a_pyro_program_recovers_bayesian_linear_regression():
    problem = make_blr()
    result = fit_nuts(
        linear_regression, problem.x, problem.y, num_warmup=300, num_samples=500, num_chains=4, seed=0, **QUIET
    )
    assert result.backend == "flat" and result.spec.kind == "pyro"
    # posterior sd ~ 0.08 and ESS ~ 1000+, so MCSE ~ 0.0025 and the bound ~ 0.011
    _assert_moments(_theta(result.get_samples(group_by_chain=True)), problem.mean.numpy(), problem.cov.numpy())


TAU = 2.0
MU_SCALE = 5.0


def hierarchical(sigma, y=None):
    """Normal-normal with a known group scale: the joint posterior of (mu, theta) is Gaussian."""
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=sigma.dtype), MU_SCALE))
    with pyro.plate("J", len(sigma)):
        theta = pyro.sample("theta", dist.Normal(mu, TAU))
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def _hierarchical_posterior(sigma: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of (mu, theta_1..J): a linear-Gaussian update of the joint prior."""
    j = len(sigma)
    prior = torch.full((j + 1, j + 1), MU_SCALE**2, dtype=torch.float64)
    prior[1:, 1:] += TAU**2 * torch.eye(j, dtype=torch.float64)
    design = torch.cat([torch.zeros(j, 1, dtype=torch.float64), torch.eye(j, dtype=torch.float64)], dim=1)
    noise = torch.diag(sigma.double() ** 2)
    precision = torch.linalg.inv(prior) + design.T @ torch.linalg.inv(noise) @ design
    cov = torch.linalg.inv(precision)
    mean = cov @ design.T @ torch.linalg.inv(noise) @ y.double()
    return mean.numpy(), cov.numpy()


def _hierarchical_data() -> tuple[torch.Tensor, torch.Tensor]:
    sigma = torch.tensor([1.0, 2.0, 1.5, 3.0, 1.0], dtype=torch.float64)
    y = torch.tensor([2.5, -1.0, 0.5, 4.0, 1.5], dtype=torch.float64)
    return sigma, y


@pytest.mark.slow
def test_nuts_recovers_a_conjugate_hierarchical_model():
    sigma, y = _hierarchical_data()
    result = fit_nuts(hierarchical, sigma, y, num_warmup=300, num_samples=500, num_chains=4, seed=1, **QUIET)
    samples = result.get_samples(group_by_chain=True)
    theta = torch.cat([samples["mu"][..., None], samples["theta"]], dim=-1).numpy()
    _assert_moments(theta, *_hierarchical_posterior(sigma, y))


@pytest.mark.slow
def test_full_covariance_svi_recovers_the_hierarchical_model():
    """The "mvn" guide contains the exact (Gaussian) posterior, so SVI must find it."""
    sigma, y = _hierarchical_data()
    result = fit_svi(
        hierarchical, sigma, y, guide="mvn", num_steps=3000, lr=0.02, final_lr=2e-4, num_samples=20000,
        seed=0, progress_bar=False,
    )  # fmt: skip
    samples = result.get_samples(group_by_chain=True)
    draws = torch.cat([samples["mu"][..., None], samples["theta"]], dim=-1)[0]  # (20000, J + 1), independent
    mean, cov = (torch.from_numpy(a) for a in _hierarchical_posterior(sigma, y))
    sd = cov.diagonal().sqrt()
    # Monte Carlo: independent draws, SE = sd / sqrt(20000) ~ 0.007 sd. Optimisation: Adam decayed to
    # 2e-4 jitters about the optimum by ~0.003 sd; we allow 0.1 posterior sd for it, far below the
    # ~1 sd error of a wrong posterior.
    assert ((draws.mean(0) - mean).abs() < Z_SCORE * sd / 20000**0.5 + 0.1 * sd).all()
    # and the variances within 20% (a mean-field fit misses the correlation with mu by far more)
    assert ((torch.cov(draws.T).diagonal() / cov.diagonal() - 1).abs() < 0.2).all()


# -- every kind of site ----------------------------------------------------------------------


def _normal_mean_data(n: int = 20) -> torch.Tensor:
    return 1.0 + 0.5 * torch.randn(n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


OBS_SCALE = 0.5
PRIOR_SD = 2.0


def flat_prior(y):
    """A flat (improper) prior written as a masked distribution: the posterior is N(ybar, s^2 / n)."""
    m = pyro.sample("m", dist.Normal(torch.tensor(0.0, dtype=y.dtype), 1.0).mask(False))
    with pyro.plate("data", len(y)):
        pyro.sample("obs", dist.Normal(m, OBS_SCALE), obs=y)


def factor_prior(y):
    """The Normal(0, PRIOR_SD) prior written as a flat site plus pyro.factor."""
    m = pyro.sample("m", dist.Normal(torch.tensor(0.0, dtype=y.dtype), 1.0).mask(False))
    pyro.factor("prior", dist.Normal(0.0, PRIOR_SD).log_prob(m))
    with pyro.plate("data", len(y)):
        pyro.sample("obs", dist.Normal(m, OBS_SCALE), obs=y)


def _normal_posterior(y: torch.Tensor, prior_sd: float) -> tuple[float, float]:
    precision = 1 / prior_sd**2 + len(y) / OBS_SCALE**2
    return float(y.sum() / OBS_SCALE**2 / precision), float(1 / precision)


@pytest.mark.parametrize(
    "model, prior_sd", [(flat_prior, math.inf), (factor_prior, PRIOR_SD)], ids=["masked-flat-prior", "factor"]
)
def test_masked_and_factor_sites_give_the_exact_posterior(model, prior_sd):
    y = _normal_mean_data()
    result = fit_nuts(model, y, num_warmup=200, num_samples=400, num_chains=2, seed=0, **QUIET)
    m = result.get_samples(group_by_chain=True)["m"].numpy()
    mean, var = _normal_posterior(y, prior_sd)
    # posterior sd ~ 0.11, ESS ~ 300+: MCSE ~ 0.006
    assert abs(m.mean() - mean) < Z_SCORE * mcse_mean(m)
    assert abs(((m - mean) ** 2).mean() - var) < Z_SCORE * mcse_mean((m - mean) ** 2)
    assert set(result.spec.observed(result.data)) == {"obs"}  # the factor is no data


def ordered_cutpoints(y):
    """An ordered vector whose first coordinate is observed: c0 | y ~ N(sum y / (n + 1), 1 / (n + 1))
    and log(c1 - c0) keeps its N(0, 1) prior (the ordered transform's unconstrained coordinates)."""
    base = dist.Normal(torch.zeros(2, dtype=y.dtype), 1.0).to_event(1)
    c = pyro.sample("c", dist.TransformedDistribution(base, [dist.transforms.OrderedTransform()]))
    with pyro.plate("data", len(y)):
        pyro.sample("obs", dist.Normal(c[0], 1.0), obs=y)


def test_an_ordered_vector_site_is_sampled_in_its_support():
    y = _normal_mean_data(9)
    result = fit_nuts(ordered_cutpoints, y, num_warmup=200, num_samples=400, num_chains=2, seed=1, **QUIET)
    c = result.get_samples(group_by_chain=True)["c"].numpy()  # (2, 400, 2)
    assert (c[..., 1] > c[..., 0]).all()
    first, gap = c[..., 0], np.log(c[..., 1] - c[..., 0])
    n = len(y)
    assert abs(first.mean() - float(y.sum()) / (n + 1)) < Z_SCORE * mcse_mean(first)
    assert abs(gap.mean()) < Z_SCORE * mcse_mean(gap)
    assert abs((gap**2).mean() - 1) < Z_SCORE * mcse_mean(gap**2)


ALPHA = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)


def categorical_counts(y):
    p = pyro.sample("p", dist.Dirichlet(ALPHA))
    with pyro.plate("data", len(y)):
        pyro.sample("obs", dist.Categorical(p), obs=y)


def test_a_simplex_site_recovers_the_dirichlet_posterior():
    y = torch.tensor([0, 1, 1, 2, 2, 2, 2, 0, 2, 1])
    result = fit_nuts(categorical_counts, y, num_warmup=200, num_samples=400, num_chains=2, seed=2, **QUIET)
    p = result.get_samples(group_by_chain=True)["p"].numpy()
    assert np.allclose(p.sum(-1), 1.0) and (p > 0).all()
    a = (ALPHA + torch.bincount(y, minlength=3)).numpy()  # Dirichlet(alpha + counts)
    total = a.sum()
    for k in range(3):
        draws = p[..., k]
        mean, var = a[k] / total, a[k] * (total - a[k]) / (total**2 * (total + 1))
        assert abs(draws.mean() - mean) < Z_SCORE * mcse_mean(draws), k
        assert abs(((draws - mean) ** 2).mean() - var) < Z_SCORE * mcse_mean((draws - mean) ** 2), k


@pytest.fixture(scope="module")
def schools():
    torch.set_default_dtype(torch.float64)
    pyro.set_rng_seed(0)
    return fit_nuts(eight_schools, SIGMA, Y8, num_warmup=150, num_samples=150, num_chains=2, seed=0, **QUIET)


def test_deterministic_sites_are_recorded_with_every_draw(schools):
    samples = schools.get_samples(group_by_chain=True)
    assert samples["tau"].shape == (2, 150)
    assert samples["theta"].shape == (2, 150, 8)
    expected = samples["mu"][..., None] + samples["tau"][..., None] * samples["theta_raw"]
    assert torch.allclose(samples["theta"], expected)
    assert (samples["tau"] > 0).all()


def test_predict_is_pyro_predictive_over_every_draw(schools):
    pred = schools.predict(SIGMA)  # y=None: the observed site is sampled
    assert set(pred) == {"mu", "tau", "theta_raw", "theta", "obs"}
    assert pred["obs"].shape == (2, 150, 8)
    assert torch.equal(pred["mu"], schools.samples["mu"])
    # obs ~ N(theta, sigma) given each draw: the standardised residuals are N(0, 1) over 2400 values
    z = ((pred["obs"] - pred["theta"]) / SIGMA).flatten()
    assert abs(float(z.mean())) < Z_SCORE / math.sqrt(z.numel())
    assert torch.equal(schools.predict(SIGMA, seed=5)["obs"], schools.predict(SIGMA, seed=5)["obs"])


def test_to_arviz_has_every_group_with_plate_dims(schools):
    idata = schools.to_arviz()
    assert set(idata.groups()) == {
        "posterior", "posterior_predictive", "log_likelihood", "sample_stats", "observed_data", "constant_data"
    }  # fmt: skip
    assert idata.posterior["theta_raw"].dims == ("chain", "draw", "J")
    assert idata.posterior["theta"].dims == ("chain", "draw", "J")
    assert idata.log_likelihood["obs"].dims == ("chain", "draw", "J")
    # replicates of the observed site only: the deterministic theta keeps its shape inside the plate
    assert idata.posterior_predictive["obs"].dims == ("chain", "draw", "J")
    assert idata.posterior_predictive["obs"].shape == (2, 150, 8)
    assert np.array_equal(idata.observed_data["obs"].values, Y8.numpy())
    assert np.array_equal(idata.constant_data["sigma"].values, SIGMA.numpy())
    assert idata.attrs["model_kind"] == "pyro" and idata.attrs["model_name"] == "eight_schools"
    # the pointwise log-likelihood is log N(y_j | theta_j, sigma_j) of each draw
    expected = dist.Normal(schools.samples["theta"], SIGMA).log_prob(Y8).numpy()
    assert np.allclose(idata.log_likelihood["obs"].values, expected)
    assert float(az.bfmi(idata).min()) > 0  # the sampler statistics are ArviZ's


def intercept_only(x, y=None):
    b = pyro.sample("b", dist.Normal(torch.tensor(0.0, dtype=x.dtype), PRIOR_SCALE))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dist.Normal(b, NOISE_SCALE), obs=y)


@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto:UserWarning")  # ArviZ's diagnostic, not ours
def test_loo_and_compare_work_on_a_users_model():
    problem = make_blr(num_points=40)
    fits = {
        name: fit_nuts(model, problem.x, problem.y, num_warmup=100, num_samples=200, num_chains=2, seed=0, **QUIET)
        for name, model in (("linear", linear_regression), ("intercept", intercept_only))
    }
    loo = az.loo(fits["linear"].to_arviz())
    assert np.isfinite(loo.elpd_loo) and loo.n_data_points == 40
    table = az.compare({name: fit.to_arviz() for name, fit in fits.items()})
    assert table.index[0] == "linear"  # the data come from a linear model with slopes 1 and -0.5


def test_a_saved_posterior_reloads_and_predicts_identically(schools, tmp_path):
    path = tmp_path / "schools.nc"
    schools.to_arviz().to_netcdf(path)
    again = load_result(path, eight_schools)
    assert isinstance(again, probgen.MCMCResult) and again.backend == "flat"
    for name in ("mu", "tau", "theta_raw", "theta"):
        assert torch.equal(again.samples[name], schools.samples[name]), name
    assert torch.equal(again.predict(SIGMA)["obs"], schools.predict(SIGMA)["obs"])
    assert torch.equal(again.log_likelihood()["obs"], schools.log_likelihood()["obs"])
    assert torch.equal(again.get_sample_stats()["diverging"], schools.get_sample_stats()["diverging"])


def test_load_result_rejects_a_model_with_other_sites(schools):
    def other(sigma, y=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        with pyro.plate("J", len(sigma)):
            pyro.sample("obs", dist.Normal(mu, sigma), obs=y)

    with pytest.raises(ValueError, match=r"draws of 'tau', 'theta_raw', which this model does not sample"):
        load_result(schools.to_arviz(predictive=False), other)


# -- SVI on a user's model -------------------------------------------------------------------------


def normal_mean(y):
    m = pyro.sample("m", dist.Normal(torch.tensor(0.0, dtype=y.dtype), PRIOR_SD))
    with pyro.plate("data", len(y)):
        pyro.sample("obs", dist.Normal(m, OBS_SCALE), obs=y)


def handwritten_guide(y):
    loc = pyro.param("loc", torch.tensor(0.0, dtype=y.dtype))
    scale = pyro.param("scale", torch.tensor(1.0, dtype=y.dtype), constraint=constraints.positive)
    pyro.sample("m", dist.Normal(loc, scale))


def test_svi_fits_a_handwritten_guide_and_leaves_the_param_store_alone():
    y = _normal_mean_data()
    # the guide is mean-field, so the closed-form KL applies ("auto" would take the Monte Carlo
    # estimator, which is right for any guide but noisier)
    result = fit_svi(
        normal_mean, y, guide=handwritten_guide, elbo="meanfield", num_steps=3000, lr=0.05, final_lr=5e-4,
        num_samples=4000, seed=0, progress_bar=False,
    )  # fmt: skip
    assert result.guide_name == "custom"
    assert len(pyro.get_param_store()) == 0  # the guide's parameters live with the fit
    mean, var = _normal_posterior(y, PRIOR_SD)
    params = result.state.param_state["guide"]
    # The guide's family contains the exact posterior (sd 0.11). Adam's steps end at about 5e-4, so the
    # guide jitters by a few of them about the optimum; 0.01 is about 20 such steps and a tenth of
    # the posterior sd, while a guide stuck at the prior misses the scale by 1.9.
    assert abs(float(params["loc"]) - mean) < 0.01
    assert abs(float(params["scale"].exp()) - math.sqrt(var)) < 0.01  # stored unconstrained: log(scale)
    m = result.get_samples()["m"].numpy()  # 4000 independent draws: SE = 0.11 / 63 ~ 0.002
    assert abs(m.mean() - float(params["loc"])) < Z_SCORE * m.std() / math.sqrt(m.size)


def test_svi_accepts_an_autoguide_instance():
    y = _normal_mean_data()
    guide = pyro.infer.autoguide.AutoNormal(normal_mean)
    result = fit_svi(normal_mean, y, guide=guide, num_steps=300, num_samples=100, seed=0, progress_bar=False)
    assert result.guide_name == "custom" and result.guide is not guide  # the user's guide is copied
    assert guide.model is not None and callable(guide.model)  # and left usable
    assert result.get_samples(group_by_chain=True)["m"].shape == (1, 100)


def subsampled_normal_mean(y, batch=None):
    m = pyro.sample("m", dist.Normal(torch.tensor(0.0, dtype=y.dtype), PRIOR_SD))
    with pyro.plate("data", len(y), subsample_size=batch) as index:
        pyro.sample("obs", dist.Normal(m, OBS_SCALE), obs=y[index])


def test_minibatches_through_the_models_own_plate():
    y = _normal_mean_data(200)
    mean, var = _normal_posterior(y, PRIOR_SD)
    svi = fit_svi(
        subsampled_normal_mean, y, model_kwargs={"batch": 20}, num_steps=1500, lr=0.05, final_lr=1e-3,
        num_samples=2000, seed=0, progress_bar=False,
    )  # fmt: skip
    m = svi.get_samples()["m"]
    # the plate scales each minibatch by N / B: the guide centres on the full-data posterior mean
    # (sd 0.035); minibatch noise and Adam's jitter at lr 1e-3 stay well inside half a posterior sd
    assert abs(float(m.mean()) - mean) < 0.5 * math.sqrt(var)
    # NUTS needs the whole data: it says so for a plate that subsamples, and gives the exact
    # full-data posterior once the plate takes every index
    with pytest.raises(ValueError, match=r"plate 'data' draws 20 of its 200 indices.*left None for fit_nuts"):
        fit_nuts(subsampled_normal_mean, y, model_kwargs={"batch": 20})
    nuts = fit_nuts(subsampled_normal_mean, y, num_warmup=200, num_samples=400, num_chains=2, seed=0, **QUIET)
    draws = nuts.get_samples(group_by_chain=True)["m"].numpy()
    assert abs(draws.mean() - mean) < Z_SCORE * mcse_mean(draws)
    assert abs(((draws - mean) ** 2).mean() - var) < Z_SCORE * mcse_mean((draws - mean) ** 2)


def learned_noise(y):
    scale = pyro.param("scale", torch.tensor(1.0, dtype=y.dtype), constraint=constraints.positive)
    m = pyro.sample("m", dist.Normal(torch.tensor(0.0, dtype=y.dtype), PRIOR_SD))
    with pyro.plate("data", len(y)):
        pyro.sample("obs", dist.Normal(m, scale), obs=y)


def test_model_parameters_are_fitted_by_svi_and_held_by_nuts():
    y = _normal_mean_data(400)
    svi = fit_svi(learned_noise, y, num_steps=1500, lr=0.05, final_lr=1e-3, num_samples=10, seed=0, progress_bar=False)
    fitted = float(svi.state.param_state["model"]["scale"].exp())
    # type-II maximum likelihood: the noise scale goes to the sample sd (0.5 here, +- 0.02)
    assert abs(fitted - float(y.std())) < 0.02
    assert len(pyro.get_param_store()) == 0
    nuts = fit_nuts(learned_noise, y, num_warmup=50, num_samples=50, num_chains=1, seed=0, **QUIET)
    assert float(nuts.spec.params["scale"].exp()) == pytest.approx(1.0)  # held at its initial value


# -- errors a new user meets first ------------------------------------------------------------


def test_data_passed_the_wrong_way_gets_a_clear_error():
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) 'sigma', 'y'.*model_kwargs"):
        fit_nuts(eight_schools, sigma=SIGMA, y=Y8)
    with pytest.raises(TypeError, match=r"'num_warmpu' \(did you mean 'num_warmup'\?\)"):
        fit_nuts(eight_schools, SIGMA, Y8, num_warmpu=10)
    with pytest.raises(ValueError, match="observes nothing"):
        fit_nuts(eight_schools, SIGMA)
    with pytest.raises(TypeError, match=r"eight_schools\(sigma, y=None\) cannot be called with 3 positional"):
        fit_svi(eight_schools, SIGMA, Y8, Y8)
    with pytest.raises(ValueError, match="y contains 1 NaN"):
        fit_nuts(eight_schools, SIGMA, torch.tensor([1.0, float("nan"), 0, 0, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="batch_size minibatches probgen's BNN"):
        fit_svi(eight_schools, SIGMA, Y8, batch_size=4)


def mixture(y):
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2, dtype=y.dtype)))
    locs = pyro.sample("locs", dist.Normal(torch.zeros(2, dtype=y.dtype), 3.0).to_event(1))
    with pyro.plate("data", len(y)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[z], 1.0), obs=y)


def test_discrete_latent_sites_need_pyros_enumeration():
    y = torch.tensor([-2.0, -1.5, 2.0, 2.5], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"'z' of mixture are discrete.*backend='pyro'"):
        fit_nuts(mixture, y, backend="flat", num_warmup=5, num_samples=5, num_chains=1, **QUIET)
    result = fit_nuts(mixture, y, num_warmup=10, num_samples=10, num_chains=1, seed=0, **QUIET)
    assert result.backend == "pyro"  # "auto" chose Pyro's NUTS, which enumerates z
    assert set(result.samples) == {"weights", "locs"}


def dynamic(y):
    first = pyro.sample("first", dist.Normal(0.0, 1.0))
    if first > 1.0:  # a Python branch on a sampled value: the sites depend on the draw
        pyro.sample("extra", dist.Normal(0.0, 1.0))
    pyro.sample("obs", dist.Normal(first, 1.0), obs=y)


def test_a_model_whose_sites_change_between_runs_is_refused():
    with pytest.raises(ValueError, match="latent sites change between runs.*static model"):
        fit_nuts(dynamic, torch.tensor(0.5), num_warmup=5, num_samples=5, num_chains=1, **QUIET)


def test_something_that_is_no_model_is_refused():
    with pytest.raises(TypeError, match="callable Pyro program"):
        fit_nuts("model", SIGMA, Y8)

    def no_sites(x):
        return x * 2

    with pytest.raises(ValueError, match="samples nothing"):
        fit_svi(no_sites, SIGMA)
