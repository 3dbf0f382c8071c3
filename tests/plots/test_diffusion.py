"""Tests for probgen/plots/diffusion.py: samples, image grids, trajectories and the bound's terms (Agg backend)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from probgen import plots
from probgen.infer.diffusion import evaluate_bound, sample_ancestral, sample_conditional, sample_ddim
from probgen.models.diffusion import ConvDenoiser, DiffusionChain, DiscretizedGaussianDecoder, get_schedule
from tests._tiny_fits import settings
from tests.infer.diffusion._common import small_chain
from tests.plots._checks import labelled, legend, saved


@pytest.fixture(scope="module")
def points():
    with settings():  # module fixtures run before the per-test set-up of conftest.py
        return sample_ancestral(small_chain(), num_samples=40, num_chains=2, seed=0, return_chain=True)


@pytest.fixture(scope="module")
def images():
    with settings():
        net = ConvDenoiser(1, hidden_channels=8, num_blocks=1)
        decoder = DiscretizedGaussianDecoder(17)
        chain = DiffusionChain(net, get_schedule("cosine", 4), event_shape=(1, 4, 4), decoder=decoder)
        return sample_ancestral(chain, num_samples=5, num_chains=2, seed=0)


def test_samples_scatter_over_held_out_data(points, tmp_path):
    ax = plots.plot_samples(points, reference=torch.randn(30, 2), title="toy")
    assert legend(ax) == ["held-out data", "samples"] and labelled(ax) and ax.get_title() == "toy"
    assert len(ax.collections[1].get_offsets()) == 80  # every draw of both chains
    saved(ax, tmp_path / "samples.png")


def test_samples_of_more_dimensions_show_two_of_them():
    rows = torch.randn(10, 3)
    ax = plots.plot_samples(rows, dims=(2, 0))
    np.testing.assert_array_equal(ax.collections[0].get_offsets(), rows[:, [2, 0]].numpy())
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x[2]", "x[0]")


def test_image_grid_shows_one_image_per_draw(images, tmp_path):
    fig = plots.plot_image_grid(images, title="digits")
    shown = [ax for ax in fig.get_axes() if ax.get_images()]
    assert len(shown) == 10 and fig.get_suptitle() == "digits"
    np.testing.assert_array_equal(shown[3].get_images()[0].get_array(), images.samples[0, 3, 0].numpy())
    assert len([ax for ax in plots.plot_image_grid(images, max_images=4, cols=2).get_axes() if ax.get_images()]) == 4
    saved(fig, tmp_path / "grid.png")


def test_conditional_completions_are_rows_of_the_scatter():
    draws = sample_conditional(small_chain(), torch.zeros(3, 2), torch.tensor([True, False]), num_samples=4, seed=0)
    ax = plots.plot_samples(draws)
    offsets = ax.collections[0].get_offsets()
    assert len(offsets) == 12 and np.all(np.asarray(offsets)[:, 0] == 0.0)


def test_trajectory_shows_chosen_steps(points, tmp_path):
    fig = plots.plot_trajectory(points, steps=[10, 5, 0])
    assert [ax.get_title() for ax in fig.get_axes()] == ["$x_{10}$", "$x_{5}$", "$x_{0}$"]
    np.testing.assert_array_equal(fig.get_axes()[2].collections[0].get_offsets(), points.get_samples()["x_0"].numpy())
    assert len(plots.plot_trajectory(points).get_axes()) == 6
    saved(fig, tmp_path / "trajectory.png")


@pytest.mark.parametrize("unit", plots.BOUND_UNITS)
def test_bound_terms_with_error_bars(unit, tmp_path):
    bound = evaluate_bound(small_chain(), torch.randn(20, 2), seed=0, progress_bar=False)
    ax = plots.plot_bound_terms(bound, unit=unit)
    assert labelled(ax) and ax.get_yscale() == "log"
    scale = 1.0 if unit == "nats" else 1.0 / (2 * math.log(2))
    np.testing.assert_allclose(ax.lines[0].get_ydata(), bound.terms[1:-1].numpy() * scale, rtol=1e-12)
    saved(ax, tmp_path / f"terms_{unit}.png")


def test_diffusion_plots_refuse_what_they_cannot_draw(points, images):
    with pytest.raises(ValueError, match="plot_samples draws vectors of at least 2 coordinates"):
        plots.plot_samples(images)
    with pytest.raises(ValueError, match="unknown dims entry 2"):
        plots.plot_samples(points, dims=(0, 2))
    with pytest.raises(ValueError, match="plot_image_grid draws images"):
        plots.plot_image_grid(points)
    with pytest.raises(ValueError, match="return_chain=True"):
        plots.plot_trajectory(images)
    ddim = sample_ddim(small_chain(), num_samples=2, num_sampling_steps=4, seed=0, return_chain=True)
    with pytest.raises(ValueError, match=r"steps \[3\] were not visited"):
        plots.plot_trajectory(ddim, steps=[3])  # DDIM visited 10, 7, 4, 1, 0
    with pytest.raises(ValueError, match="unknown unit 'bytes'; expected one of 'nats', 'bits'"):
        plots.plot_bound_terms(evaluate_bound(small_chain(), torch.randn(4, 2), seed=0, progress_bar=False), unit="bytes")  # type: ignore[arg-type]


def test_regression_uncertainty_puts_a_chain_and_a_bnn_side_by_side(tmp_path):
    from probgen.infer.diffusion import predictive_uncertainty
    from probgen.infer.predictive import Prediction
    from probgen.models.diffusion import MLPDenoiser
    from probgen.priors import GaussianPrior

    x = torch.linspace(-1.0, 1.0, 7)
    chain = DiffusionChain(MLPDenoiser(1, hidden_dim=8, num_blocks=1, cond_dim=1), get_schedule("linear", 5),
                           event_shape=(1,), prior=GaussianPrior(1.0, fan_in=True), init_scale=0.05)  # fmt: skip
    readout = predictive_uncertainty(chain, x[:, None], num_samples=3, num_posterior_draws=2, seed=0)
    bnn = Prediction(f=torch.zeros(1, 2, 7, 2), y=torch.zeros(1, 2, 7), mean=x, epistemic_var=x**2 + 0.1,
                     aleatoric_var=torch.full((7,), 0.2))  # fmt: skip
    fig = plots.plot_regression_uncertainty(
        x, {"chain": readout, "BNN": bnn}, x_train=x, y_train=x, true_noise_var=lambda v: 0.1 + 0 * v, shade=(-0.2, 0.2)
    )
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["chain", "BNN", "chain: variance", "BNN: variance"]
    assert all(labelled(ax) for ax in axes[2:]) and axes[2].get_yscale() == "log"
    np.testing.assert_allclose(axes[2].lines[0].get_ydata(), readout.epistemic_var[:, 0].double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(axes[3].lines[1].get_ydata(), bnn.aleatoric_var.numpy())
    np.testing.assert_allclose(axes[1].lines[0].get_ydata(), x.numpy())  # the BNN's predictive mean
    assert legend(axes[2]) == ["epistemic", "aleatoric", "true noise variance"]
    saved(fig, tmp_path / "regression.png")
    with pytest.raises(ValueError, match="but x has 5 points"):
        plots.plot_regression_uncertainty(x[:5], {"chain": readout})
    with pytest.raises(TypeError, match="must be a PredictiveUncertainty"):
        plots.plot_regression_uncertainty(x, {"bad": x})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="fits is empty"):
        plots.plot_regression_uncertainty(x, {})
