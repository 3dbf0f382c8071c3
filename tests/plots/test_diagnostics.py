"""Tests for probgen/plots/diagnostics.py: ArviZ's trace, rank, posterior and energy plots (Agg backend)."""

from __future__ import annotations

import numpy as np
import pytest

from probgen import plots
from probgen.infer.arviz import to_arviz
from tests.plots._checks import labelled, overlapping_titles, saved


@pytest.mark.parametrize("name", ["plot_trace", "plot_rank", "plot_posterior"])
def test_arviz_plots_show_a_readable_selection(nuts, name, tmp_path):
    axes = getattr(plots, name)(nuts)
    visible = [ax for ax in np.ravel(axes) if ax.get_visible()]
    assert all(ax.get_xlabel() or ax.get_title() for ax in visible)
    if name != "plot_trace":  # one panel per selected scalar: first two units of every dim
        assert len(visible) == 2 + 2 + 2 + 1 + 1  # 0.weight, 0.bias, 2.weight, 2.bias, noise_scale
    saved(axes, tmp_path / f"{name}.png")
    assert overlapping_titles(axes) == []  # ArviZ packs the rows: each title would sit on the ticks above


def test_arviz_plots_take_coords(svi):
    axes = plots.plot_posterior(to_arviz(svi, predictive=False), var_names=["0.bias"], coords={})
    assert len([ax for ax in np.ravel(axes) if ax.get_visible()]) == 8


def test_energy_plot_needs_nuts(nuts, svi, tmp_path):
    ax = plots.plot_energy(nuts)
    assert labelled(ax)
    saved(ax, tmp_path / "energy.png")
    with pytest.raises(ValueError, match="only NUTS results"):
        plots.plot_energy(svi)
