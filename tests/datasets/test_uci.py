"""load_uci on small folders written here in the benchmark's layout (probgen ships no UCI files)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from probgen.datasets import Standardization, load_uci, uci_split_indices
from probgen.datasets.uci import UCI_FILES

N_ROWS = 37  # round(0.9 * 37) = 33 training rows, 4 test rows
FEATURES = [0, 2, 3]
TARGET = 1


def write_folder(folder, data, features=FEATURES, target=TARGET):
    """A UCI-layout folder: data.txt, index_features.txt, index_target.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / "data.txt", data)
    np.savetxt(folder / "index_features.txt", np.asarray(features), fmt="%d")
    np.savetxt(folder / "index_target.txt", np.asarray([target]), fmt="%d")
    return folder


@pytest.fixture
def table():
    rng = np.random.default_rng(3)
    data = rng.normal(size=(N_ROWS, 5)) * [1.0, 20.0, 3.0, 0.5, 9.0] + [0.0, 100.0, -4.0, 2.0, 7.0]
    return data


@pytest.fixture
def folder(tmp_path, table):
    return write_folder(tmp_path / "tiny", table)


def published_splits(n, count):
    """The protocol as the published code runs it, on NumPy's global RNG (state restored after)."""
    saved = np.random.get_state()
    try:
        np.random.seed(1)
        perms = [np.random.choice(range(n), n, replace=False) for _ in range(count)]
    finally:
        np.random.set_state(saved)
    k = round(0.9 * n)
    return [(p[:k], p[k:]) for p in perms]


def test_splits_follow_the_published_protocol():
    expected = published_splits(N_ROWS, 20)
    for split in (0, 1, 7, 19):
        train, test = uci_split_indices(N_ROWS, split)
        np.testing.assert_array_equal(train, expected[split][0])
        np.testing.assert_array_equal(test, expected[split][1])


def test_split_generation_leaves_the_global_rng_alone():
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    uci_split_indices(N_ROWS, 5)
    assert np.random.random() == before


def test_load_uci_rows_columns_and_split(folder, table):
    data = load_uci(folder, split=4)
    train, test = published_splits(N_ROWS, 5)[4]
    np.testing.assert_array_equal(data.train_index, train)
    np.testing.assert_array_equal(data.test_index, test)
    assert data.x_train.shape == (33, 3) and data.x_test.shape == (4, 3)
    assert data.y_train.shape == (33,) and data.y_test.shape == (4,)
    assert sorted([*data.train_index, *data.test_index]) == list(range(N_ROWS))
    # the rows and columns are the ones the index files name, after undoing the standardisation
    s = data.standardization
    np.testing.assert_allclose(s.unscale_x(data.x_train).numpy(), table[train][:, FEATURES], rtol=1e-10)
    np.testing.assert_allclose(s.unscale_y(data.y_test).numpy(), table[test, TARGET], rtol=1e-10)
    assert data.split == 4 and "split 4" in data.description


def test_standardised_on_the_training_rows(folder, table):
    data = load_uci(folder, split=0)
    assert torch.allclose(data.x_train.mean(0), torch.zeros(3), atol=1e-10)
    assert torch.allclose(data.x_train.std(0, correction=0), torch.ones(3), atol=1e-10)
    assert abs(float(data.y_train.mean())) < 1e-10 and abs(float(data.y_train.std(correction=0)) - 1) < 1e-10
    s = data.standardization
    assert s.y_mean == pytest.approx(table[data.train_index, TARGET].mean())
    assert s.y_std == pytest.approx(table[data.train_index, TARGET].std())
    assert s.log_likelihood_offset == pytest.approx(-math.log(s.y_std))
    # a density on the standardised scale plus the offset is the density on the original scale
    y = torch.tensor(table[data.test_index, TARGET])
    original = torch.distributions.Normal(s.y_mean + 0.3 * s.y_std, 2.0 * s.y_std).log_prob(y)
    standard = torch.distributions.Normal(0.3, 2.0).log_prob(s.scale_y(y))
    assert torch.allclose(standard + s.log_likelihood_offset, original)
    assert torch.allclose(s.unscale_sd(torch.tensor(2.0)), torch.tensor(2.0 * s.y_std))


