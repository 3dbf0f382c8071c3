"""Tests for probgen/datasets/toy2d.py: determinism, shapes, supports and the exact entropies."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from probgen.datasets.toy2d import (
    CHECKERBOARD_ENTROPY,
    EIGHT_GAUSSIANS_ENTROPY,
    TOY2D_NAMES,
    load_8gaussians,
    load_checkerboard,
    load_toy2d,
)


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_loaders_are_deterministic_and_split(name):
    a = load_toy2d(name, num_train=300, num_val=20, num_test=100, seed=4)
    b = load_toy2d(name, num_train=300, num_val=20, num_test=100, seed=4)
    c = load_toy2d(name, num_train=300, num_val=20, num_test=100, seed=5)
    assert (a.train.shape, a.val.shape, a.test.shape) == ((300, 2), (20, 2), (100, 2))
    assert a.train.dtype == torch.get_default_dtype()
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert not torch.equal(a.train, c.train)
    assert a.name == name and a.seed == 4
    assert torch.isfinite(a.train).all()


def test_eight_gaussians_entropy_by_quadrature():
    # components sd 1/(2 sqrt 2) on the circle of radius 2 sqrt 2; trapezoid rule, step 0.01, converged
    r, s, h = 2 * math.sqrt(2), 1 / (2 * math.sqrt(2)), 0.01
    grid = np.arange(-r - 9 * s, r + 9 * s, h)
    x, y = np.meshgrid(grid, grid)
    density = np.zeros_like(x)
    for k in range(8):
        cx, cy = r * math.cos(k * math.pi / 4), r * math.sin(k * math.pi / 4)
        density += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s)) / (2 * math.pi * s * s) / 8
    positive = density > 0
    entropy = -(density[positive] * np.log(density[positive])).sum() * h * h
    assert entropy == pytest.approx(EIGHT_GAUSSIANS_ENTROPY, abs=1e-9)
    assert EIGHT_GAUSSIANS_ENTROPY == pytest.approx(2.8313, abs=5e-4)  # the rounded value


def test_eight_gaussians_match_their_definition():
    data = load_8gaussians(num_train=20000, num_val=0, num_test=10)
    radius = data.train.norm(dim=1)
    # radius ~ 2 sqrt 2 with sd ~ 1/(2 sqrt 2); se of the mean ~0.0025
    assert abs(float(radius.mean()) - 2 * math.sqrt(2)) < 0.05
    angles = torch.atan2(data.train[:, 1], data.train[:, 0]) / (math.pi / 4)
    assert float((angles - angles.round()).abs().mean()) < 0.15


def test_checkerboard_is_uniform_on_its_support():
    data = load_checkerboard(num_train=20000, num_val=0, num_test=10)
    x = data.train
    assert float(x.abs().max()) <= 4.0
    cells = torch.floor(x / 2).long() + 2  # 4 x 4 board of side-2 squares
    dark = (cells[:, 0] + cells[:, 1]) % 2
    assert len(set(dark.tolist())) == 1  # every point on one colour
    counts = torch.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16)
    occupied = counts[counts > 0].double()
    assert occupied.numel() == 8
    # each square holds 1/8 of the points: binomial se sqrt(20000 * 1/8 * 7/8) ~ 47; tolerance 4.5 se
    assert float((occupied - 2500).abs().max()) < 4.5 * math.sqrt(20000 / 8 * 7 / 8)
    assert data.entropy == pytest.approx(math.log(32)) == CHECKERBOARD_ENTROPY


def test_toy_errors():
    with pytest.raises(ValueError, match="unknown toy 'moons'"):
        load_toy2d("moons")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_train must be a positive int"):
        load_8gaussians(num_train=0)
