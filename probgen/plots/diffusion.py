"""Figures of diffusion models: samples (2-D points or an image grid), the chain's trajectory, the bound's terms.

* :func:`plot_samples`: draws of 2-D data as a scatter, over held-out data if given;
* :func:`plot_image_grid`: draws of images ``(C, H, W)`` as a grid;
* :func:`plot_trajectory`: the states ``x_t`` at chosen steps of a sampler run with ``return_chain=True``;
* :func:`plot_bound_terms`: the per-step terms ``L_t`` of :func:`~probgen.infer.diffusion.evaluate_bound`
  with their error bars, in nats or bits per dimension;
* :func:`plot_regression_uncertainty`: 1-D regressions side by side (a conditional chain ``p(y | x)``
  read out by :func:`~probgen.infer.diffusion.predictive_uncertainty`, a BNN's
  :class:`~probgen.infer.predictive.Prediction`), each as its predictive mean with epistemic and total
  bands over the data, above its variance split into epistemic and aleatoric parts.

Samples come as :class:`~probgen.infer.results.DiffusionSamples` (their ``(chain, draw)`` dims are
merged) or as a tensor of rows ``(n, *event_shape)``, for instance draws already mapped back to data units.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, get_args

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from probgen._validate import as_tensor, check_choice, check_positive_float, check_positive_int
from probgen.infer.predictive import Prediction
from probgen.infer.results import BoundResult, DiffusionSamples, PredictiveUncertainty
from probgen.plots._util import new_axes

__all__ = [
    "BOUND_UNITS",
    "BoundUnit",
    "plot_bound_terms",
    "plot_image_grid",
    "plot_regression_uncertainty",
    "plot_samples",
    "plot_trajectory",
]

BoundUnit = Literal["nats", "bits"]
#: Units of :func:`plot_bound_terms`: nats per data point, or bits per dimension.
BOUND_UNITS: tuple[BoundUnit, ...] = get_args(BoundUnit)


def _rows(source: Any, name: str = "samples", key: str = "x_0") -> Tensor:
    """Rows ``(n, ...)`` of ``source``: every draw of a DiffusionSamples (a conditional sampler's completions
    of all its observations), or a tensor of rows as given."""
    if isinstance(source, DiffusionSamples):
        values = source.get_samples()[key]  # (chain * draw, [step,] [N,] *event)
        if source.x_observed is not None:  # one row per completion of each observation
            values = (values.movedim(2, 1) if key == "trajectory" else values).flatten(0, 1)
        return values.detach().double()
    return as_tensor(name, source, dtype=torch.float64).detach()


def plot_samples(
    samples: DiffusionSamples | Tensor,
    *,
    reference: Tensor | None = None,
    dims: tuple[int, int] = (0, 1),
    title: str | None = None,
    ax: Axes | None = None,
) -> Axes:
    """A scatter of two coordinates of vector draws, over the points of ``reference`` (held-out data) if given.

    :param samples: :class:`~probgen.infer.results.DiffusionSamples` of vector data, or rows ``(n, D)``.
    :param reference: rows ``(m, D)`` drawn behind the samples, in grey.
    :param dims: the two coordinates to draw (the first two by default).
    :param str title: the Axes' title; ``"samples"`` by default.
    :param ax: the Axes to draw on; a new figure by default.
    :returns: the Axes.
    :raises ValueError: for draws that are not vectors of at least two coordinates.

    Example::

        >>> ax = plot_samples(torch.randn(50, 2), reference=torch.randn(80, 2))
        >>> [t.get_text() for t in ax.get_legend().get_texts()]
        ['held-out data', 'samples']
    """
    points = _rows(samples)
    if points.dim() != 2 or points.shape[1] < 2:
        raise ValueError(
            f"plot_samples draws vectors of at least 2 coordinates, got draws of shape {tuple(points.shape[1:])}; "
            "use plot_image_grid for images."
        )
    i, j = (check_choice("dims entry", d, range(points.shape[1])) for d in dims)
    ax = new_axes(ax)
    if reference is not None:
        ref = _rows(reference, "reference")
        ax.scatter(ref[:, i], ref[:, j], s=2, alpha=0.3, color="grey", label="held-out data")
    ax.scatter(points[:, i], points[:, j], s=2, alpha=0.6, color="C0", label="samples")
    ax.legend(loc="upper right", markerscale=4)
    ax.set_aspect("equal")
    ax.set_xlabel(f"x[{i}]")
    ax.set_ylabel(f"x[{j}]")
    ax.set_title("samples" if title is None else title)
    return ax


def plot_image_grid(
    images: DiffusionSamples | Tensor,
    *,
    cols: int | None = None,
    max_images: int = 64,
    title: str | None = None,
    vmin: float = -1.0,
    vmax: float = 1.0,
) -> Figure:
    """Draws of single-channel images ``(1, H, W)`` as a grid, one image per panel (in grey, dark is high).

    :param images: :class:`~probgen.infer.results.DiffusionSamples` of images, or rows ``(n, 1, H, W)``.
    :param int cols: panels per row; about the square root of the number of images by default.
    :param int max_images: show at most this many (the first ones).
    :param str title: the figure's title.
    :param float vmin: the value drawn white.
    :param float vmax: the value drawn black.
    :returns: the Figure.
    :raises ValueError: for draws that are not single-channel images.

    Example::

        >>> fig = plot_image_grid(torch.rand(6, 1, 8, 8) * 2 - 1, cols=3)
        >>> len([ax for ax in fig.get_axes() if ax.get_images()])
        6
    """
    values = _rows(images, "images")
    if values.dim() != 4 or values.shape[1] != 1:
        raise ValueError(f"plot_image_grid draws images (1, height, width), got draws of shape {tuple(values.shape[1:])}.")
    values = values[: check_positive_int("max_images", max_images)]
    n = values.shape[0]
    cols = int(math.ceil(math.sqrt(n))) if cols is None else check_positive_int("cols", cols)
    rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image in zip(axes.ravel(), values, strict=False):
        ax.imshow(image[0].cpu().numpy(), cmap="gray_r", vmin=vmin, vmax=vmax)
    if title is not None:
        fig.suptitle(title)
    return fig


def plot_trajectory(draws: DiffusionSamples, *, steps: Sequence[int] | None = None) -> Figure:
    """The states ``x_t`` of 2-D draws at chosen steps, one panel per step, from ``x_T`` to ``x_0``.

    :param DiffusionSamples draws: from a sampler called with ``return_chain=True``.
    :param steps: the steps to show, among those the sampler visited; six evenly spaced ones by default.
    :returns: the Figure.
    :raises ValueError: without a trajectory, for a step that was not visited, or for draws that are
        not 2-D points.
    """
    if not isinstance(draws, DiffusionSamples) or draws.trajectory is None:
        raise ValueError("plot_trajectory needs DiffusionSamples drawn with return_chain=True.")
    visited = draws.steps.tolist()
    if steps is None:
        picks = np.unique(np.linspace(0, len(visited) - 1, min(6, len(visited))).round().astype(int))
        steps = [visited[i] for i in picks]
    unknown = [t for t in steps if t not in visited]
    if unknown:
        raise ValueError(f"steps {unknown} were not visited; the sampler visited {visited}.")
    trajectory = _rows(draws, key="trajectory")  # (rows, step, *event)
    if trajectory.dim() != 3 or trajectory.shape[-1] != 2:
        raise ValueError(f"plot_trajectory draws 2-D points, got states of shape {tuple(trajectory.shape[2:])}.")
    fig, axes = plt.subplots(1, len(steps), figsize=(2.2 * len(steps), 2.4), sharex=True, sharey=True, squeeze=False)
    for ax, t in zip(axes[0], steps, strict=True):
        x = trajectory[:, visited.index(t)]
        ax.scatter(x[:, 0], x[:, 1], s=1)
        ax.set_title(f"$x_{{{t}}}$")
        ax.set_xlabel("x[0]")
        ax.set_aspect("equal")
    axes[0][0].set_ylabel("x[1]")
    return fig


def plot_bound_terms(
    bound: BoundResult, *, unit: BoundUnit = "nats", z: float = 4.5, ax: Axes | None = None
) -> Axes:
    """The terms ``L_1, ..., L_{T-1}`` of the bound against ``t``, with ``z`` standard errors, on a log scale.

    The decoder term ``L_0`` and the prior term ``L_T`` are given in the title.

    :param BoundResult bound: from :func:`~probgen.infer.diffusion.evaluate_bound`.
    :param str unit: ``"nats"`` (per data point) or ``"bits"`` (per dimension).
    :param float z: the error bars' half-width in standard errors (4.5, the tests' budget, by default).
    :param ax: the Axes to draw on; a new figure by default.
    :returns: the Axes.
    """
    if not isinstance(bound, BoundResult):
        raise TypeError(f"bound must be a BoundResult from evaluate_bound, got {type(bound).__name__}.")
    unit = check_choice("unit", unit, BOUND_UNITS)
    z = check_positive_float("z", z, allow_zero=True)
    scale = 1.0 if unit == "nats" else 1.0 / (bound.num_dims * math.log(2.0))
    terms, se = bound.terms.cpu().numpy() * scale, bound.terms_se.cpu().numpy() * scale
    steps = np.arange(1, terms.shape[0] - 1)
    ax = new_axes(ax)
    ax.errorbar(steps, terms[1:-1], yerr=z * se[1:-1], fmt=".", ms=3)
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel(f"$L_t$ ({'nats' if unit == 'nats' else 'bits/dim'})")
    ax.set_title(f"terms of the bound (bars: {z:g} se); $L_0$ = {terms[0]:.3g}, $L_T$ = {terms[-1]:.2g}")
    return ax


def _regression_parts(name: str, fit: Any, num_x: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mean, epistemic and aleatoric variance ``(n,)`` of one 1-D regression read-out."""
    if not isinstance(fit, PredictiveUncertainty | Prediction):
        raise TypeError(
            f"{name!r} must be a PredictiveUncertainty (predictive_uncertainty of a chain p(y | x)) or a BNN's "
            f"Prediction (result.predict(x)), got {type(fit).__name__}."
        )
    parts = [torch.as_tensor(v).detach().double() for v in (fit.mean, fit.epistemic_var, fit.aleatoric_var)]
    if any(v.numel() != num_x for v in parts):
        raise ValueError(
            f"{name!r} has {parts[0].numel()} values of a single target, but x has {num_x} points; read it out at "
            "the plotted x, for a scalar target."
        )
    mean, epistemic, aleatoric = (v.reshape(num_x).cpu().numpy() for v in parts)
    return mean, epistemic, aleatoric


