"""Figures of posteriors and predictions, built on ArviZ and matplotlib.

Predictions:

* :func:`plot_predictive`: the predictive-uncertainty band of a 1-D regression: data, posterior
  mean, 50% and 90% predictive intervals (HDI or central), the interval of the mean function
  (the epistemic part; the rest of the band is aleatoric noise) and a few function draws.
* :func:`plot_uncertainty`: the predictive variance split into its epistemic and aleatoric parts.
* :func:`plot_calibration`: a reliability diagram (:func:`plot_reliability`) for classification,
  a coverage plot (:func:`plot_coverage`) for regression; :func:`plot_loo_pit` is ArviZ's LOO-PIT.
* :func:`plot_posterior_comparison`: several fits of one model (SVI against NUTS) side by side:
  marginal posteriors of chosen weights and their predictive bands.

Through ArviZ, for a result, an InferenceData or a saved file: :func:`plot_trace`,
:func:`plot_rank`, :func:`plot_posterior` and :func:`plot_energy`. A BNN has many weights, so by
default these show the first two units along every dimension (``coords``); pass ``coords={}`` to
show every weight.

Every function returns what it drew on (an ``Axes``, an array of them, or a ``Figure`` for a
multi-panel layout), labels its axes, and takes ``ax=`` where a single panel is natural.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, get_args

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import MatplotlibDeprecationWarning
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from torch import Tensor

from probgen._compat import import_arviz
from probgen._validate import check_both_or_neither, check_choice, check_positive_int, check_probability
from probgen.infer.predictive import Prediction
from probgen.infer._bnn_model import OBS
from probgen.infer.arviz import as_inference_data
from probgen.infer.results import PosteriorResult
from probgen.metrics import calibration_bins, coverage, expected_calibration_error

__all__ = [
    "Interval",
    "INTERVALS",
    "plot_predictive",
    "plot_uncertainty",
    "plot_calibration",
    "plot_reliability",
    "plot_coverage",
    "plot_loo_pit",
    "plot_posterior_comparison",
    "plot_trace",
    "plot_rank",
    "plot_posterior",
    "plot_energy",
]

Interval = Literal["hdi", "central"]
#: Kinds of predictive interval: highest-density (ArviZ's ``az.hdi``) or central (quantiles).
INTERVALS: tuple[Interval, ...] = get_args(Interval)

_LABEL = re.compile(r"^(?P<site>.+?)(?:\[(?P<index>[\d,\s]*)\])?$")


@contextlib.contextmanager
def _arviz_plotting() -> Iterator[None]:
    """Run an ArviZ 0.23 plot without matplotlib 3.11's notice about ArviZ's keyword de-aliasing.

    ArviZ 0.23 passes a dict to ``matplotlib.cbook.normalize_kwargs``, which matplotlib deprecates
    from 3.11 (removal in 3.13); users cannot act on it, so it is hidden here and nowhere else.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Passing a dict or None as alias_mapping", category=MatplotlibDeprecationWarning
        )
        yield


# -- helpers ---------------------------------------------------------------------------------


def _check_result(result: Any, name: str = "result") -> PosteriorResult:
    if not isinstance(result, PosteriorResult):
        raise TypeError(f"{name} must be a probgen result (from fit_nuts or fit_svi), got {type(result).__name__}.")
    return result


def _check_regression(result: PosteriorResult, caller: str) -> None:
    if result.model.likelihood.is_classification:
        raise ValueError(f"{caller} is for regression; use plot_reliability for a classifier.")


def _check_1d_regression(result: PosteriorResult, caller: str) -> None:
    _check_regression(result, caller)
    if result.x.dim() != 2 or result.x.shape[1] != 1 or result.y.dim() != 1:
        raise ValueError(
            f"{caller} draws 1-D regression: one input feature and one target column; got x of shape "
            f"{tuple(result.x.shape)} and y of shape {tuple(result.y.shape)}. Use plot_coverage instead."
        )


def _data(result: PosteriorResult, x: Any, y: Any) -> tuple[Tensor, Tensor]:
    """The given data set, checked against the model, or the training data when both are ``None``."""
    check_both_or_neither(x, y)
    if x is None:
        return result.x, result.y
    x_t, y_t = result.model.check_data(x, y)
    assert y_t is not None  # check_data returns y when y is given
    return x_t, y_t


