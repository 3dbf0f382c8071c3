"""to_arviz: every group with named dims for NUTS and SVI, LOO without warnings, an exact NetCDF
round trip, and a posterior reloaded from its file that predicts exactly as the original."""

from __future__ import annotations

import copy
import math
import warnings

import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import xarray as xr
from pyro import poutine
from torch import nn

import probgen
from probgen.infer.arviz import as_inference_data, load_result, to_arviz
from probgen.infer.results import MCMCResult, SVIResult
from probgen.infer.svi import fit_svi
from probgen.metrics import mixture_log_likelihood
from probgen.models.bnn import BNN
from tests import _tiny_fits as fits

X_NEW = np.linspace(-3.0, 3.0, 7).reshape(-1, 1)
STAT_NAMES = {"diverging", "lp", "energy", "step_size", "tree_depth", "n_steps", "acceptance_rate"}
# ArviZ 0.23's plot_trace de-aliases keywords in a way matplotlib 3.11 deprecates; not ours to fix.
ARVIZ_MPL_DEPRECATION = "ignore:Passing a dict or None as alias_mapping:matplotlib.MatplotlibDeprecationWarning"


def _fit(method: str):
    return fits.nuts_fit() if method == "nuts" else fits.svi_fit()


def _fresh_model(method: str) -> BNN:
    """A model built like the fit's, with freshly initialised (different) deterministic parameters."""
    return fits.regression_model(deterministic=() if method == "nuts" else fits.SVI_DETERMINISTIC)


@pytest.fixture(scope="module", params=["nuts", "svi"])
def method(request):
    return request.param


@pytest.fixture(scope="module")
def fit(method):
    return _fit(method)


@pytest.fixture(scope="module")
def idata(fit):
    with fits.settings():
        return to_arviz(fit, x_new=X_NEW)


def test_every_group_is_present(method, idata):
    expected = {
        "posterior",
        "posterior_predictive",
        "log_likelihood",
        "observed_data",
        "constant_data",
        "predictions",
        "predictions_constant_data",
    }
    if method == "nuts":
        expected.add("sample_stats")
    assert set(idata.groups()) == expected


def test_posterior_has_module_dims_and_the_draws(method, fit, idata):
    chains, draws = (fits.NUM_CHAINS, fits.NUM_DRAWS) if method == "nuts" else (1, fits.NUM_GUIDE_DRAWS)
    post = idata.posterior
    assert post["0.weight"].dims == ("chain", "draw", "0.out", "0.in")
    assert post["0.weight"].shape == (chains, draws, 8, 1)
    assert post["0.bias"].dims == ("chain", "draw", "0.out")
    assert post["2.weight"].dims == ("chain", "draw", "2.out", "2.in")
    assert post["2.weight"].shape == (chains, draws, 1, 8)
    assert post["noise_scale"].dims == ("chain", "draw")
    assert ("2.bias" in post) == (method == "nuts")  # deterministic in the SVI fit
    np.testing.assert_array_equal(post["0.out"].values, np.arange(8))
    assert list(post.data_vars) == [n for n in fit.model.site_names]  # the model's sampling order
    for name, value in fit.samples.items():
        np.testing.assert_array_equal(post[name].values, value.numpy())


def test_data_groups_have_observation_dims(fit, idata):
    chains, draws = fit.num_chains, fit.num_draws
    for group in ("log_likelihood", "posterior_predictive"):
        assert idata[group]["obs"].dims == ("chain", "draw", "obs_id")
        assert idata[group]["obs"].shape == (chains, draws, fits.NUM_POINTS)
    assert idata.observed_data["obs"].dims == ("obs_id",)
    np.testing.assert_array_equal(idata.observed_data["obs"].values, fit.y.numpy())
    assert idata.constant_data["x"].dims == ("obs_id", "feature")
    np.testing.assert_array_equal(idata.constant_data["x"].values, fit.x.numpy())
    assert idata.predictions["obs"].shape == (chains, draws, len(X_NEW))
    assert idata.predictions_constant_data["x"].dims == ("obs_id", "feature")
    np.testing.assert_array_equal(idata.predictions_constant_data["x"].values, X_NEW)


