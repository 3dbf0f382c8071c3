"""Figures of posteriors, predictions and diffusion models, built on ArviZ and matplotlib.

* ``predictive.py``: :func:`plot_predictive` (the predictive-uncertainty band of a 1-D regression),
  :func:`plot_uncertainty` (its epistemic and aleatoric parts) and :func:`plot_posterior_comparison`
  (several fits of one model, such as SVI against NUTS, side by side);
* ``calibration.py``: :func:`plot_calibration`, a reliability diagram (:func:`plot_reliability`) for a
  classifier and a coverage plot (:func:`plot_coverage`) for a regression; :func:`plot_loo_pit` is
  ArviZ's LOO-PIT;
* ``diagnostics.py``: ArviZ's :func:`plot_trace`, :func:`plot_rank`, :func:`plot_posterior` and
  :func:`plot_energy`, for a result, an InferenceData or a saved file, with a readable default
  selection of a BNN's weights;
* ``diffusion.py``: samples of a diffusion model (:func:`plot_samples` for 2-D points,
  :func:`plot_image_grid` for images), its chain (:func:`plot_trajectory`) and the terms of its bound
  (:func:`plot_bound_terms`), and 1-D regressions by a chain ``p(y | x)`` or a BNN side by side
  (:func:`plot_regression_uncertainty`).

Every function returns what it drew on (an ``Axes``, an array of them, or a ``Figure`` for a
multi-panel layout), labels its axes, and takes ``ax=`` where a single panel is natural.
"""

from probgen.plots._util import INTERVALS, Interval
from probgen.plots.calibration import plot_calibration, plot_coverage, plot_loo_pit, plot_reliability
from probgen.plots.diagnostics import plot_elbo, plot_energy, plot_posterior, plot_rank, plot_trace
from probgen.plots.diffusion import (
    BOUND_UNITS,
    BoundUnit,
    plot_bound_terms,
    plot_image_grid,
    plot_regression_uncertainty,
    plot_samples,
    plot_trajectory,
)
from probgen.plots.predictive import (
    plot_posterior_comparison,
    plot_predicted_vs_observed,
    plot_predictive,
    plot_uncertainty,
)

__all__ = [
    "Interval",
    "INTERVALS",
    "plot_predictive",
    "plot_uncertainty",
    "plot_predicted_vs_observed",
    "plot_elbo",
    "plot_calibration",
    "plot_reliability",
    "plot_coverage",
    "plot_loo_pit",
    "plot_posterior_comparison",
    "plot_trace",
    "plot_rank",
    "plot_posterior",
    "plot_energy",
    "BoundUnit",
    "BOUND_UNITS",
    "plot_samples",
    "plot_image_grid",
    "plot_trajectory",
    "plot_bound_terms",
    "plot_regression_uncertainty",
]
