"""ArviZ's diagnostic figures of a posterior, with probgen's default selection of sites.

:func:`plot_trace`, :func:`plot_rank`, :func:`plot_posterior` and :func:`plot_energy` take a result, an
InferenceData or a saved file. A BNN has many weights, so by default the first three show the first two
units along every dimension (``coords``); pass ``coords={}`` to show every weight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes

from probgen._compat import import_arviz
from probgen.infer.arviz import as_inference_data
from probgen.plots._util import arviz_plotting, new_axes

__all__ = ["plot_trace", "plot_rank", "plot_posterior", "plot_energy"]


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
    with arviz_plotting():
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
    _make_room(rows[0][0].figure, kwargs)
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
    _make_room(np.ravel(axes)[0].figure, kwargs)
    return np.asarray(axes)


def _make_room(figure: Any, kwargs: Mapping[str, Any]) -> None:
    """Space a grid so no title sits on the tick labels of the row above (ArviZ packs its rows tight).

    ``tight_layout`` measures every title, label and tick label. A figure the caller drew into
    (``ax=`` or ``axes=``) or gave a layout engine (through ``backend_kwargs``) is left as it is.
    """
    if figure.get_layout_engine() is None and kwargs.get("ax") is None and kwargs.get("axes") is None:
        figure.tight_layout()


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
    _make_room(np.ravel(axes)[0].figure, kwargs)
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
    with arviz_plotting():
        ax = az.plot_energy(idata, ax=ax, **kwargs)
    ax.set_xlabel("energy minus its mean")
    ax.set_ylabel("density")
    ax.set_title("Energy")
    return ax


def plot_elbo(result: Any, *, smoothing: int = 50, ax: Axes | None = None) -> Axes:
    """The ELBO of every SVI step (light) and its running mean over ``smoothing`` steps (dark).

    :param result: an SVI result (anything with ``losses``, the negative ELBO per step, in nats).
    :param int smoothing: the window of the running mean.
    :param ax: the Axes to draw on; a new figure by default.
    :returns: the Axes.
    :raises TypeError: for a result without losses (NUTS).
    """
    losses = getattr(result, "losses", None)
    if losses is None or len(losses) == 0:
        raise TypeError(f"plot_elbo needs an SVI result with losses, got {type(result).__name__}.")
    elbo = -np.asarray(losses, dtype=float)
    window = max(1, min(int(smoothing), elbo.size))
    running = np.convolve(elbo, np.ones(window) / window, mode="valid")
    ax = new_axes(ax)
    steps = np.arange(1, elbo.size + 1)
    ax.plot(steps, elbo, color="C0", alpha=0.3, lw=0.6, label="ELBO per step")
    ax.plot(steps[window - 1 :], running, color="C0", lw=1.5, label=f"running mean over {window} steps")
    # the first steps can be far below the rest: scale the axis to the settled part
    settled = elbo[elbo.size // 10 :]
    low, high = np.percentile(settled, 1), settled.max()
    pad = 0.05 * (high - low) if high > low else 1.0
    ax.set_ylim(low - pad, high + pad)
    ax.set_xlabel("step")
    ax.set_ylabel("ELBO (nats)")
    ax.set_title("SVI: evidence lower bound")
    ax.legend(loc="lower right", fontsize="small")
    return ax
