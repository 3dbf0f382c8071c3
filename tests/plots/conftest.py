"""Shared fixtures of the figure tests: the tiny fits of tests/_tiny_fits.py, and closing every figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from tests import _tiny_fits as fits


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def nuts():
    return fits.nuts_fit()


@pytest.fixture(scope="module")
def svi():
    return fits.svi_fit()


@pytest.fixture(scope="module")
def classifier():
    return fits.classifier_fit()
