"""Classification data sets: two moons (generated) and scikit-learn's 8×8 digits."""

from __future__ import annotations

import numpy as np
import pandas as pd

from probgen.datasets._base import Dataset, read_csv_or, tensor

__all__ = ["make_moons", "load_moons", "load_digits_classification"]


def make_moons(seed: int = 0, *, num_train: int = 300, num_test: int = 500, noise: float = 0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two interleaved half circles with Gaussian noise (scikit-learn's generator, fixed seeds)."""
    from sklearn.datasets import make_moons as _sk_moons

    x, y = _sk_moons(num_train, noise=noise, random_state=seed)
    xt, yt = _sk_moons(num_test, noise=noise, random_state=seed + 1)
    train = pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "label": y})
    test = pd.DataFrame({"x1": xt[:, 0], "x2": xt[:, 1], "label": yt})
    return train, test


def load_moons() -> Dataset:
    """Two moons: 300 training and 500 test points, labels 0/1.

    >>> data = load_moons()
    >>> tuple(data.x_train.shape), data.y_train.dtype
    ((300, 2), torch.int64)
    """
    train = read_csv_or("moons_train.csv", lambda: make_moons()[0])
    test = read_csv_or("moons_test.csv", lambda: make_moons()[1])
    cols = ["x1", "x2"]
    return Dataset(
        x_train=tensor(train[cols].to_numpy()),
        y_train=tensor(train["label"].to_numpy(), labels=True),
        x_test=tensor(test[cols].to_numpy()),
        y_test=tensor(test["label"].to_numpy(), labels=True),
        frame=train,
        target="label",
        description="two moons, scikit-learn make_moons(noise=0.2), seeds 0 (train) and 1 (test)",
    )


def load_digits_classification(*, test_fraction: float = 0.3, seed: int = 0) -> Dataset:
    """scikit-learn's 8×8 digits (1797 images, 10 classes) as 64 features scaled to [0, 1].

    >>> data = load_digits_classification()
    >>> tuple(data.x_train.shape), int(data.y_train.max())
    ((1258, 64), 9)
    """
    from sklearn.datasets import load_digits as _sk_digits

    raw = _sk_digits()
    x = raw.data / 16.0
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    frame = pd.DataFrame(x[train], columns=[f"pixel_{i}" for i in range(64)])
    frame["label"] = raw.target[train]
    return Dataset(
        x_train=tensor(x[train]),
        y_train=tensor(raw.target[train], labels=True),
        x_test=tensor(x[test]),
        y_test=tensor(raw.target[test], labels=True),
        frame=frame,
        target="label",
        description="scikit-learn digits (UCI optical recognition), split with seed 0",
    )