def test_deterministic_parameters_are_constant_data(method, fit, idata):
    state = fit.model.state_dict()
    assert set(state) == ({"net.2.bias"} if method == "svi" else set())
    for key, value in state.items():
        assert idata.constant_data[key].dims == ("2.out",)
        np.testing.assert_array_equal(idata.constant_data[key].values, value.numpy())


def test_nuts_sample_stats_support_bfmi():
    idata = to_arviz(fits.nuts_fit(), predictive=False)
    stats = idata.sample_stats
    assert set(stats.data_vars) == STAT_NAMES
    for name in STAT_NAMES:
        assert stats[name].dims == ("chain", "draw")
    assert stats["diverging"].dtype == bool
    bfmi = az.bfmi(idata)
    assert bfmi.shape == (fits.NUM_CHAINS,) and np.isfinite(bfmi).all()


@pytest.mark.filterwarnings(ARVIZ_MPL_DEPRECATION)
def test_arviz_energy_and_trace_plots_run():
    idata = to_arviz(fits.nuts_fit(), predictive=False)
    assert az.plot_energy(idata) is not None
    assert az.plot_trace(idata).shape == (len(idata.posterior.data_vars), 2)
    plt.close("all")


def test_attrs_record_the_provenance(method, fit, idata):
    attrs = idata.attrs
    assert attrs["inference_library"] == "probgen"
    assert attrs["inference_library_version"] == probgen.__version__
    assert attrs["inference_method"] == method
    assert attrs["seed"] == fit.seed
    if method == "nuts":
        assert (attrs["backend"], attrs["num_warmup"]) == ("pyro", fits.NUM_DRAWS)
    else:
        assert (attrs["guide"], attrs["num_steps"]) == ("normal", 200)


def test_loo_and_waic_are_finite_without_log_likelihood_warnings(idata):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loo = az.loo(idata, pointwise=True)
        waic = az.waic(idata)
    assert math.isfinite(loo.elpd_loo) and math.isfinite(waic.elpd_waic)
    assert loo.pareto_k.shape == (fits.NUM_POINTS,)
    # Pareto-k and WAIC-variance notices are about the model; none may be about missing data.
    messages = [str(w.message).lower() for w in caught]
    assert not [m for m in messages if "log likelihood" in m or "log_likelihood" in m], messages


def test_pointwise_log_likelihood_matches_pyro_and_metrics(fit, idata):
    ll = idata.log_likelihood["obs"].values  # (chain, draw, n)
    # Summed over observations, each draw's value is the log-likelihood Pyro's own trace gives.
    for chain, draw in [(0, 0), (fit.num_chains - 1, fit.num_draws - 1)]:
        weights = {name: value[chain, draw] for name, value in fit.samples.items()}
        with torch.no_grad():
            trace = poutine.trace(poutine.condition(fit.model, data=weights)).get_trace(fit.x, fit.y)
            pyro_ll = trace.nodes["obs"]["fn"].log_prob(fit.y)
        np.testing.assert_allclose(ll[chain, draw], pyro_ll.numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ll[chain, draw].sum(), float(pyro_ll.sum()), rtol=1e-12)
    # Mixed over draws, it is the held-out log-likelihood of probgen.metrics ...
    mixed = mixture_log_likelihood(fit.log_likelihood(fit.x, fit.y))
    flat = ll.reshape(-1, ll.shape[-1])
    by_hand = np.mean(np.logaddexp.reduce(flat, axis=0) - np.log(flat.shape[0]))
    np.testing.assert_allclose(mixed, by_hand, rtol=1e-12)
    # ... and ArviZ's lppd (elpd_waic + p_waic = sum_i log mean_s p(y_i | theta_s)) agrees.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # WAIC's variance notice
        waic = az.waic(idata)
    np.testing.assert_allclose(waic.elpd_waic + waic.p_waic, fits.NUM_POINTS * mixed, rtol=1e-10)


def test_log_likelihood_needs_both_x_and_y(fit):
    with pytest.raises(ValueError, match="pass both x and y, or neither"):
        fit.log_likelihood(fit.x)