def plot_regression_uncertainty(
    x: Tensor,
    fits: Mapping[str, PredictiveUncertainty | Prediction],
    *,
    x_train: Tensor | None = None,
    y_train: Tensor | None = None,
    true_noise_var: Callable[[np.ndarray], np.ndarray] | None = None,
    shade: tuple[float, float] | None = None,
    z: float = 2.0,
) -> Figure:
    """1-D regressions side by side: predictive mean and bands above, the variance split into its parts below.

    One column per entry of ``fits``. The top panel draws the predictive mean with two bands of
    ``z`` standard deviations: the epistemic one (``Var_w E[y | x, w]``) and the total one (epistemic plus
    aleatoric), over the training points if given. The bottom panel draws the epistemic and the
    aleatoric variance on a log scale, with the true noise variance if given, so that two model families
    (a diffusion regression and a BNN, say) can be read against each other and against the truth.

    :param Tensor x: the ``n`` inputs the read-outs were taken at, ``(n,)`` or ``(n, 1)``.
    :param fits: by label, a :class:`~probgen.infer.results.PredictiveUncertainty` of a chain
        ``p(y | x)`` or a :class:`~probgen.infer.predictive.Prediction` of a BNN, read out at ``x``.
    :param x_train: training inputs, drawn as points in the top panels (with ``y_train``).
    :param y_train: training targets.
    :param true_noise_var: the true ``Var(y | x)`` as a function of an array of inputs, drawn dashed.
    :param shade: an interval of ``x`` (a gap in the data, say) shaded in every panel.
    :param float z: the bands' half-width in standard deviations.
    :returns: the Figure, two rows of Axes and one column per fit.
    :raises ValueError: for no fits, or a read-out that does not match ``x``.
    :raises TypeError: for a read-out of another type.

    Example::

        >>> from probgen.infer.predictive import Prediction
        >>> x = torch.linspace(-1, 1, 5)
        >>> pred = Prediction(f=torch.zeros(1, 2, 5, 1), y=torch.zeros(1, 2, 5), mean=x, epistemic_var=x**2 + 0.1,
        ...                   aleatoric_var=torch.full((5,), 0.2))
        >>> fig = plot_regression_uncertainty(x, {"BNN": pred})
        >>> [ax.get_title() for ax in fig.get_axes()]
        ['BNN', 'BNN: variance']
    """
    grid = as_tensor("x", x, dtype=torch.float64).detach().reshape(-1).cpu().numpy()
    if not fits:
        raise ValueError("fits is empty; give at least one read-out, by label.")
    z = check_positive_float("z", z)
    order = np.argsort(grid)
    fig, axes = plt.subplots(2, len(fits), figsize=(4.2 * len(fits), 5.6), sharex=True, squeeze=False)
    top_axes, bottom_axes = axes[0], axes[1]
    for column, (label, fit) in enumerate(fits.items()):
        mean, epistemic, aleatoric = (v[order] for v in _regression_parts(label, fit, grid.shape[0]))
        xs = grid[order]
        top, bottom = top_axes[column], bottom_axes[column]
        if x_train is not None and y_train is not None:
            xt = as_tensor("x_train", x_train, dtype=torch.float64).detach().reshape(-1).cpu().numpy()
            yt = as_tensor("y_train", y_train, dtype=torch.float64).detach().reshape(-1).cpu().numpy()
            top.scatter(xt, yt, s=1, alpha=0.15, color="grey", label="training data")
        total_sd, epistemic_sd = np.sqrt(epistemic + aleatoric), np.sqrt(epistemic)
        top.fill_between(xs, mean - z * total_sd, mean + z * total_sd, color="C0", alpha=0.25, label=f"total ±{z:g} sd")
        top.fill_between(
            xs, mean - z * epistemic_sd, mean + z * epistemic_sd, color="C1", alpha=0.6, label=f"epistemic ±{z:g} sd"
        )
        top.plot(xs, mean, color="k", lw=1, label="predictive mean")
        bottom.plot(xs, epistemic, color="C1", label="epistemic")
        bottom.plot(xs, aleatoric, color="C0", label="aleatoric")
        if true_noise_var is not None:
            bottom.plot(xs, np.asarray(true_noise_var(xs), dtype=float), "k--", lw=1, label="true noise variance")
        bottom.set_yscale("log")
        for ax in (top, bottom):
            if shade is not None:
                ax.axvspan(*shade, color="grey", alpha=0.12)
        top.set_title(label)
        bottom.set_title(f"{label}: variance")
        top.set_ylabel("y")
        bottom.set_ylabel("variance")
        bottom.set_xlabel("x")
    top_axes[0].legend(loc="lower left", fontsize="x-small", markerscale=4)
    bottom_axes[0].legend(loc="best", fontsize="x-small")
    fig.tight_layout()
    return fig
