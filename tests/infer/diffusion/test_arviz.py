"""Tests for the diffusion section of probgen/infer/arviz.py: a run through InferenceData and NetCDF and back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probgen import to_arviz
from probgen._compat import import_arviz
from probgen.infer.arviz import BOUND_QUANTITY, as_inference_data, diffusion_to_arviz
from probgen.infer.diffusion import evaluate_bound, fit_diffusion, sample_ancestral, sample_conditional, sample_ddim
from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
from tests.infer.diffusion._common import small_chain


@pytest.fixture
def run():
    chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8, num_blocks=1), get_schedule("cosine", 6), event_shape=(2,))
    fit = fit_diffusion(chain, torch.randn(40, 2), num_steps=4, batch_size=8, seed=3, ema_decay=0.9, progress_bar=False)
    bound = evaluate_bound(fit.chain, torch.randn(7, 2), seed=1, progress_bar=False)
    draws = sample_ancestral(fit.chain, num_samples=5, num_chains=2, seed=2, return_chain=True)
    return fit, bound, draws


def test_a_run_survives_netcdf_with_its_samples_bound_losses_and_configuration(run, tmp_path):
    fit, bound, draws = run
    idata = fit.to_arviz(bound=bound, samples=draws)
    assert set(idata.groups()) == {"posterior_predictive", "observed_data", "losses", "bound", "bound_terms"}
    path = tmp_path / "run.nc"
    idata.to_netcdf(str(path))
    again = import_arviz().from_netcdf(str(path))
    # the same samples ...
    np.testing.assert_array_equal(again.posterior_predictive["x_0"].values, draws.samples.numpy())
    np.testing.assert_array_equal(again.posterior_predictive["trajectory"].values, draws.trajectory.numpy())
    assert again.posterior_predictive["trajectory"]["step"].values.tolist() == draws.steps.tolist()
    # ... the same bound, per data point and per term, and the data it scored ...
    np.testing.assert_array_equal(again.bound["x_0"].values[0, 0], bound.per_example.numpy())
    np.testing.assert_array_equal(again.bound_terms["x_0"].values[0, 0], bound.per_example_terms.numpy())
    np.testing.assert_array_equal(again.observed_data["x_0"].values, bound.data.numpy())
    assert again.bound.attrs["quantity"] == BOUND_QUANTITY and "not a log-likelihood" in BOUND_QUANTITY
    assert again.bound.attrs["nats"] == bound.nats and again.attrs["bound_bits_per_dim"] == bound.bits_per_dim
    # ... the same losses and configuration
    np.testing.assert_array_equal(again.losses["loss"].values, fit.losses.numpy())
    assert again.losses["step"].values.tolist() == [1, 2, 3, 4]
    attrs = again.attrs
    assert attrs["inference_method"] == "diffusion" and attrs["inference_library"] == "probgen"
    for key, value in {**fit.chain.describe(), **fit.state.config}.items():
        if value is None:
            assert key not in attrs  # NetCDF stores no None
        elif key == "event_shape":
            assert np.atleast_1d(attrs[key]).tolist() == value
        else:
            assert attrs[key] == value, key
    assert (attrs["schedule"], attrs["num_timesteps"], attrs["objective"], attrs["seed"]) == ("cosine", 6, "elbo", 3)
    assert (attrs["sampler"], attrs["sampler_seed"], attrs["num_chains"], attrs["num_draws"]) == ("ancestral", 2, 2, 5)
    assert as_inference_data(path).groups() == again.groups()  # the path branch reads the same file


def test_every_diffusion_result_converts_on_its_own(run):
    fit, bound, draws = run
    assert fit.to_arviz().groups() == ["losses"]
    assert bound.to_arviz().groups() == ["observed_data", "bound", "bound_terms"]
    assert draws.to_arviz().groups() == ["posterior_predictive"]
    for result in run:  # the generic converter takes each of them
        assert to_arviz(result).groups() == result.to_arviz().groups()
    idata = bound.to_arviz()
    assert idata.bound["x_0"].dims == ("chain", "draw", "obs_id")
    assert idata.bound_terms["x_0"].dims == ("chain", "draw", "obs_id", "term")
    assert idata.bound_terms["term"].values.tolist() == list(range(7))  # L_0 .. L_T, T = 6
    assert idata.attrs["schedule"] == "cosine" and idata.attrs["bound_seed"] == 1
    x0 = draws.to_arviz().posterior_predictive["x_0"]
    assert x0.dims == ("chain", "draw", "x_0_dim_0") and x0.shape == (2, 5, 2)
    with pytest.raises(ValueError, match="needs a fit, a bound or samples"):
        diffusion_to_arviz()
    with pytest.raises(TypeError, match="expected a BoundResult"):
        diffusion_to_arviz(bound=draws)  # type: ignore[arg-type]


def test_conditional_samples_carry_their_observation_into_arviz(tmp_path):
    x_obs, mask = torch.tensor([[0.5, 0.0], [-1.0, 0.0], [2.0, 0.0]]), torch.tensor([True, False])
    draws = sample_conditional(small_chain(), x_obs, mask, num_samples=4, seed=0)
    idata = draws.to_arviz()
    assert idata.groups() == ["posterior_predictive", "constant_data"]
    assert idata.posterior_predictive["x_0"].dims == ("chain", "draw", "obs_id", "x_0_dim_0")
    assert idata.constant_data["x_observed"].dims == ("obs_id", "x_0_dim_0")
    np.testing.assert_array_equal(idata.constant_data["x_observed"].values, x_obs.numpy())
    # the observed coordinate of every completion is the observation
    completions = idata.posterior_predictive["x_0"].values[..., 0]
    np.testing.assert_array_equal(completions, np.broadcast_to(x_obs[:, 0].numpy(), (1, 4, 3)))
    path = tmp_path / "conditional.nc"
    idata.to_netcdf(str(path))
    again = import_arviz().from_netcdf(str(path))
    np.testing.assert_array_equal(again.constant_data["mask"].values, mask.expand(3, 2).numpy())


def test_ddim_samples_record_eta():
    draws = sample_ddim(small_chain(), num_samples=3, num_sampling_steps=5, eta=0.5, seed=0)
    attrs = draws.to_arviz().posterior_predictive.attrs
    assert attrs["sampler"] == "ddim" and attrs["eta"] == 0.5 and list(attrs["steps"]) == draws.steps.tolist()
