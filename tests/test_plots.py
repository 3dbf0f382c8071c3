"""probgen.plots: every figure draws, labels its axes and saves a non-empty PNG (Agg backend)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from probgen import plots
from probgen.infer.arviz import to_arviz
from probgen.metrics import expected_calibration_error
from tests import _tiny_fits as fits


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def nuts():
    return fits.nuts_fit()


@pytest.fixture(scope="module")
def svi():
    return fits.svi_fit()


@pytest.fixture(scope="module")
def classifier():
    return fits.classifier_fit()


def _figure(drawn) -> Figure:
    first = drawn if isinstance(drawn, Figure) else np.ravel(drawn)[0]
    return first if isinstance(first, Figure) else first.get_figure(root=True)


def _saved(drawn, path) -> None:
    """Save the figure as PNG and check that the file is a non-empty image."""
    _figure(drawn).savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def _labelled(ax: Axes) -> bool:
    return bool(ax.get_xlabel()) and bool(ax.get_ylabel() or ax.get_title())


def _legend(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


@pytest.mark.parametrize("interval", ["hdi", "central"])
def test_predictive_band_shows_both_kinds_of_uncertainty(nuts, interval, tmp_path):
    ax = plots.plot_predictive(nuts, interval=interval, num_functions=4)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x", "y")
    assert _legend(ax) == [
        f"90% predictive {interval}",
        f"50% predictive {interval}",
        "90% mean function (epistemic)",
        "function draws",
        "posterior mean",
        "data",
    ]
    assert len(ax.get_lines()) == 4 + 1  # function draws and the mean
    _saved(ax, tmp_path / "predictive.png")


def test_central_band_is_the_predictions_interval(nuts):
    x = torch.linspace(-2, 2, 9).unsqueeze(-1)
    pred = nuts.predict(x)
    lo, hi = plots._interval(plots._flat(pred.y), 0.9, "central")
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
    assert _labelled(ax) and _legend(ax) == ["epistemic", "aleatoric", "training inputs"]
    _saved(ax, tmp_path / "uncertainty.png")


def test_regression_calibration_is_a_coverage_plot(svi, tmp_path):
    ax = plots.plot_calibration(svi)
    assert ax.get_title() == "Coverage" and _labelled(ax)
    empirical = ax.get_lines()[-1].get_ydata()
    assert len(empirical) == 19 and np.all(np.diff(empirical) >= 0)  # nested intervals
    _saved(ax, tmp_path / "coverage.png")


def test_classifier_calibration_is_a_reliability_diagram(classifier, tmp_path):
    ax = plots.plot_calibration(classifier)
    probs = classifier.predict(classifier.x).mean
    ece = expected_calibration_error(probs, classifier.y.long())
    assert ax.get_title() == f"Reliability diagram (ECE = {ece:.3f})" and _labelled(ax)
    _saved(ax, tmp_path / "reliability.png")


@pytest.mark.parametrize("ecdf", [False, True], ids=["density", "ecdf"])
def test_loo_pit_through_arviz(nuts, ecdf, tmp_path):
    ax = plots.plot_loo_pit(nuts, ecdf=ecdf)
    assert ax.get_xlabel() == "LOO-PIT value" and _labelled(ax)
    _saved(ax, tmp_path / "loo_pit.png")


def test_svi_against_nuts_side_by_side(svi, nuts, tmp_path):
    fig = plots.plot_posterior_comparison({"SVI": svi, "NUTS": nuts})
    axes = fig.get_axes()
    assert len(axes) == 4 + 2  # four marginals, two predictive bands
    assert [ax.get_xlabel() for ax in axes[:4]] == ["noise_scale", "0.weight[0, 0]", "0.bias[0]", "2.weight[0, 0]"]
    assert all(_labelled(ax) for ax in axes)
    assert [ax.get_title() for ax in axes[4:]] == ["SVI", "NUTS"]
    _saved(fig, tmp_path / "comparison.png")


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


@pytest.mark.parametrize("name", ["plot_trace", "plot_rank", "plot_posterior"])
def test_arviz_plots_show_a_readable_selection(nuts, name, tmp_path):
    axes = getattr(plots, name)(nuts)
    visible = [ax for ax in np.ravel(axes) if ax.get_visible()]
    assert all(ax.get_xlabel() or ax.get_title() for ax in visible)
    if name != "plot_trace":  # one panel per selected scalar: first two units of every dim
        assert len(visible) == 2 + 2 + 2 + 1 + 1  # 0.weight, 0.bias, 2.weight, 2.bias, noise_scale
    _saved(axes, tmp_path / f"{name}.png")


def test_arviz_plots_take_coords(svi):
    axes = plots.plot_posterior(to_arviz(svi, predictive=False), var_names=["0.bias"], coords={})
    assert len([ax for ax in np.ravel(axes) if ax.get_visible()]) == 8


def test_energy_plot_needs_nuts(nuts, svi, tmp_path):
    ax = plots.plot_energy(nuts)
    assert _labelled(ax)
    _saved(ax, tmp_path / "energy.png")
    with pytest.raises(ValueError, match="only NUTS results"):
        plots.plot_energy(svi)


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
