"""Scores of probabilistic predictions, as pure functions on draws or probabilities.

Regression: :func:`rmse`, :func:`mixture_log_likelihood` (the held-out log-likelihood of the
Bayesian model average, as the UCI literature reports it), :func:`coverage`, :func:`crps`.
Classification: :func:`accuracy`, :func:`nll`, :func:`expected_calibration_error` (bins from :func:`calibration_bins`),
:func:`predictive_entropy`, :func:`mutual_information`.
Samples of a generative model: :func:`energy_distance` (between two samples) and :func:`gaussian_nll`
(the single-Gaussian baseline a density model should beat).

Arrays of draws lead with their sample dimensions; functions that take ``log_lik`` or
``prob_draws`` flatten every dimension except the trailing data dimensions.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from probgen._validate import as_tensor, check_positive_int, check_same_length

__all__ = [
    "rmse",
    "mixture_log_likelihood",
    "coverage",
    "crps",
    "accuracy",
    "nll",
    "CalibrationBins",
    "calibration_bins",
    "expected_calibration_error",
    "predictive_entropy",
    "mutual_information",
    "energy_distance",
    "gaussian_nll",
]


def _flatten_draws(draws: Tensor, data_dims: int) -> Tensor:
    """Merge every leading sample dim into one: ``(S, *data_shape)``."""
    if draws.dim() <= data_dims:
        raise ValueError(
            f"expected draws with at least one sample dim before {data_dims} data dim(s), "
            f"got shape {tuple(draws.shape)}."
        )
    return draws.reshape((-1,) + draws.shape[draws.dim() - data_dims :])


def rmse(pred_mean: Tensor, y: Tensor) -> float:
    """Root mean squared error of a point prediction.

    >>> round(rmse(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0])), 6)
    1.414214
    """
    pred_mean, y = torch.as_tensor(pred_mean), torch.as_tensor(y)
    check_same_length("pred_mean", pred_mean, "y", y)
    return float(((pred_mean - y) ** 2).mean().sqrt())


def mixture_log_likelihood(log_lik: Tensor, *, pointwise: bool = False) -> Tensor | float:
    """Held-out log-likelihood of the Bayesian model average, per observation.

    ``log p(y_i | x_i, D) = log (1/S) sum_s p(y_i | theta_s)``, averaged over ``i``. This is the
    mixture over draws, not a Gaussian moment-matched to the predictive.

    :param log_lik: pointwise log-likelihoods per draw, ``(*sample_dims, n)``.
    :param bool pointwise: return the ``(n,)`` vector instead of its mean.

    >>> ll = torch.log(torch.tensor([[0.2], [0.4]]))  # two draws, one point
    >>> round(mixture_log_likelihood(ll), 6) == round(math.log(0.3), 6)
    True
    """
    flat = _flatten_draws(torch.as_tensor(log_lik), 1)
    per_point = torch.logsumexp(flat, dim=0) - math.log(flat.shape[0])
    return per_point if pointwise else float(per_point.mean())


def coverage(lower: Tensor, upper: Tensor, y: Tensor) -> float:
    """Fraction of targets inside their interval ``[lower, upper]``.

    >>> coverage(torch.zeros(4), torch.ones(4), torch.tensor([0.5, 2.0, 0.0, -1.0]))
    0.5
    """
    y = torch.as_tensor(y)
    return float(((y >= lower) & (y <= upper)).double().mean())


def crps(y_draws: Tensor, y: Tensor) -> float:
    """Continuous ranked probability score from predictive draws, averaged over points (lower is better).

    ``CRPS = E|Y - y| - 1/2 E|Y - Y'|`` with ``Y, Y'`` independent predictive draws. The second
    term uses the sorted-sample identity ``E|Y - Y'| = 2 / S^2 sum_i (2i - S - 1) Y_(i)``, which is
    exact for the empirical distribution of the draws and costs ``O(S log S)``.

    References:
        Gneiting, T. and Raftery, A. E. (2007). Strictly proper scoring rules, prediction, and
        estimation. JASA 102, eq. (21).

    >>> crps(torch.tensor([[0.0], [0.0]]), torch.tensor([1.0]))  # a point mass at 0, target 1
    1.0
    """
    flat = _flatten_draws(torch.as_tensor(y_draws), torch.as_tensor(y).dim())
    y = torch.as_tensor(y, dtype=flat.dtype)
    s = flat.shape[0]
    term1 = (flat - y).abs().mean(0)
    ordered, _ = flat.sort(dim=0)
    i = torch.arange(1, s + 1, dtype=flat.dtype).reshape((s,) + (1,) * (flat.dim() - 1))
    term2 = (2.0 / s**2) * ((2 * i - s - 1) * ordered).sum(0)
    return float((term1 - 0.5 * term2).mean())


def _check_probs(probs: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    probs = as_tensor("probs", probs, ndim=2)
    labels = as_tensor("y", y, ndim=1, dtype=torch.long)
    check_same_length("probs", probs, "y", labels)
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"y must hold labels in 0..{probs.shape[1] - 1}.")
    return probs, labels


def accuracy(probs: Tensor, y: Tensor) -> float:
    """Fraction of points whose most probable class is the label. ``probs`` is ``(n, K)``.

    >>> accuracy(torch.tensor([[0.9, 0.1], [0.3, 0.7]]), torch.tensor([0, 0]))
    0.5
    """
    probs, labels = _check_probs(probs, y)
    return float((probs.argmax(-1) == labels).double().mean())


def nll(probs: Tensor, y: Tensor, *, eps: float = 1e-12) -> float:
    """Mean negative log predictive probability of the labels (the classification mixture NLL).

    >>> round(nll(torch.tensor([[0.5, 0.5]]), torch.tensor([1])), 6) == round(math.log(2), 6)
    True
    """
    probs, labels = _check_probs(probs, y)
    picked = probs.gather(1, labels[:, None])[:, 0]
    return float(-(picked.clamp_min(eps)).log().mean())


class CalibrationBins(NamedTuple):
    """Top-class confidence binned into equal-width bins on ``[0, 1]``; from :func:`calibration_bins`.

    Only bins that hold at least one point are listed, in increasing order.

    :ivar Tensor centres: the centre of each bin, ``(b + 0.5) / num_bins``.
    :ivar Tensor counts: the number of points in each bin.
    :ivar Tensor accuracy: the share of points in each bin whose top class is the label.
    :ivar Tensor confidence: the mean top-class probability in each bin.
    :ivar float width: the width of every bin, ``1 / num_bins``.
    """

    centres: Tensor
    counts: Tensor
    accuracy: Tensor
    confidence: Tensor
    width: float


def calibration_bins(probs: Tensor, y: Tensor, *, num_bins: int = 10) -> CalibrationBins:
    """Bin the points of a classifier by top-class confidence: what ECE and a reliability diagram read.

    Point ``i`` with top-class probability ``c_i`` falls in bin ``min(floor(c_i num_bins), num_bins - 1)``.

    >>> bins = calibration_bins(torch.tensor([[0.8, 0.2], [0.6, 0.4]]), torch.tensor([0, 1]), num_bins=4)
    >>> bins.centres.tolist(), bins.accuracy.tolist()
    ([0.625, 0.875], [0.0, 1.0])
    """
    probs, labels = _check_probs(probs, y)
    num_bins = check_positive_int("num_bins", num_bins)
    confidence, predicted = probs.max(-1)
    correct = (predicted == labels).double()
    bins = torch.clamp((confidence * num_bins).long(), max=num_bins - 1)
    width = 1.0 / num_bins
    centres, counts, accuracy, mean_confidence = [], [], [], []
    for b in range(num_bins):
        in_bin = bins == b
        if in_bin.any():
            centres.append((b + 0.5) * width)
            counts.append(int(in_bin.sum()))
            accuracy.append(correct[in_bin].mean())
            mean_confidence.append(confidence[in_bin].double().mean())
    return CalibrationBins(
        centres=torch.tensor(centres, dtype=torch.float64),
        counts=torch.tensor(counts, dtype=torch.long),
        accuracy=torch.stack(accuracy),
        confidence=torch.stack(mean_confidence),
        width=width,
    )


def expected_calibration_error(probs: Tensor, y: Tensor, *, num_bins: int = 10) -> float:
    """Expected calibration error with equal-width confidence bins (those of :func:`calibration_bins`).

    ``ECE = sum_b (n_b / n) |accuracy_b - confidence_b|`` over bins of the top-class confidence.

    References:
        Guo, C. et al. (2017). On calibration of modern neural networks. ICML, eq. (3).

    >>> probs = torch.tensor([[0.8, 0.2], [0.8, 0.2], [0.6, 0.4], [0.6, 0.4]])
    >>> round(expected_calibration_error(probs, torch.tensor([0, 1, 0, 0]), num_bins=5), 6)
    0.35
    """
    bins = calibration_bins(probs, y, num_bins=num_bins)
    share = bins.counts.double() / bins.counts.sum()
    return float((share * (bins.accuracy - bins.confidence).abs()).sum())


def _entropy(p: Tensor) -> Tensor:
    return -(p * p.clamp_min(1e-30).log()).sum(-1)


def predictive_entropy(probs: Tensor) -> Tensor:
    """Entropy (nats) of the predictive class distribution, per point: total uncertainty.

    >>> predictive_entropy(torch.tensor([[0.5, 0.5]]))
    tensor([0.6931])
    """
    return _entropy(torch.as_tensor(probs))


def mutual_information(prob_draws: Tensor) -> Tensor:
    """Mutual information between label and weights, per point: epistemic uncertainty (nats).

    ``MI = H[mean_s p_s] - mean_s H[p_s]`` for class probabilities per draw
    ``(*sample_dims, n, K)``; zero when all draws agree.

    References:
        Houlsby, N. et al. (2011). Bayesian active learning for classification and preference
        learning (BALD), eq. (2).

    >>> draws = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # two confident draws that disagree
    >>> mutual_information(draws)
    tensor([0.6931])
    """
    flat = _flatten_draws(torch.as_tensor(prob_draws), 2)
    return _entropy(flat.mean(0)) - _entropy(flat).mean(0)


def _rows(name: str, values: Tensor) -> Tensor:
    """Rows ``(N, ...)`` as float64 vectors ``(N, D)``."""
    return as_tensor(name, values, dtype=torch.float64).flatten(1)


def energy_distance(x: Tensor, y: Tensor) -> float:
    """The energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` between two samples.

    Uses the unbiased (U-statistic) within-sample means; rows are flattened to vectors. It is zero
    in expectation when the two samples come from the same distribution and positive otherwise.
    Draws of a sampler, ``(chain, draw, *event_shape)``, go in as rows: ``draws.get_samples()["x_0"]``.

    :param Tensor x: draws ``(N, ...)``.
    :param Tensor y: draws ``(M, ...)``, the same trailing shape.
    :returns: the estimate (it may be slightly negative for identical distributions).

    References:
        Szekely, G. J. and Rizzo, M. L. (2013). Energy statistics: A class of statistics based on
        distances. J. Statist. Plann. Inference 143(8), eq. (2).

    >>> g = torch.Generator().manual_seed(0)
    >>> a, b = torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g)
    >>> energy_distance(a, b) < 0.02 < energy_distance(a, b + 1.0)
    True
    """
    x, y = _rows("x", x), _rows("y", y)
    if x.shape[1] != y.shape[1] or x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(
            "x and y need at least 2 rows each and the same number of columns, "
            f"got {tuple(x.shape)} and {tuple(y.shape)}; pass a sampler's draws as rows, draws.get_samples()['x_0']."
        )
    n, m = x.shape[0], y.shape[0]
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).sum() / (n * (n - 1))
    yy = torch.cdist(y, y).sum() / (m * (m - 1))
    return float(2.0 * xy - xx - yy)


def gaussian_nll(train: Tensor, test: Tensor) -> float:
    """Mean negative log-density (nats per data point) of ``test`` under one Gaussian fitted to ``train``.

    The Gaussian has the training mean and (maximum-likelihood) full covariance. It is the baseline
    a density model of the data should beat.

    :param Tensor train: ``(N, ...)``, flattened to vectors.
    :param Tensor test: ``(M, ...)``, the same trailing shape.

    >>> g = torch.Generator().manual_seed(0)
    >>> round(gaussian_nll(torch.randn(20000, 1, generator=g), torch.randn(20000, 1, generator=g)), 2)
    1.42
    """
    train, test = _rows("train", train), _rows("test", test)
    mean = train.mean(0)
    cov = torch.atleast_2d(torch.cov(train.T, correction=0))
    normal = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
    return float(-normal.log_prob(test).mean())