def test_netcdf_round_trip_is_exact(idata, tmp_path):
    path = tmp_path / "posterior.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    assert set(back.groups()) == set(idata.groups())
    for group in idata.groups():
        xr.testing.assert_identical(back[group].load(), idata[group])
    assert dict(back.attrs) == dict(idata.attrs)


@pytest.mark.parametrize("via", ["file", "idata"])
def test_reloaded_posterior_predicts_the_same(method, fit, idata, via, tmp_path):
    source = idata
    if via == "file":
        source = tmp_path / "posterior.nc"
        idata.to_netcdf(str(source))
    again = load_result(source, _fresh_model(method))
    assert type(again) is (MCMCResult if method == "nuts" else SVIResult)
    assert again.seed == fit.seed
    for name, value in fit.samples.items():
        assert torch.equal(again.samples[name], value)
    for key, value in fit.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[key], value)
    new, old = again.predict(X_NEW), fit.predict(X_NEW)
    for field in ("f", "y", "mean", "epistemic_var", "aleatoric_var"):
        assert torch.equal(getattr(new, field), getattr(old, field)), field
    if method == "nuts":
        for name, value in fit.sample_stats.items():
            assert torch.equal(again.sample_stats[name], value)
    else:
        assert again.guide_name == fit.guide_name == "normal"


def test_load_result_leaves_the_given_model_alone():
    model = _fresh_model("svi")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    load_result(to_arviz(fits.svi_fit(), predictive=False), model)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_load_result_names_what_does_not_match():
    nuts_idata = to_arviz(fits.nuts_fit(), predictive=False)
    svi_idata = to_arviz(fits.svi_fit(), predictive=False)
    wider = BNN(nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1)).double())
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(8, 1\) but the model expects \(16, 1\)"):
        load_result(nuts_idata, wider)
    with pytest.raises(ValueError, match="no draws of '2.bias'"):
        load_result(svi_idata, _fresh_model("nuts"))
    with pytest.raises(ValueError, match="deterministic parameter.*'net.2.bias'"):
        load_result(nuts_idata, _fresh_model("svi"))
    with pytest.raises(TypeError, match="posterior of a 'bnn' model; pass the probgen.BNN"):
        load_result(nuts_idata, nn.Linear(1, 1))
    with pytest.raises(ValueError, match="no 'constant_data' group"):
        posterior_only = az.from_dict(posterior={name: v.numpy() for name, v in fits.nuts_fit().samples.items()})
        load_result(posterior_only, _fresh_model("nuts"))


def test_bad_sources_are_refused(tmp_path):
    with pytest.raises(TypeError, match="probgen result"):
        to_arviz("posterior.nc")
    with pytest.raises(FileNotFoundError, match="no such file"):
        as_inference_data(tmp_path / "missing.nc")
    with pytest.raises(TypeError, match="InferenceData"):
        as_inference_data(42)


def test_multi_output_targets_get_a_target_dim():
    x = torch.linspace(-1, 1, 12).unsqueeze(-1)
    y = torch.cat([x, -x], dim=1) + 0.1 * torch.randn(12, 2)
    result = fit_svi(BNN(nn.Linear(1, 2)), x, y, num_steps=10, num_samples=20, seed=0, progress_bar=False)
    idata = to_arviz(result)
    assert idata.observed_data["obs"].dims == ("obs_id", "target")
    assert idata.posterior_predictive["obs"].dims == ("chain", "draw", "obs_id", "target")
    assert idata.log_likelihood["obs"].dims == ("chain", "draw", "obs_id")  # one value per row
    assert idata.posterior["weight"].dims == ("chain", "draw", "out", "in")


def test_a_reloaded_classifier_predicts_the_same():
    fit = fits.classifier_fit()
    again = load_result(to_arviz(fit, predictive=False), copy.deepcopy(fit.model))
    x = torch.randn(5, 2)
    assert torch.equal(again.predict(x).probs, fit.predict(x).probs)
    assert torch.equal(again.y, fit.y)
