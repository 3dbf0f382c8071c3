"""Data sets for tutorials, tests and benchmarks: generated toys and data that scikit-learn bundles.

Nothing is downloaded. :func:`load_uci` reads a user's copy of a UCI benchmark folder
(``data.txt``, ``index_features.txt``, ``index_target.txt``) and regenerates its standard splits;
probgen ships none of those files. Generated sets are also written to the repository's ``data/`` folder by
``data/make_data.py``; the loaders read those files in a checkout and regenerate them otherwise.
"""

from probgen.datasets._base import Dataset
from probgen.datasets.classification import load_digits_classification, load_moons, make_moons
from probgen.datasets.images import DigitsSplit, load_digits_split, pixel_categorical_bits_per_dim
from probgen.datasets.regression import load_cosine, load_diabetes, load_gap, make_cosine, make_gap
from probgen.datasets.uci import Standardization, UCIDataset, load_uci, uci_split_indices
from probgen.datasets.toy2d import (
    CHECKERBOARD_ENTROPY,
    EIGHT_GAUSSIANS_ENTROPY,
    TOY2D_NAMES,
    Toy2D,
    load_8gaussians,
    load_checkerboard,
    load_swiss_roll,
    load_toy2d,
    load_two_moons_2d,
)

__all__ = [
    "Dataset",
    "load_gap",
    "load_cosine",
    "load_diabetes",
    "load_moons",
    "load_digits_classification",
    "make_gap",
    "make_cosine",
    "make_moons",
    "load_8gaussians",
    "load_checkerboard",
    "load_two_moons_2d",
    "load_swiss_roll",
    "load_toy2d",
    "Toy2D",
    "TOY2D_NAMES",
    "EIGHT_GAUSSIANS_ENTROPY",
    "CHECKERBOARD_ENTROPY",
    "load_digits_split",
    "DigitsSplit",
    "pixel_categorical_bits_per_dim",
    "load_uci",
    "uci_split_indices",
    "UCIDataset",
    "Standardization",
]
