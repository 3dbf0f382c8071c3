"""scikit-learn's 8 x 8 handwritten digits with a fixed split, scaled for diffusion models.

The 1797 images ship inside scikit-learn (nothing is downloaded). Each pixel takes one of
17 grey levels ``0, 1, ..., 16``; :func:`load_digits_split` maps them to ``[-1, 1]`` by
``x / 8 - 1``, so neighbouring levels are ``1/8`` apart and each level owns a bin of
half-width ``1/16``. A discretised decoder must use that bin width (not the ``1/255`` of 8-bit
images) for its bound to be a bound on the discrete negative log-likelihood.

:func:`pixel_categorical_bits_per_dim` scores the floor every image model should beat: an
independent categorical distribution per pixel fitted on the training split.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from probgen._validate import as_tensor, check_positive_float, check_seed

__all__ = [
    "DIGITS_BIN_HALF_WIDTH",
    "DIGITS_NUM_LEVELS",
    "DigitsSplit",
    "digits_to_levels",
    "load_digits_split",
    "pixel_categorical_bits_per_dim",
]

#: Number of grey levels in scikit-learn's digits (0 to 16).
DIGITS_NUM_LEVELS = 17
#: Half-width of one grey level's bin on the ``[-1, 1]`` scale: ``1 / (DIGITS_NUM_LEVELS - 1)``.
DIGITS_BIN_HALF_WIDTH = 1.0 / (DIGITS_NUM_LEVELS - 1)

_SPLIT_SIZES = (1000, 350, 447)


class DigitsSplit(NamedTuple):
    """The digits images split 1000 / 350 / 447, scaled to ``[-1, 1]``.

    :ivar Tensor train: training images, shape ``(1000, 1, 8, 8)``, torch's default dtype.
    :ivar Tensor val: validation images, shape ``(350, 1, 8, 8)``.
    :ivar Tensor test: test images, shape ``(447, 1, 8, 8)``.
    :ivar Tensor train_labels: digit classes of the training images, ``torch.long``.
    :ivar Tensor val_labels: digit classes of the validation images.
    :ivar Tensor test_labels: digit classes of the test images.
    :ivar int num_levels: grey levels per pixel (17).
    :ivar float bin_half_width: half-width of a level's bin on ``[-1, 1]`` (1/16).
    :ivar int seed: the seed of the permutation that made the split.
    """

    train: Tensor
    val: Tensor
    test: Tensor
    train_labels: Tensor
    val_labels: Tensor
    test_labels: Tensor
    num_levels: int
    bin_half_width: float
    seed: int


def load_digits_split(*, seed: int = 0) -> DigitsSplit:
    """Load scikit-learn's digits as ``(N, 1, 8, 8)`` images on ``[-1, 1]``, split 1000/350/447.

    The split is a permutation of the 1797 images drawn by ``numpy.random.default_rng(seed)``;
    the default ``seed=0`` is the split every probgen number on digits refers to.

    :param int seed: seed of the permutation.
    :returns: a :class:`DigitsSplit`.

    Example::

        >>> split = load_digits_split()
        >>> tuple(split.train.shape), tuple(split.val.shape), tuple(split.test.shape)
        ((1000, 1, 8, 8), (350, 1, 8, 8), (447, 1, 8, 8))
        >>> float(split.train.min()), float(split.train.max()), split.num_levels
        (-1.0, 1.0, 17)
    """
    from sklearn.datasets import load_digits

    seed = check_seed(seed)
    digits = load_digits()
    levels = np.asarray(digits.data, dtype=np.float64)
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    order = torch.as_tensor(np.random.default_rng(seed).permutation(levels.shape[0]))
    # level k in {0, ..., 16} -> k / 8 - 1 in [-1, 1]; neighbouring levels are 1/8 apart
    images = torch.as_tensor(levels / 8.0 - 1.0, dtype=torch.get_default_dtype()).reshape(-1, 1, 8, 8)
    parts = torch.split(order, list(_SPLIT_SIZES))
    return DigitsSplit(
        train=images[parts[0]],
        val=images[parts[1]],
        test=images[parts[2]],
        train_labels=labels[parts[0]],
        val_labels=labels[parts[1]],
        test_labels=labels[parts[2]],
        num_levels=DIGITS_NUM_LEVELS,
        bin_half_width=DIGITS_BIN_HALF_WIDTH,
        seed=seed,
    )


def digits_to_levels(images: Tensor) -> Tensor:
    """Map images on ``[-1, 1]`` back to integer grey levels ``0..16`` (rounding to the nearest).

    :param Tensor images: values on the ``[-1, 1]`` scale; values outside are clipped.
    :returns: a ``torch.long`` tensor of the same shape.

    Example::

        >>> digits_to_levels(torch.tensor([-1.0, -0.03, 0.97, 1.4])).tolist()
        [0, 8, 16, 16]
    """
    images = as_tensor("images", images)
    return torch.round((images.clamp(-1.0, 1.0) + 1.0) * 8.0).long()


def pixel_categorical_bits_per_dim(train: Tensor, test: Tensor, *, pseudocount: float = 0.5) -> float:
    """Bits per dimension of independent per-pixel categorical distributions on the test images.

    Each pixel gets its own 17-level categorical distribution, fitted on ``train`` with
    ``pseudocount`` added to every count (0.5 is the Krichevsky-Trofimov estimator, fixed in
    advance rather than tuned on the test split). It ignores every correlation between pixels,
    so it is the floor a generative model of the images should beat.

    :param Tensor train: training images on ``[-1, 1]``, shape ``(N, *pixels)``.
    :param Tensor test: test images on ``[-1, 1]``, the same pixel shape.
    :param float pseudocount: added to every level's count.
    :returns: mean negative log2-probability per pixel of the test images.
    :raises ValueError: if the pixel shapes differ.

    Example::

        >>> split = load_digits_split()
        >>> round(pixel_categorical_bits_per_dim(split.train, split.test), 2)
        2.43
    """
    pseudocount = check_positive_float("pseudocount", pseudocount)
    train_levels = digits_to_levels(train).flatten(1)
    test_levels = digits_to_levels(test).flatten(1)
    if train_levels.shape[1] != test_levels.shape[1]:
        raise ValueError(
            f"train and test must have the same number of pixels, got {train_levels.shape[1]} and "
            f"{test_levels.shape[1]}."
        )
    counts = torch.stack([(train_levels == k).sum(0) for k in range(DIGITS_NUM_LEVELS)]).double()
    probs = (counts + pseudocount) / (counts + pseudocount).sum(0)
    pixel = torch.arange(test_levels.shape[1])
    log_probs = probs.log()[test_levels, pixel]
    return float(-log_probs.mean() / math.log(2.0))
