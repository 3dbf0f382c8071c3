"""The bundled data sets: the CSVs in data/ match their generators, and the loaders' shapes."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from probgen import datasets
from probgen.datasets._base import DATA_DIR


@pytest.mark.parametrize(
    "name, make", [("gap", datasets.make_gap), ("cosine", datasets.make_cosine), ("moons", datasets.make_moons)]
)
def test_csv_files_match_their_generators(name, make):
    train, test = make()
    pd.testing.assert_frame_equal(pd.read_csv(DATA_DIR / f"{name}_train.csv"), train, check_exact=False, rtol=1e-12)
    pd.testing.assert_frame_equal(pd.read_csv(DATA_DIR / f"{name}_test.csv"), test, check_exact=False, rtol=1e-12)


def test_gap_has_its_gap():
    data = datasets.load_gap()
    x = data.x_train[:, 0]
    assert ((x > 0.2) & (x < 0.6)).sum() == 0
    assert x.min() == pytest.approx(-0.2) and x.max() == pytest.approx(1.0)
    assert data.x_test[:, 0].min() == pytest.approx(-0.5) and data.x_test[:, 0].max() == pytest.approx(1.5)
    # the noise-free test target is the function itself
    grid = data.x_test[:, 0]
    expected = grid + 0.3 * torch.sin(2 * torch.pi * grid) + 0.3 * torch.sin(4 * torch.pi * grid)
    assert torch.allclose(data.y_test, expected, atol=1e-6)


def test_cosine_clusters():
    x = datasets.load_cosine().x_train[:, 0]
    assert ((x >= -1) & (x <= -0.7)).sum() == 50 and ((x >= 0.5) & (x <= 1)).sum() == 50


def test_diabetes_split_is_fixed_and_standardised():
    a, b = datasets.load_diabetes(), datasets.load_diabetes()
    assert torch.equal(a.x_test, b.x_test)
    assert a.y_train.mean().abs() < 1e-6 and (a.y_train.std() - 1).abs() < 1e-6
    assert a.x_train.shape[0] + a.x_test.shape[0] == 442


def test_classification_sets():
    moons = datasets.load_moons()
    assert set(moons.y_train.tolist()) == {0, 1}
    digits = datasets.load_digits_classification()
    assert digits.x_train.max() <= 1.0 and digits.x_train.shape[1] == 64
    assert digits.x_train.shape[0] + digits.x_test.shape[0] == 1797
