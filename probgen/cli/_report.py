"""What ``probgen bnn fit`` writes: the posterior, its diagnostics and the plots of :mod:`probgen.plots`.

Files, each written only where it applies:

============================  =========================================================
``posterior.nc``              the full InferenceData (:func:`probgen.infer.results.to_arviz`)
``summary.csv``               :func:`probgen.diagnostics.summarize`
``diagnostics.txt``           :func:`probgen.diagnostics.check_convergence`, in plain words
``predictive.png``            :func:`~probgen.plots.plot_predictive` (1-D regression)
``uncertainty.png``           :func:`~probgen.plots.plot_uncertainty` (1-D regression)
``predicted_vs_observed.png`` :func:`~probgen.plots.plot_predicted_vs_observed` (regression; held-out rows if given)
``ppc.png``                   ArviZ's ``plot_ppc`` (regression)
``elbo.png``, ``losses.csv``  :func:`~probgen.plots.plot_elbo` and the loss of every step (SVI)
``calibration.png``           :func:`~probgen.plots.plot_calibration`
``loo_pit.png``               :func:`~probgen.plots.plot_loo_pit` (regression)
``trace.png``, ``rank.png``,  :func:`~probgen.plots.plot_trace`, :func:`~probgen.plots.plot_rank`,
``posterior_plot.png``        :func:`~probgen.plots.plot_posterior`
``energy.png``                :func:`~probgen.plots.plot_energy` (NUTS)
``comparison.png``            :func:`~probgen.plots.plot_posterior_comparison` (with ``reference=``)
============================  =========================================================
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # the command line only writes files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure, SubFigure  # noqa: E402

from probgen._io import save_csv, save_figure, save_netcdf, save_text  # noqa: E402
from probgen import plots  # noqa: E402
from probgen.plots._util import arviz_plotting  # noqa: E402
from probgen.diagnostics import check_convergence, identifiable_view, summarize  # noqa: E402
from probgen.datasets.uci import Standardization  # noqa: E402
from probgen.infer.results import PosteriorResult  # noqa: E402

__all__ = ["write_bnn_report"]

DPI = 100


def _figure_of(drawn: Any) -> Figure:
    """The top-level Figure of an Axes, an array of Axes, or a Figure."""
    first = drawn if isinstance(drawn, Figure) else np.ravel(drawn)[0]
    figure = first if isinstance(first, Figure) else first.figure
    while isinstance(figure, SubFigure):
        figure = figure.figure
    return figure


def _save(path: Path, draw: Callable[[], Any]) -> Path:
    """Draw one figure, write it as PNG and close it (a report draws many)."""
    figure = _figure_of(draw())
    try:
        save_figure(figure, path, dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(figure)
    return path


def _calibration(result: PosteriorResult, held_out: tuple[Any, Any] | None) -> Any:
    """Calibration on the held-out rows when there are some (labelled as such), else on the training rows."""
    ax = plots.plot_calibration(result) if held_out is None else plots.plot_calibration(result, *held_out)
    ax.set_title(f"{ax.get_title()} ({'held-out' if held_out is not None else 'training'} rows)")
    return ax


def _plot_ppc(idata: Any) -> Any:
    """ArviZ's posterior predictive check: the observed targets' density against replicated data sets."""
    from probgen._compat import import_arviz

    az = import_arviz()
    with arviz_plotting():
        draws = int(idata.posterior_predictive.sizes["chain"] * idata.posterior_predictive.sizes["draw"])
        axes = az.plot_ppc(idata, num_pp_samples=min(100, draws), random_seed=0)
    ax = np.ravel(axes)[0]
    ax.set_title("Posterior predictive check (training rows, standardised target)")
    return ax


def write_bnn_report(
    result: PosteriorResult,
    out_dir: Path,
    *,
    x_plot: Any = None,
    reference: tuple[str, PosteriorResult] | None = None,
    scaling: Standardization | None = None,
    labels: tuple[str, str] = ("x", "y"),
    held_out: tuple[Any, Any] | None = None,
) -> dict[str, Path]:
    """Write the posterior, its diagnostics and the plots of a fitted BNN to ``out_dir``.

    Convergence problems go to ``diagnostics.txt`` rather than to warnings, so that the caller
    decides how to show them.

    :param PosteriorResult result: the fit.
    :param Path out_dir: the folder; created if missing.
    :param x_plot: inputs for the predictive plots and the ``predictions`` group of ``posterior.nc``.
    :param reference: ``(label, result)`` of a second fit of the same model (SVI for a NUTS fit, or
        the other way round); adds ``comparison.png``.
    :param Standardization scaling: the standardisation of the fit; the predictive plots are then
        drawn in the data's units.
    :param labels: the names of the input and the target, for the axes.
    :param held_out: ``(x, y)`` rows the fit never saw (model units), for the predicted-vs-observed
        plot; the training rows, labelled as such, otherwise.
    :returns: the written paths by kind (the file's stem), such as ``{"posterior": .../posterior.nc}``.
    """
    if not isinstance(result, PosteriorResult):
        raise TypeError(f"result must be a probgen result, got {type(result).__name__}.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    idata = result.to_arviz(x_new=x_plot)
    paths: dict[str, Path] = {}

    paths["posterior"] = out_dir / "posterior.nc"
    save_netcdf(idata, paths["posterior"])
    paths["summary"] = out_dir / "summary.csv"
    save_csv(summarize(idata), paths["summary"])
    paths["diagnostics"] = out_dir / "diagnostics.txt"
    # the verdict and the trace and rank grids cover what hidden-unit symmetry leaves identified;
    # summary.csv keeps every weight
    identified = identifiable_view(idata)
    save_text(paths["diagnostics"], str(check_convergence(identified, warn=False)) + "\n")

    likelihood = result.model.likelihood
    one_d = result.x.dim() == 2 and result.x.shape[1] == 1 and result.y.dim() == 1
    if one_d and not likelihood.is_classification:
        xlabel, ylabel = labels
        paths["predictive"] = _save(
            out_dir / "predictive.png",
            lambda: plots.plot_predictive(result, x_plot, scaling=scaling, xlabel=xlabel, ylabel=ylabel),
        )
        paths["uncertainty"] = _save(
            out_dir / "uncertainty.png", lambda: plots.plot_uncertainty(result, x_plot, scaling=scaling, xlabel=xlabel)
        )
    if not likelihood.is_classification and result.y.dim() == 1:
        rows, subset = (held_out, "held-out") if held_out is not None else ((result.x, result.y), "training")
        paths["predicted_vs_observed"] = _save(
            out_dir / "predicted_vs_observed.png",
            lambda: plots.plot_predicted_vs_observed(result, *rows, scaling=scaling, label=labels[1], subset=subset),
        )
        paths["ppc"] = _save(out_dir / "ppc.png", lambda: _plot_ppc(idata))
    losses = getattr(result, "losses", None)
    if losses is not None and len(losses):
        paths["losses"] = out_dir / "losses.csv"
        frame = pd.DataFrame({"step": np.arange(1, len(losses) + 1), "loss": np.asarray(losses, dtype=float)})
        save_csv(frame.set_index("step"), paths["losses"])
        paths["elbo"] = _save(out_dir / "elbo.png", lambda: plots.plot_elbo(result))
    paths["calibration"] = _save(out_dir / "calibration.png", lambda: _calibration(result, held_out))
    if not likelihood.is_classification:
        paths["loo_pit"] = _save(out_dir / "loo_pit.png", lambda: plots.plot_loo_pit(idata))
    paths["trace"] = _save(out_dir / "trace.png", lambda: plots.plot_trace(identified))
    paths["rank"] = _save(out_dir / "rank.png", lambda: plots.plot_rank(identified))
    paths["posterior_plot"] = _save(out_dir / "posterior_plot.png", lambda: plots.plot_posterior(idata))
    if "sample_stats" in idata.groups() and "energy" in idata.sample_stats:
        paths["energy"] = _save(out_dir / "energy.png", lambda: plots.plot_energy(idata))
    if reference is not None:
        label, other = reference
        this = str(idata.attrs.get("inference_method", "this fit")).upper()
        fits = {this: result, str(label): other}
        paths["comparison"] = _save(
            out_dir / "comparison.png", lambda: plots.plot_posterior_comparison(fits, x_plot=x_plot)
        )
    return paths
