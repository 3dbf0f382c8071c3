"""Tests for probgen/plots/predictive.py: predictive bands, uncertainty split and fit comparison (Agg backend)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from probgen import plots
from probgen.plots._util import INTERVALS, flat_draws, interval_bounds
from probgen.infer.arviz import to_arviz
from tests.plots._checks import labelled, legend, saved


@pytest.mark.parametrize("interval", INTERVALS)
def test_predictive_band_shows_both_kinds_of_uncertainty(nuts, interval, tmp_path):
    ax = plots.plot_predictive(nuts, interval=interval, num_functions=4)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x", "y")
    assert legend(ax) == [
        f"90% predictive {interval}",
        f"50% predictive {interval}",
        "90% mean function (epistemic)",
        "function draws",
        "posterior mean",
        "data",
    ]
    assert len(ax.get_lines()) == 4 + 1  # function draws and the mean
    saved(ax, tmp_path / "predictive.png")


def test_central_band_is_the_predictions_interval(nuts):
    x = torch.linspace(-2, 2, 9).unsqueeze(-1)
    pred = nuts.predict(x)
    lo, hi = interval_bounds(flat_draws(pred.y), 0.9, "central")
    want_lo, want_hi = pred.interval(0.9)
    np.testing.assert_allclose(lo, want_lo.numpy(), rtol=1e-12)
    np.testing.assert_allclose(hi, want_hi.numpy(), rtol=1e-12)


def test_predictive_draws_on_a_given_axes_at_given_inputs(svi):
    _, ax = plt.subplots()
    x_plot = np.array([1.0, -1.0, 0.0])  # unsorted 1-D input is sorted and reshaped
    assert plots.plot_predictive(svi, x_plot, ax=ax, num_functions=0) is ax
    np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), [-1.0, 0.0, 1.0])


def test_uncertainty_stacks_epistemic_under_aleatoric(svi, tmp_path):
    ax = plots.plot_uncertainty(svi)
    assert labelled(ax) and legend(ax) == ["epistemic", "aleatoric", "training inputs"]
    saved(ax, tmp_path / "uncertainty.png")


def test_svi_against_nuts_side_by_side(svi, nuts, tmp_path):
    fig = plots.plot_posterior_comparison({"SVI": svi, "NUTS": nuts})
    axes = fig.get_axes()
    assert len(axes) == 4 + 2  # four marginals, two predictive bands
    assert [ax.get_xlabel() for ax in axes[:4]] == ["noise_scale", "0.weight[0, 0]", "0.bias[0]", "2.weight[0, 0]"]
    assert all(labelled(ax) for ax in axes)
    assert [ax.get_title() for ax in axes[4:]] == ["SVI", "NUTS"]
    saved(fig, tmp_path / "comparison.png")


def test_comparison_takes_weights_by_summary_label(svi, nuts):
    fig = plots.plot_posterior_comparison({"SVI": svi, "NUTS": nuts}, weights=["0.weight[3, 0]"])
    assert fig.get_axes()[0].get_xlabel() == "0.weight[3, 0]"
    with pytest.raises(ValueError, match=r"'0.weight\[9, 0\]' does not index '0.weight'"):
        plots.plot_posterior_comparison({"SVI": svi}, weights=["0.weight[9, 0]"])
    with pytest.raises(ValueError, match=r"use an index like '0.bias\[0\]'"):
        plots.plot_posterior_comparison({"SVI": svi}, weights=["0.bias"])
    with pytest.raises(ValueError, match="unknown weight 'w'"):
        plots.plot_posterior_comparison({"SVI": svi}, weights=["w"])
    with pytest.raises(ValueError, match=r"results\['SVI'\] has no '2.bias\[0\]'"):
        plots.plot_posterior_comparison({"NUTS": nuts, "SVI": svi}, weights=["2.bias[0]"])
    with pytest.raises(ValueError, match="non-empty mapping"):
        plots.plot_posterior_comparison({})


def test_plots_refuse_what_they_cannot_draw(classifier, svi):
    with pytest.raises(ValueError, match="plot_predictive is for regression"):
        plots.plot_predictive(classifier)
    with pytest.raises(ValueError, match="plot_loo_pit is for regression"):
        plots.plot_loo_pit(classifier)
    with pytest.raises(ValueError, match="plot_reliability is for classifiers"):
        plots.plot_reliability(svi)
    with pytest.raises(ValueError, match="unknown interval 'mode'"):
        plots.plot_predictive(svi, interval="mode")
    with pytest.raises(ValueError, match="pass both x and y"):
        plots.plot_coverage(svi, x=svi.x)
    with pytest.raises(TypeError, match="probgen result"):
        plots.plot_predictive(to_arviz(svi, predictive=False))


def test_predicted_vs_observed_reports_the_coverage_in_the_data_units():
    import matplotlib.pyplot as plt

    from probgen.datasets.uci import Standardization
    from probgen.plots import plot_predicted_vs_observed
    from tests import _tiny_fits as fits

    with fits.settings():
        result = fits.nuts_fit()
        x, y = result.x, result.y
        scaling = Standardization(torch.zeros(1), torch.ones(1), y_mean=100.0, y_std=10.0)
        ax = plot_predicted_vs_observed(result, x, y, scaling=scaling, label="price", subset="training")
        lower, upper = result.predict(x).interval(0.9)
        inside = float(((y >= lower) & (y <= upper)).double().mean())
        assert ax.get_title() == f"Training rows: {inside:.0%} inside the 90% interval"
        assert ax.get_ylabel() == "observed price"
        points = next(line for line in ax.lines if line.get_marker() == "o")
        np.testing.assert_allclose(np.sort(points.get_ydata()), np.sort(y.numpy() * 10 + 100), rtol=1e-6)
        plt.close(ax.figure)
