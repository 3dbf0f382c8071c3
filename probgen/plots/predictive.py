"""Figures of a 1-D regression's posterior predictive, and of several fits of one model side by side.

* :func:`plot_predictive`: the predictive-uncertainty band: data, posterior mean, 50% and 90% predictive
  intervals (HDI or central), the interval of the mean function (the epistemic part; the rest of the
  band is aleatoric noise) and a few function draws.
* :func:`plot_uncertainty`: the predictive variance split into its epistemic and aleatoric parts.
* :func:`plot_posterior_comparison`: marginal posteriors of chosen weights and predictive bands of
  several fits (SVI against NUTS).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from torch import Tensor

from probgen._compat import import_arviz
from probgen._validate import check_choice, check_positive_int
from probgen.datasets.uci import Standardization
from probgen.infer.predictive import Prediction
from probgen.infer.results import PosteriorResult
from probgen.plots._util import (
    INTERVALS,
    Interval,
    arviz_plotting,
    check_levels,
    check_regression,
    check_result,
    flat_draws,
    interval_bounds,
    new_axes,
)

__all__ = ["plot_predictive", "plot_uncertainty", "plot_posterior_comparison"]

_LABEL = re.compile(r"^(?P<site>.+?)(?:\[(?P<index>[\d,\s]*)\])?$")


def _check_1d_regression(result: PosteriorResult, caller: str) -> None:
    check_regression(result, caller)
    if result.x.dim() != 2 or result.x.shape[1] != 1 or result.y.dim() != 1:
        raise ValueError(
            f"{caller} draws 1-D regression: one input feature and one target column; got x of shape "
            f"{tuple(result.x.shape)} and y of shape {tuple(result.y.shape)}. Use plot_coverage instead."
        )


def _grid(result: PosteriorResult, x_plot: Any) -> Tensor:
    """Sorted plotting inputs ``(m, 1)``: ``x_plot``, or 200 points over the data range plus 10% each side."""
    if x_plot is None:
        lo, hi = float(result.x.min()), float(result.x.max())
        pad = 0.1 * (hi - lo) if hi > lo else 1.0
        return torch.linspace(lo - pad, hi + pad, 200, dtype=result.x.dtype).unsqueeze(-1)
    if isinstance(x_plot, Tensor):
        x_plot = x_plot.detach().cpu().cpu().numpy()
    values = np.asarray(x_plot)
    x_t = result.model.check_x(values.reshape(-1, 1) if values.ndim == 1 else values)
    return x_t[x_t[:, 0].argsort()]


class _Units:
    """Maps a fit's standardised inputs and targets back to the data's units for the axes (identity without a scaling)."""

    def __init__(self, scaling: Standardization | None) -> None:
        if scaling is not None and not isinstance(scaling, Standardization):
            raise TypeError(f"scaling must be a probgen.datasets.Standardization, got {type(scaling).__name__}.")
        self.scaling = scaling if scaling is not None else Standardization.identity(1)

    def x(self, x: Tensor) -> np.ndarray:
        return self.scaling.unscale_x(x)[:, 0].cpu().numpy()

    def y(self, y: Tensor | np.ndarray) -> np.ndarray:
        return self.scaling.unscale_y(torch.as_tensor(y)).cpu().numpy()

    def variance(self, var: Tensor) -> np.ndarray:
        return (var * self.scaling.y_std**2).cpu().numpy()


def _mean_function(result: PosteriorResult, pred: Prediction) -> Tensor:
    """``E[y | x, theta_s]`` per draw, ``(chain, draw, m)``: the function that the weights define."""
    model = result.model
    globals_ = {name: result.samples[name] for name in model.global_priors}
    with torch.no_grad():
        mean, _ = model.likelihood.mean_variance(pred.f, globals_)
    return mean


def plot_predictive(
    result: PosteriorResult,
    x_plot: Any = None,
    *,
    levels: Sequence[float] = (0.5, 0.9),
    interval: Interval = "hdi",
    num_functions: int = 5,
    seed: int | None = None,
    scaling: Standardization | None = None,
    xlabel: str = "x",
    ylabel: str = "y",
    ax: Axes | None = None,
) -> Axes:
    """The predictive-uncertainty band of a 1-D regression.

    Draws, from back to front: the ``levels`` intervals of the posterior predictive of ``y``
    (blue; total uncertainty), the widest level's interval of the mean function
    ``E[y | x, theta]`` over draws (orange; the epistemic part, so the blue margin outside it is
    the aleatoric noise), ``num_functions`` mean functions of single draws, the posterior
    predictive mean (black line) and the training data.

    :param PosteriorResult result: a fitted 1-D regression (one input feature, scalar targets).
    :param x_plot: inputs to draw at, ``(m,)`` or ``(m, 1)``; 200 points over the data range by default.
    :param levels: interval probabilities.
    :param str interval: ``"hdi"`` (highest density, via ``az.hdi``) or ``"central"``.
    :param int num_functions: function draws to show (evenly spaced over the draws).
    :param int seed: seeds the predictive draws; defaults to the fit's seed.
    :param Standardization scaling: the standardisation the model was fitted under; the axes then
        show the data's units (``x_plot`` stays in the model's, standardised, units).
    :param str xlabel: the x axis label (a column name).
    :param str ylabel: the y axis label.
    :param ax: the Axes to draw on; a new figure by default.
    :returns: the Axes.
    :raises ValueError: for a classifier or data that are not 1-D.
    """
    result = check_result(result)
    _check_1d_regression(result, "plot_predictive")
    kind = check_choice("interval", interval, INTERVALS)
    widths = check_levels(levels)
    num_functions = check_positive_int("num_functions", num_functions, allow_zero=True)
    units = _Units(scaling)
    x_t = _grid(result, x_plot)
    pred = result.predict(x_t, seed=seed)
    grid = units.x(x_t)
    y_draws = units.y(flat_draws(pred.y))
    functions = units.y(flat_draws(_mean_function(result, pred)))

    ax = new_axes(ax)
    for i, level in enumerate(widths):
        lo, hi = interval_bounds(y_draws, level, kind)
        ax.fill_between(grid, lo, hi, color="C0", alpha=0.2 + 0.15 * i, lw=0, label=f"{level:.0%} predictive {kind}")
    lo, hi = interval_bounds(functions, widths[0], kind)
    ax.fill_between(grid, lo, hi, color="C1", alpha=0.35, lw=0, label=f"{widths[0]:.0%} mean function (epistemic)")
    if num_functions:
        picks = np.unique(np.linspace(0, functions.shape[0] - 1, num_functions).round().astype(int))
        for j, s in enumerate(picks):
            ax.plot(grid, functions[s], color="C1", lw=0.8, alpha=0.8, label="function draws" if j == 0 else None)
    ax.plot(grid, units.y(pred.mean.cpu().numpy()), color="k", lw=1.5, label="posterior mean")
    ax.scatter(units.x(result.x), units.y(result.y.cpu().numpy()), s=12, color="k", alpha=0.7, zorder=3, label="data")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("Posterior predictive")
    ax.legend(loc="best", fontsize="small")
    return ax


def plot_uncertainty(
    result: PosteriorResult,
    x_plot: Any = None,
    *,
    seed: int | None = None,
    scaling: Standardization | None = None,
    xlabel: str = "x",
    ax: Axes | None = None,
) -> Axes:
    """The predictive variance of a 1-D regression, stacked as epistemic plus aleatoric parts.

    ``Var[y | x, D] = Var_s E[y | x, theta_s] + E_s Var[y | x, theta_s]`` (law of total variance):
    the first part shrinks with more data, the second is the noise the model expects.

    :param PosteriorResult result: a fitted 1-D regression.
    :param x_plot: inputs to draw at; 200 points over the data range by default.
    :param int seed: seeds the predictive draws; defaults to the fit's seed.
    :param Standardization scaling: the fit's standardisation; the axes then show the data's units.
    :param str xlabel: the x axis label (a column name).
    :param ax: the Axes to draw on; a new figure by default.
    :returns: the Axes.
    """
    result = check_result(result)
    _check_1d_regression(result, "plot_uncertainty")
    units = _Units(scaling)
    x_t = _grid(result, x_plot)
    pred = result.predict(x_t, seed=seed)
    grid = units.x(x_t)
    ax = new_axes(ax)
    ax.stackplot(
        grid,
        units.variance(pred.epistemic_var),
        units.variance(pred.aleatoric_var),
        colors=("C1", "C0"),
        alpha=0.6,
        labels=("epistemic", "aleatoric"),
    )
    ax.plot(units.x(result.x), np.zeros(result.x.shape[0]), "|", color="k", ms=10, label="training inputs")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("predictive variance")
    ax.set_title("Epistemic and aleatoric uncertainty")
    ax.legend(loc="best", fontsize="small")
    return ax


def _parse_label(label: str, result: PosteriorResult) -> tuple[str, tuple[int, ...]]:
    """``"0.weight[3, 0]"`` -> ``("0.weight", (3, 0))``, checked against the result's sites."""
    match = _LABEL.match(label)
    site = match["site"] if match else label
    if match is None or site not in result.samples:
        raise ValueError(
            f"unknown weight {label!r}; expected a site in {sorted(result.samples)}, like '0.weight[0, 0]'."
        )
    index = tuple(int(i) for i in match["index"].split(",") if i.strip()) if match["index"] else ()
    shape = tuple(result.samples[site].shape[2:])
    if len(index) != len(shape) or any(not 0 <= i < n for i, n in zip(index, shape)):
        example = _format_label(site, (0,) * len(shape))
        raise ValueError(f"{label!r} does not index {site!r}, whose shape is {shape}; use an index like {example!r}.")
    return site, index


