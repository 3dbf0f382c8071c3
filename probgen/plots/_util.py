"""Helpers shared by probgen's figures: argument checks, intervals from draws, quiet ArviZ calls."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Literal, get_args

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import MatplotlibDeprecationWarning
from matplotlib.axes import Axes
from torch import Tensor

from probgen._compat import import_arviz
from probgen._validate import check_probability
from probgen.infer.results import PosteriorResult

__all__ = [
    "INTERVALS",
    "Interval",
    "arviz_plotting",
    "check_levels",
    "check_regression",
    "check_result",
    "flat_draws",
    "interval_bounds",
    "new_axes",
]

Interval = Literal["hdi", "central"]
#: Kinds of predictive interval: highest-density (ArviZ's ``az.hdi``) or central (quantiles).
INTERVALS: tuple[Interval, ...] = get_args(Interval)


@contextlib.contextmanager
def arviz_plotting() -> Iterator[None]:
    """Run an ArviZ 0.23 plot without matplotlib 3.11's notice about ArviZ's keyword de-aliasing.

    ArviZ 0.23 passes a dict to ``matplotlib.cbook.normalize_kwargs``, which matplotlib deprecates
    from 3.11 (removal in 3.13); users cannot act on it, so it is hidden here and nowhere else.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Passing a dict or None as alias_mapping", category=MatplotlibDeprecationWarning
        )
        yield


def check_result(result: Any, name: str = "result") -> PosteriorResult:
    if not isinstance(result, PosteriorResult):
        raise TypeError(f"{name} must be a probgen result (from fit_nuts or fit_svi), got {type(result).__name__}.")
    return result


def check_regression(result: PosteriorResult, caller: str) -> None:
    if result.model.likelihood.is_classification:
        raise ValueError(f"{caller} is for regression; use plot_reliability for a classifier.")


def flat_draws(draws: Tensor) -> np.ndarray:
    """Merge the ``(chain, draw)`` dims: ``(S, ...)``."""
    return draws.reshape((-1,) + tuple(draws.shape[2:])).detach().cpu().cpu().numpy()


def interval_bounds(draws: np.ndarray, level: float, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """A ``level`` interval per point from draws ``(S, ...)``: HDI (``az.hdi``) or central."""
    if kind == "hdi":
        az = import_arviz()
        bounds = az.hdi(draws[None], hdi_prob=level)  # ArviZ reads (chain, draw, ...)
        return bounds[..., 0], bounds[..., 1]
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return lo, hi


def check_levels(levels: Sequence[float]) -> list[float]:
    checked = sorted({check_probability("levels", level) for level in levels}, reverse=True)
    if not checked:
        raise ValueError("levels must hold at least one probability, such as (0.5, 0.9).")
    return checked


def new_axes(ax: Axes | None) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    return ax
