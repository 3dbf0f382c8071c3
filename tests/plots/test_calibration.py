"""Tests for probgen/plots/calibration.py: reliability diagrams, coverage and LOO-PIT (Agg backend)."""

from __future__ import annotations

import numpy as np
import pytest

from probgen import plots
from probgen.metrics import expected_calibration_error
from tests.plots._checks import labelled, saved


def test_regression_calibration_is_a_coverage_plot(svi, tmp_path):
    ax = plots.plot_calibration(svi)
    assert ax.get_title() == "Coverage" and labelled(ax)
    empirical = ax.get_lines()[-1].get_ydata()
    assert len(empirical) == 19 and np.all(np.diff(empirical) >= 0)  # nested intervals
    saved(ax, tmp_path / "coverage.png")


def test_classifier_calibration_is_a_reliability_diagram(classifier, tmp_path):
    ax = plots.plot_calibration(classifier)
    probs = classifier.predict(classifier.x).mean
    ece = expected_calibration_error(probs, classifier.y.long())
    assert ax.get_title() == f"Reliability diagram (ECE = {ece:.3f})" and labelled(ax)
    saved(ax, tmp_path / "reliability.png")


@pytest.mark.parametrize("ecdf", [False, True], ids=["density", "ecdf"])
def test_loo_pit_through_arviz(nuts, ecdf, tmp_path):
    ax = plots.plot_loo_pit(nuts, ecdf=ecdf)
    assert ax.get_xlabel() == "LOO-PIT value" and labelled(ax)
    saved(ax, tmp_path / "loo_pit.png")
