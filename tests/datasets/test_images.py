"""Tests for probgen/datasets/images.py: the fixed digits split and the per-pixel categorical floor."""

from __future__ import annotations

import pytest
import torch

from probgen.datasets.images import (
    DIGITS_BIN_HALF_WIDTH,
    digits_to_levels,
    load_digits_split,
    pixel_categorical_bits_per_dim,
)


def test_split_sizes_levels_and_disjointness():
    split = load_digits_split()
    assert (split.train.shape[0], split.val.shape[0], split.test.shape[0]) == (1000, 350, 447)
    assert split.train.shape[1:] == (1, 8, 8)
    every = torch.cat([split.train, split.val, split.test])
    levels = torch.unique(every)
    assert levels.numel() == 17
    torch.testing.assert_close(levels, torch.linspace(-1, 1, 17))
    assert DIGITS_BIN_HALF_WIDTH == pytest.approx(1 / 16) == split.bin_half_width
    assert split.train_labels.shape == (1000,)
    # the split is a fixed permutation: same call, same images; another seed, another split
    assert torch.equal(load_digits_split().test, split.test)
    assert not torch.equal(load_digits_split(seed=1).test, split.test)


def test_levels_round_trip():
    split = load_digits_split()
    levels = digits_to_levels(split.test)
    torch.testing.assert_close(levels / 8.0 - 1.0, split.test)


def test_pixel_categorical_floor():
    split = load_digits_split()
    floor = pixel_categorical_bits_per_dim(split.train, split.test)
    assert floor == pytest.approx(2.43, abs=0.01)
    # fitted and scored on the same images it can only do better
    assert pixel_categorical_bits_per_dim(split.train, split.train) < floor
    with pytest.raises(ValueError, match="same number of pixels"):
        pixel_categorical_bits_per_dim(split.train, split.test[:, :, :4])