def test_frame_is_every_row_on_the_original_scale(folder, table):
    data = load_uci(folder, split=2)
    frame = data.frame
    assert list(frame.columns) == ["x0", "x2", "x3", "y", "subset"] and data.target == "y"
    np.testing.assert_allclose(frame[["x0", "x2", "x3"]].to_numpy(), table[:, FEATURES])
    np.testing.assert_allclose(frame["y"].to_numpy(), table[:, TARGET])
    assert sorted(np.flatnonzero(frame["subset"] == "test")) == sorted(data.test_index)


def test_constant_column_and_unstandardised(tmp_path, table):
    table[:, 2] = 5.0
    data = load_uci(write_folder(tmp_path / "const", table), split=0)
    assert torch.equal(data.x_train[:, 1], torch.zeros(33)) and float(data.standardization.x_std[1]) == 1.0
    raw = load_uci(write_folder(tmp_path / "raw", table), split=0, standardize=False, dtype=torch.float32)
    assert raw.x_train.dtype == torch.float32
    np.testing.assert_allclose(raw.y_train.numpy(), table[raw.train_index, TARGET], rtol=1e-6)
    assert raw.standardization.y_std == 1.0 and raw.standardization.log_likelihood_offset == 0.0


def test_accepts_a_string_path(folder):
    assert load_uci(str(folder)).x_train.shape == (33, 3)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such UCI folder"):
        load_uci(tmp_path / "absent")


@pytest.mark.parametrize("missing", UCI_FILES)
def test_missing_file_is_named(folder, missing):
    (folder / missing).unlink()
    with pytest.raises(FileNotFoundError, match=f"{missing} is missing"):
        load_uci(folder)


@pytest.mark.parametrize("split, error", [(20, ValueError), (-1, ValueError), (1.0, TypeError), (True, TypeError)])
def test_split_out_of_range(folder, split, error):
    with pytest.raises(error, match="split"):
        load_uci(folder, split=split)


def test_nan_rows_are_reported(tmp_path, table):
    table[[3, 8], 2] = np.nan
    with pytest.raises(ValueError, match=r"2 row\(s\) with NaN.*rows 3, 8"):
        load_uci(write_folder(tmp_path / "nan", table))


def test_nan_in_an_unused_column_is_ignored(tmp_path, table):
    table[3, 4] = np.nan  # column 4 is neither a feature nor the target
    assert load_uci(write_folder(tmp_path / "unused", table)).x_train.shape == (33, 3)


def test_text_that_is_not_numbers(folder):
    (folder / "data.txt").write_text("1 2 3 4 5\n1 2 three 4 5\n")
    with pytest.raises(ValueError, match="whitespace-separated numbers"):
        load_uci(folder)


@pytest.mark.parametrize(
    "features, target, match",
    [
        ([0, 2], 9, "out of range"),
        ([0, 1], 1, "also listed"),
        ([0, 0], 1, "twice"),
        ([0.5], 1, "integer column indices"),
    ],
    ids=["target-out-of-range", "target-in-features", "repeated-feature", "fractional-index"],
)
def test_bad_index_files(tmp_path, table, features, target, match):
    folder = write_folder(tmp_path / "bad", table, features=[0], target=target)
    np.savetxt(folder / "index_features.txt", np.asarray(features))
    with pytest.raises(ValueError, match=match):
        load_uci(folder)


def test_two_targets_rejected(folder):
    np.savetxt(folder / "index_target.txt", np.asarray([1, 4]), fmt="%d")
    with pytest.raises(ValueError, match="one target column"):
        load_uci(folder)


def test_standardization_fit_matches_numpy():
    x = torch.tensor([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]])
    y = torch.tensor([0.0, 1.0, 5.0])
    s = Standardization.fit(x, y)
    assert torch.allclose(s.x_std, torch.tensor([np.std([1.0, 3.0, 5.0]), 1.0], dtype=s.x_std.dtype))
    assert s.y_std == pytest.approx(np.std([0.0, 1.0, 5.0]))