def _format_label(site: str, index: tuple[int, ...]) -> str:
    return f"{site}[{', '.join(map(str, index))}]" if index else site


def _default_labels(result: PosteriorResult, count: int, sites: Sequence[str]) -> list[str]:
    """Global sites first (the noise scale is the easiest to read), then the first entry of each weight."""
    globals_ = [n for n in sites if n in result.model.global_priors]
    names = [*globals_, *(n for n in sites if n not in globals_)]
    return [_format_label(n, (0,) * (result.samples[n].dim() - 2)) for n in names][:count]


def plot_posterior_comparison(
    results: Mapping[str, PosteriorResult],
    *,
    weights: Sequence[str] | None = None,
    max_weights: int = 4,
    x_plot: Any = None,
    seed: int | None = None,
) -> Figure:
    """Fits of one model side by side, such as ``{"SVI": svi_result, "NUTS": nuts_result}``.

    Top row: the marginal posterior of each chosen weight under every fit (``az.plot_dist``).
    Bottom row, for a 1-D regression: each fit's :func:`plot_predictive`, sharing the y-axis.

    :param results: fits of the same model, by label.
    :param weights: entries to compare, labelled as in :func:`probgen.diagnostics.summarize`
        (``"noise_scale"``, ``"0.weight[3, 0]"``); by default the global sites, then the first
        entry of every weight site, up to ``max_weights``.
    :param int max_weights: how many default entries to show.
    :param x_plot: inputs for the predictive panels.
    :param int seed: seeds the predictive draws.
    :returns: the Figure.
    :raises ValueError: for an empty mapping, an unknown weight, or fits of different models.
    """
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty mapping of label -> result, such as {'SVI': svi, 'NUTS': nuts}.")
    fits = {str(label): check_result(r, f"results[{label!r}]") for label, r in results.items()}
    first = next(iter(fits.values()))
    max_weights = check_positive_int("max_weights", max_weights)
    sites = first.model.site_names
    ordered = [*(n for n in sites if n in first.samples), *(n for n in first.samples if n not in sites)]
    shared = [name for name in ordered if all(name in r.samples for r in fits.values())]
    labels = list(weights) if weights is not None else _default_labels(first, max_weights, shared)
    entries = [_parse_label(label, first) for label in labels]
    for name, r in fits.items():
        for label, (site, _) in zip(labels, entries):
            if site not in r.samples or r.samples[site].shape[2:] != first.samples[site].shape[2:]:
                raise ValueError(
                    f"results[{name!r}] has no {label!r} of the first fit's shape; compare fits of one model."
                )
    one_d = first.x.dim() == 2 and first.x.shape[1] == 1 and first.y.dim() == 1
    predictive = one_d and not first.model.likelihood.is_classification

    az = import_arviz()
    ncols = max(len(entries), len(fits) if predictive else 0, 1)
    fig = plt.figure(figsize=(3.2 * ncols, 6.0 if predictive else 3.0), layout="constrained")
    top: Figure | SubFigure = fig
    bottom: SubFigure | None = None
    if predictive:
        panels: Any = fig.subfigures(2, 1)  # an array of two SubFigures
        top, bottom = panels[0], panels[1]
    top_axes = np.atleast_1d(top.subplots(1, max(len(entries), 1)))
    for ax, (site, index), label in zip(top_axes, entries, labels):
        for i, (name, r) in enumerate(fits.items()):
            key: tuple[slice | int, ...] = (slice(None), *index)
            values = r.get_samples()[site][key].cpu().numpy()
            with arviz_plotting():
                az.plot_dist(values, ax=ax, color=f"C{i}", label=name)
        ax.set_xlabel(_format_label(site, index))
        ax.set_ylabel("posterior density")
    top.suptitle("Marginal posteriors")
    if bottom is not None:
        axes = np.atleast_1d(bottom.subplots(1, len(fits), sharey=True))
        for ax, (name, r) in zip(axes, fits.items()):
            plot_predictive(r, x_plot, num_functions=3, seed=seed, ax=ax)
            ax.set_title(name)
        for ax in axes[1:]:
            ax.get_legend().remove()
    return fig


