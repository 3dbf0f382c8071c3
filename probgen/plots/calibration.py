"""Calibration figures: a reliability diagram for a classifier, coverage and ArviZ's LOO-PIT for a regression."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from torch import Tensor

from probgen._compat import import_arviz
from probgen._validate import check_both_or_neither, check_choice, check_positive_int
from probgen.infer._bnn_model import OBS
from probgen.infer.arviz import as_inference_data
from probgen.infer.results import PosteriorResult
from probgen.metrics import calibration_bins, coverage, expected_calibration_error
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

__all__ = ["plot_calibration", "plot_reliability", "plot_coverage", "plot_loo_pit"]


def _data(result: PosteriorResult, x: Any, y: Any) -> tuple[Tensor, Tensor]:
    """The given data set, checked against the model, or the training data when both are ``None``."""
    check_both_or_neither(x, y)
    if x is None:
        return result.x, result.y
    x_t, y_t = result.model.check_data(x, y)
    assert y_t is not None  # check_data returns y when y is given
    return x_t, y_t


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
    result = check_result(result)
    if not result.model.likelihood.is_classification:
        raise ValueError("plot_reliability is for classifiers; use plot_coverage for regression.")
    num_bins = check_positive_int("num_bins", num_bins)
    x_t, y_t = _data(result, x, y)
    probs = result.predict(x_t).mean
    labels = y_t.long()
    bins = calibration_bins(probs, labels, num_bins=num_bins)
    ece = expected_calibration_error(probs, labels, num_bins=num_bins)
    centres, accuracy, mean_conf = bins.centres.cpu().numpy(), bins.accuracy.cpu().numpy(), bins.confidence.cpu().numpy()

    ax = new_axes(ax)
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
    result = check_result(result)
    check_regression(result, "plot_coverage")
    kind = check_choice("interval", interval, INTERVALS)
    default = [i / 20 for i in range(1, 20)]  # 0.05, 0.10, ..., 0.95
    nominal = np.array(sorted(check_levels(default if levels is None else levels)))
    x_t, y_t = _data(result, x, y)
    draws = flat_draws(result.predict(x_t).y)
    empirical = []
    for level in nominal:
        lo, hi = interval_bounds(draws, float(level), kind)
        empirical.append(coverage(torch.from_numpy(lo), torch.from_numpy(hi), y_t))
    n = y_t.numel()
    half = 1.96 * np.sqrt(nominal * (1 - nominal) / n)

    ax = new_axes(ax)
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
    result = check_result(result)
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
        check_regression(source, "plot_loo_pit")
    idata = as_inference_data(source)
    missing = [g for g in ("log_likelihood", "posterior_predictive", "observed_data") if g not in idata.groups()]
    if missing:
        listed = ", ".join(missing)
        raise ValueError(f"plot_loo_pit needs the group(s) {listed}; convert with to_arviz(predictive=True).")
    az = import_arviz()
    with arviz_plotting():
        ax = az.plot_loo_pit(idata, y=OBS, ecdf=ecdf, ax=ax, **kwargs)
    ax.set_xlabel("LOO-PIT value")
    ax.set_ylabel("ECDF minus uniform" if ecdf else "density")
    ax.set_title("LOO-PIT (uniform when calibrated)")
    return ax
