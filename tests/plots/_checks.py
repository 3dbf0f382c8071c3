"""What every figure test checks: a figure that saves as a non-empty PNG, labelled axes, legends."""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def figure_of(drawn) -> Figure:
    first = drawn if isinstance(drawn, Figure) else np.ravel(drawn)[0]
    return first if isinstance(first, Figure) else first.get_figure(root=True)


def saved(drawn, path) -> None:
    """Save the figure as PNG and check that the file is a non-empty image."""
    figure_of(drawn).savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def labelled(ax: Axes) -> bool:
    return bool(ax.get_xlabel()) and bool(ax.get_ylabel() or ax.get_title())


def legend(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def overlapping_titles(drawn) -> list[str]:
    """Titles whose drawn box meets a tick label or axis label of another panel of the same figure."""
    figure = figure_of(drawn)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    clashes = []
    for ax in figure.axes:
        if not ax.get_visible() or not ax.get_title():
            continue
        box = ax.title.get_window_extent(renderer)
        for other in figure.axes:
            if other is ax or not other.get_visible():
                continue
            texts = [other.xaxis.label, other.yaxis.label, *other.get_xticklabels(), *other.get_yticklabels()]
            if any(t.get_text() and t.get_visible() and box.overlaps(t.get_window_extent(renderer)) for t in texts):
                clashes.append(ax.get_title())
    return clashes