def plot_predicted_vs_observed(
    result: PosteriorResult,
    x: Any,
    y: Any,
    *,
    level: float = 0.9,
    scaling: Standardization | None = None,
    label: str = "y",
    subset: str = "held-out",
    ax: Axes | None = None,
) -> Axes:
    """Observed targets against the posterior predictive mean, with central ``level`` intervals.

    Works for any number of input features (the 1-D band of :func:`plot_predictive` needs one).
    Points on the diagonal are predicted exactly; the share of error bars that cross it is the
    interval's coverage, printed in the title.

    :param PosteriorResult result: a fitted regression with scalar targets.
    :param x: inputs ``(n, features)``, in the model's units.
    :param y: targets ``(n,)``, in the model's units.
    :param float level: the interval's probability.
    :param Standardization scaling: the fit's standardisation; the axes then show the data's units.
    :param str label: the target's name, for the axes.
    :param str subset: which rows these are ("held-out", "training"), for the title.
    :param ax: the Axes to draw on; a new figure by default.
    :returns: the Axes.
    """
    result = check_result(result)
    if result.model.likelihood.is_classification:
        raise ValueError("plot_predicted_vs_observed is for regressions; use plot_calibration for a classifier.")
    units = _Units(scaling)
    x_t = result.model.check_x(x.detach().cpu().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x))
    pred = result.predict(x_t)
    lower, upper = (units.y(bound.cpu().numpy()) for bound in pred.interval(level))
    mean = units.y(pred.mean.cpu().numpy())
    observed = units.y(torch.as_tensor(y).cpu().numpy())
    inside = float(np.mean((observed >= lower) & (observed <= upper)))
    ax = new_axes(ax)
    ax.errorbar(mean, observed, xerr=np.stack([mean - lower, upper - mean]), fmt="o", ms=3, color="C0",
                ecolor="C0", alpha=0.6, elinewidth=0.8, label=f"{level:.0%} predictive interval")  # fmt: skip
    span = [float(min(observed.min(), lower.min())), float(max(observed.max(), upper.max()))]
    ax.plot(span, span, color="k", lw=1, label="predicted = observed")
    ax.set_xlabel(f"predicted {label} (posterior predictive mean)")
    ax.set_ylabel(f"observed {label}")
    ax.set_title(f"{subset.capitalize()} rows: {inside:.0%} inside the {level:.0%} interval")
    ax.legend(loc="upper left", fontsize="small")
    return ax
