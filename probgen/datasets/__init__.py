"""Data sets for tutorials, tests and benchmarks: generated toys and data that scikit-learn bundles.

Nothing is downloaded. Generated sets are also written to the repository's ``data/`` folder by
``data/make_data.py``; the loaders read those files in a checkout and regenerate them otherwise.
"""

from probgen.datasets._base import Dataset
from probgen.datasets.classification import load_digits_classification, load_moons, make_moons
from probgen.datasets.regression import load_cosine, load_diabetes, load_gap, make_cosine, make_gap

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
]