def _grid(result: PosteriorResult, x_plot: Any) -> Tensor:
    """Sorted plotting inputs ``(m, 1)``: ``x_plot``, or 200 points over the data range plus 10% each side."""
    if x_plot is None:
        lo, hi = float(result.x.min()), float(result.x.max())
        pad = 0.1 * (hi - lo) if hi > lo else 1.0
        return torch.linspace(lo - pad, hi + pad, 200, dtype=result.x.dtype).unsqueeze(-1)
    if isinstance(x_plot, Tensor):
        x_plot = x_plot.detach().cpu().numpy()
    values = np.asarray(x_plot)
    x_t = result.model.check_x(values.reshape(-1, 1) if values.ndim == 1 else values)
    return x_t[x_t[:, 0].argsort()]


def _flat(draws: Tensor) -> np.ndarray:
    """Merge the ``(chain, draw)`` dims: ``(S, ...)``."""
    return draws.reshape((-1,) + tuple(draws.shape[2:])).detach().cpu().numpy()


def _interval(draws: np.ndarray, level: float, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """A ``level`` interval per point from draws ``(S, ...)``: HDI (``az.hdi``) or central."""
    if kind == "hdi":
        az = import_arviz()
        bounds = az.hdi(draws[None], hdi_prob=level)  # ArviZ reads (chain, draw, ...)
        return bounds[..., 0], bounds[..., 1]
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return lo, hi


def _mean_function(result: PosteriorResult, pred: Prediction) -> Tensor:
    """``E[y | x, theta_s]`` per draw, ``(chain, draw, m)``: the function that the weights define."""
    model = result.model
    globals_ = {name: result.samples[name] for name in model.global_priors}
    with torch.no_grad():
        mean, _ = model.likelihood.mean_variance(pred.f, globals_)
    return mean


def _levels(levels: Sequence[float]) -> list[float]:
    checked = sorted({check_probability("levels", level) for level in levels}, reverse=True)
    if not checked:
        raise ValueError("levels must hold at least one probability, such as (0.5, 0.9).")
    return checked


def _new_axes(ax: Axes | None) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    return ax


# -- predictions -----------------------------------------------------------------------------


def plot_predictive(
    result: PosteriorResult,
    x_plot: Any = None,
    *,
    levels: Sequence[float] = (0.5, 0.9),
    interval: Interval = "hdi",
    num_functions: int = 5,
    seed: int | None = None,
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
    :param ax: the Axes to draw on; a new figure by default.
    :returns: the Axes.
    :raises ValueError: for a classifier or data that are not 1-D.
    """
    result = _check_result(result)
    _check_1d_regression(result, "plot_predictive")
    kind = check_choice("interval", interval, INTERVALS)
    widths = _levels(levels)
    num_functions = check_positive_int("num_functions", num_functions, allow_zero=True)
    x_t = _grid(result, x_plot)
    pred = result.predict(x_t, seed=seed)
    grid = x_t[:, 0].numpy()
    y_draws = _flat(pred.y)
    functions = _flat(_mean_function(result, pred))

    ax = _new_axes(ax)
    for i, level in enumerate(widths):
        lo, hi = _interval(y_draws, level, kind)
        ax.fill_between(grid, lo, hi, color="C0", alpha=0.2 + 0.15 * i, lw=0, label=f"{level:.0%} predictive {kind}")
    lo, hi = _interval(functions, widths[0], kind)
    ax.fill_between(grid, lo, hi, color="C1", alpha=0.35, lw=0, label=f"{widths[0]:.0%} mean function (epistemic)")
    if num_functions:
        picks = np.unique(np.linspace(0, functions.shape[0] - 1, num_functions).round().astype(int))
        for j, s in enumerate(picks):
            ax.plot(grid, functions[s], color="C1", lw=0.8, alpha=0.8, label="function draws" if j == 0 else None)
    ax.plot(grid, pred.mean.numpy(), color="k", lw=1.5, label="posterior mean")
    ax.scatter(result.x[:, 0].numpy(), result.y.numpy(), s=12, color="k", alpha=0.7, zorder=3, label="data")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title("Posterior predictive")
    ax.legend(loc="best", fontsize="small")
    return ax


def plot_uncertainty(
    result: PosteriorResult,
    x_plot: Any = None,
    *,
    seed: int | None = None,
    ax: Axes | None = None,
) -> Axes:
    """The predictive variance of a 1-D regression, stacked as epistemic plus aleatoric parts.

    ``Var[y | x, D] = Var_s E[y | x, theta_s] + E_s Var[y | x, theta_s]`` (law of total variance):
    the first part shrinks with more data, the second is the noise the model expects.

    :param PosteriorResult result: a fitted 1-D regression.
    :param x_plot: inputs to draw at; 200 points over the data range by default.
    :param int seed: seeds the predictive draws; defaults to the fit's seed.
    :param ax: the Axes to draw on; a new figure by default.
    :returns: the Axes.
    """
    result = _check_result(result)
    _check_1d_regression(result, "plot_uncertainty")
    x_t = _grid(result, x_plot)
    pred = result.predict(x_t, seed=seed)
    grid = x_t[:, 0].numpy()
    ax = _new_axes(ax)
    ax.stackplot(
        grid,
        pred.epistemic_var.numpy(),
        pred.aleatoric_var.numpy(),
        colors=("C1", "C0"),
        alpha=0.6,
        labels=("epistemic", "aleatoric"),
    )
    ax.plot(result.x[:, 0].numpy(), np.zeros(result.x.shape[0]), "|", color="k", ms=10, label="training inputs")
    ax.set_xlabel("x")
    ax.set_ylabel("predictive variance")
    ax.set_title("Epistemic and aleatoric uncertainty")
    ax.legend(loc="best", fontsize="small")
    return ax


def plot_reliability(
    result: PosteriorResult,
    x: Any = None,
    y: Any = None,
    *,
    num_bins: int = 10,
    ax: Axes | None = None,
) -> Axes:
    """Reliability diagram of a classifier: accuracy against top-class confidence, per bin.

    Bins are those of :func:`probgen.metrics.expected_calibration_error` (equal width on
    [0, 1]); the title gives the ECE. A calibrated model follows the diagonal.

    :param PosteriorResult result: a fitted classifier.
    :param x: inputs; the training data when ``x`` and ``y`` are both ``None``.
    :param y: labels.
    :param int num_bins: confidence bins.
    :param ax: the Axes to draw on; a new figure by default.
    :returns: the Axes.
    """
    result = _check_result(result)
    if not result.model.likelihood.is_classification:
        raise ValueError("plot_reliability is for classifiers; use plot_coverage for regression.")
    num_bins = check_positive_int("num_bins", num_bins)
    x_t, y_t = _data(result, x, y)
    probs = result.predict(x_t).mean
    labels = y_t.long()
    bins = calibration_bins(probs, labels, num_bins=num_bins)
    ece = expected_calibration_error(probs, labels, num_bins=num_bins)
    centres, accuracy, mean_conf = bins.centres.numpy(), bins.accuracy.numpy(), bins.confidence.numpy()

    ax = _new_axes(ax)
    ax.bar(centres, accuracy, width=bins.width, color="C0", alpha=0.6, edgecolor="C0", label="accuracy per bin")
    ax.plot(mean_conf, accuracy, "o", color="C1", label="mean confidence per bin")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram (ECE = {ece:.3f})")
    ax.legend(loc="upper left", fontsize="small")
    return ax


def plot_coverage(
    result: PosteriorResult,
    x: Any = None,
    y: Any = None,
    *,
    levels: Sequence[float] | None = None,
    interval: Interval = "central",
    ax: Axes | None = None,
) -> Axes:
    """Coverage plot of a regression: the share of targets inside each predictive interval.

    A calibrated model follows the diagonal, inside the band ``p +- 1.96 sqrt(p (1 - p) / n)``
    (pointwise 95% binomial error of a share of ``n`` independent points).

    :param PosteriorResult result: a fitted regression.
    :param x: inputs; the training data (in-sample coverage) when ``x`` and ``y`` are both ``None``.
    :param y: targets.
    :param levels: nominal interval probabilities; 0.05, 0.10, ..., 0.95 by default.
    :param str interval: ``"central"`` or ``"hdi"``.
    :param ax: the Axes to draw on; a new figure by default.
    :returns: the Axes.
    """
    result = _check_result(result)
    _check_regression(result, "plot_coverage")
    kind = check_choice("interval", interval, INTERVALS)
    default = [i / 20 for i in range(1, 20)]  # 0.05, 0.10, ..., 0.95
    nominal = np.array(sorted(_levels(default if levels is None else levels)))
    x_t, y_t = _data(result, x, y)
    draws = _flat(result.predict(x_t).y)
    empirical = []
    for level in nominal:
        lo, hi = _interval(draws, float(level), kind)
        empirical.append(coverage(torch.from_numpy(lo), torch.from_numpy(hi), y_t))
    n = y_t.numel()
    half = 1.96 * np.sqrt(nominal * (1 - nominal) / n)

    ax = _new_axes(ax)
    ax.fill_between(nominal, nominal - half, nominal + half, color="grey", alpha=0.2, lw=0, label=f"95% band, n = {n}")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="calibrated")
    ax.plot(nominal, empirical, "o-", color="C0", label="empirical")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"nominal coverage ({kind} predictive interval)")
    ax.set_ylabel("empirical coverage")
    ax.set_title("Coverage")
    ax.legend(loc="upper left", fontsize="small")
    return ax


def plot_calibration(
    result: PosteriorResult,
    x: Any = None,
    y: Any = None,
    *,
    ax: Axes | None = None,
    **kwargs: Any,
) -> Axes:
    """Calibration at a glance: :func:`plot_reliability` for a classifier, :func:`plot_coverage` otherwise.

    :param kwargs: passed on to the chosen function.
    :returns: the Axes.
    """
    result = _check_result(result)
    if result.model.likelihood.is_classification:
        return plot_reliability(result, x, y, ax=ax, **kwargs)
    return plot_coverage(result, x, y, ax=ax, **kwargs)


def plot_loo_pit(source: Any, *, ecdf: bool = False, ax: Axes | None = None, **kwargs: Any) -> Axes:
    """ArviZ's LOO-PIT of a regression (``az.plot_loo_pit``): uniform when the model is calibrated.

    The probability integral transform of each training target under its leave-one-out
    predictive, estimated by Pareto-smoothed importance sampling from the ``log_likelihood``
    and ``posterior_predictive`` groups.

    :param source: a result, an ``arviz.InferenceData`` or the path of a saved file.
    :param bool ecdf: plot the ECDF difference from uniform instead of densities.
    :param ax: the Axes to draw on; a new figure by default.
    :param kwargs: passed to ``az.plot_loo_pit``.
    :returns: the Axes.
    :raises ValueError: for a classifier, or an InferenceData without the groups it needs.
    """
    if isinstance(source, PosteriorResult):
        _check_regression(source, "plot_loo_pit")
    idata = as_inference_data(source)
    missing = [g for g in ("log_likelihood", "posterior_predictive", "observed_data") if g not in idata.groups()]
    if missing:
        listed = ", ".join(missing)
        raise ValueError(f"plot_loo_pit needs the group(s) {listed}; convert with to_arviz(predictive=True).")
    az = import_arviz()
    with _arviz_plotting():
        ax = az.plot_loo_pit(idata, y=OBS, ecdf=ecdf, ax=ax, **kwargs)
    ax.set_xlabel("LOO-PIT value")
    ax.set_ylabel("ECDF minus uniform" if ecdf else "density")
    ax.set_title("LOO-PIT (uniform when calibrated)")
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
    fits = {str(label): _check_result(r, f"results[{label!r}]") for label, r in results.items()}
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
            values = r.get_samples()[site][key].numpy()
            with _arviz_plotting():
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


# -- ArviZ diagnostic plots ------------------------------------------------------------------


def _selection(
    idata: Any, var_names: Sequence[str] | None, coords: Mapping[str, Any] | None
) -> tuple[list[str] | None, dict[str, Any]]:
    """``coords`` as given, or the first two units along every dim of the chosen sites."""
    names = None if var_names is None else list(var_names)
    if coords is not None:
        return names, dict(coords)
    posterior = idata.posterior
    chosen = names if names is not None else [str(n) for n in posterior.data_vars]
    default: dict[str, Any] = {}
    for name in chosen:
        if name in posterior:
            for dim in posterior[name].dims[2:]:
                default[str(dim)] = list(range(min(2, posterior.sizes[dim])))
    return names, default


def _label_if_empty(ax: Axes, xlabel: str, ylabel: str | None = None) -> None:
    if not ax.get_xlabel():
        ax.set_xlabel(xlabel)
    if ylabel is not None and not ax.get_ylabel():
        ax.set_ylabel(ylabel)


def _arviz_site_plot(
    name: str,
    source: Any,
    var_names: Sequence[str] | None,
    coords: Mapping[str, Any] | None,
    kwargs: dict[str, Any],
) -> Any:
    """Call ``az.<name>`` on the posterior of ``source`` with probgen's default site selection."""
    az = import_arviz()
    idata = as_inference_data(source, predictive=False)
    names, selected = _selection(idata, var_names, coords)
    with _arviz_plotting():
        return getattr(az, name)(idata, var_names=names, coords=selected, **kwargs)


def plot_trace(
    source: Any,
    *,
    var_names: Sequence[str] | None = None,
    coords: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """ArviZ's trace plot (``az.plot_trace``): per site, the marginal density and the draws of every chain.

    :param source: a result, an ``arviz.InferenceData`` or the path of a saved file.
    :param var_names: sites to show; all by default.
    :param coords: ArviZ coordinates to select; the first two units along every dim by default,
        ``{}`` for everything.
    :param kwargs: passed to ``az.plot_trace``.
    :returns: the array of Axes, ``(sites, 2)``.
    """
    axes = _arviz_site_plot("plot_trace", source, var_names, coords, kwargs)
    rows = np.atleast_2d(axes)
    for row in rows:
        row[0].set_ylabel(row[0].get_ylabel() or "density")
        row[-1].set_ylabel(row[-1].get_ylabel() or "value")
    _label_if_empty(rows[-1][0], "value")  # the bottom row only: ArviZ titles sit right below each row
    _label_if_empty(rows[-1][-1], "draw")
    return axes


def plot_rank(
    source: Any,
    *,
    var_names: Sequence[str] | None = None,
    coords: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """ArviZ's rank plot (``az.plot_rank``): ranks of each chain's draws, uniform when chains mix.

    Arguments as for :func:`plot_trace`; ``kwargs`` go to ``az.plot_rank``.

    :returns: the array of Axes, one per scalar parameter.
    """
    axes = _arviz_site_plot("plot_rank", source, var_names, coords, kwargs)
    for ax in np.ravel(axes):
        _label_if_empty(ax, "rank (all chains)", "chain")
    return np.asarray(axes)


def plot_posterior(
    source: Any,
    *,
    var_names: Sequence[str] | None = None,
    coords: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """ArviZ's posterior plot (``az.plot_posterior``): each marginal with its mean and HDI.

    Arguments as for :func:`plot_trace`; ``kwargs`` go to ``az.plot_posterior``.

    :returns: the array of Axes, one per scalar parameter.
    """
    axes = _arviz_site_plot("plot_posterior", source, var_names, coords, kwargs)
    for ax in np.ravel(axes):
        _label_if_empty(ax, "value")
    return np.asarray(axes)


def plot_energy(source: Any, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
    """ArviZ's energy plot (``az.plot_energy``): marginal energy against energy transitions, with BFMI.

    When the transition distribution is much narrower than the marginal one, NUTS explores the
    posterior's tails slowly (low BFMI).

    :param source: a NUTS result, an ``arviz.InferenceData`` or the path of a saved file.
    :param ax: the Axes to draw on; a new figure by default.
    :param kwargs: passed to ``az.plot_energy``.
    :returns: the Axes.
    :raises ValueError: without the sampler's energy (SVI results have none).
    """
    az = import_arviz()
    idata = as_inference_data(source, predictive=False)
    if "sample_stats" not in idata.groups() or "energy" not in idata.sample_stats:
        raise ValueError("plot_energy needs the sampler's energy (sample_stats.energy); only NUTS results have it.")
    with _arviz_plotting():
        ax = az.plot_energy(idata, ax=ax, **kwargs)
    ax.set_xlabel("energy minus its mean")
    ax.set_ylabel("density")
    ax.set_title("Energy")
    return ax
