"""The data-set container and the lookup of the repository's ``data/`` folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor

#: The repository's data folder (present in a source checkout, absent in a wheel install).
DATA_DIR = Path(__file__).resolve().parents[2] / "data"


class Dataset(NamedTuple):
    """A data set split into training and test parts.

    :ivar x_train: training inputs ``(n, features)``.
    :ivar y_train: training targets ``(n,)``.
    :ivar x_test: test inputs.
    :ivar y_test: test targets (for the toy sets: the noise-free function on a grid).
    :ivar frame: the training rows as a pandas DataFrame (features, then the target column).
    :ivar str target: the target column's name in ``frame``.
    :ivar str description: where the data come from.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    frame: pd.DataFrame
    target: str
    description: str


def tensor(a: np.ndarray, *, labels: bool = False) -> Tensor:
    """A NumPy array as a tensor: long for labels, torch's default float dtype otherwise."""
    t = torch.from_numpy(np.array(a))  # a copy: pandas hands out read-only views
    return t.long() if labels else t.to(torch.get_default_dtype())


def read_csv_or(name: str, make: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """Read ``data/NAME`` when the repository's data folder has it, else build it with ``make()``."""
    path = DATA_DIR / name
    if path.exists():
        return pd.read_csv(path)
    return make()
