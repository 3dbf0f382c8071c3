"""Metrics against values computed by hand or by an independent route."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from probgen import metrics
from probgen.metrics import energy_distance, gaussian_nll


def test_rmse_by_hand():
    assert metrics.rmse(torch.tensor([0.0, 0.0, 0.0]), torch.tensor([1.0, 2.0, 2.0])) == pytest.approx(math.sqrt(3))


def test_mixture_log_likelihood_is_the_log_of_the_mean_density():
    # two draws, three points: p = [[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]]; mixture = [0.2, 0.2, 0.2]
    p = torch.tensor([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]], dtype=torch.float64)
    assert metrics.mixture_log_likelihood(p.log()) == pytest.approx(math.log(0.2))
    pointwise = metrics.mixture_log_likelihood(p.log().reshape(1, 2, 3), pointwise=True)
    assert torch.allclose(pointwise, torch.full((3,), math.log(0.2), dtype=torch.float64))


def test_mixture_is_not_the_moment_matched_gaussian():
    # two Gaussian draws N(-1, 0.1) and N(1, 0.1) at y = 0: the mixture density is tiny,
    # a Gaussian with the same mean and variance is not.
    y = torch.tensor([0.0])
    ll = torch.stack([torch.distributions.Normal(m, 0.1).log_prob(y) for m in (-1.0, 1.0)])
    mixture = metrics.mixture_log_likelihood(ll)
    matched = torch.distributions.Normal(0.0, math.sqrt(1 + 0.01)).log_prob(y).item()
    assert mixture == pytest.approx(stats.norm(1, 0.1).logpdf(0))
    assert mixture < matched - 40


def test_coverage_by_hand():
    assert metrics.coverage(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.5])) == 0.5


def test_crps_matches_the_closed_form_for_a_gaussian():
    # CRPS(N(0,1), y) = y(2Phi(y) - 1) + 2 phi(y) - 1/sqrt(pi) (Gneiting & Raftery 2007, eq. 21)
    y = 0.7
    exact = y * (2 * stats.norm.cdf(y) - 1) + 2 * stats.norm.pdf(y) - 1 / math.sqrt(math.pi)
    gen = torch.Generator().manual_seed(0)
    draws = torch.randn(200_000, 1, generator=gen, dtype=torch.float64)
    # the estimator's SD per draw is below 1, so its SE is below 1/sqrt(2e5) ~ 0.0022; 4.5 SE ~ 0.01
    assert metrics.crps(draws, torch.tensor([y], dtype=torch.float64)) == pytest.approx(exact, abs=0.01)


def test_crps_by_hand_for_two_draws():
    # draws {0, 2}, y = 1: E|Y - y| = 1, E|Y - Y'| = (0 + 2 + 2 + 0) / 4 = 1, CRPS = 1 - 0.5 = 0.5
    assert metrics.crps(torch.tensor([[0.0], [2.0]]), torch.tensor([1.0])) == pytest.approx(0.5)


def test_classification_metrics_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=torch.float64)
    y = torch.tensor([0, 1, 1])
    assert metrics.accuracy(probs, y) == pytest.approx(2 / 3)
    assert metrics.nll(probs, y) == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3)
    # bins of width 0.5 (num_bins=2): every confidence (0.9, 0.8, 0.6) lands in bin [0.5, 1]
    # accuracy 2/3, mean confidence 0.7667 -> ECE = |0.6667 - 0.7667| = 0.1
    assert metrics.expected_calibration_error(probs, y, num_bins=2) == pytest.approx(0.1)


def test_entropy_and_mutual_information():
    uniform = torch.full((1, 4), 0.25)
    assert metrics.predictive_entropy(uniform).item() == pytest.approx(math.log(4))
    agree = torch.tensor([[[0.7, 0.3]], [[0.7, 0.3]]])
    assert metrics.mutual_information(agree).item() == pytest.approx(0.0, abs=1e-12)
    draws = torch.tensor([[[0.9, 0.1]], [[0.1, 0.9]]])
    h = lambda p: -sum(q * math.log(q) for q in p)  # noqa: E731
    assert metrics.mutual_information(draws).item() == pytest.approx(h([0.5, 0.5]) - h([0.9, 0.1]))


def test_bad_metric_input_is_named():
    with pytest.raises(ValueError, match="same number of rows"):
        metrics.rmse(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="labels in 0..1"):
        metrics.accuracy(torch.full((2, 2), 0.5), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="at least one sample dim"):
        metrics.mixture_log_likelihood(torch.zeros(5))
    assert np.isfinite(metrics.nll(torch.tensor([[1.0, 0.0]]), torch.tensor([1])))


def test_energy_distance_and_gaussian_nll():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(800, 2, generator=g), torch.randn(800, 2, generator=g)
    assert abs(energy_distance(a, b)) < 0.02
    # the energy distance of N(0, I) and N(mu, I) grows with |mu|
    assert energy_distance(a, b + 0.5) < energy_distance(a, b + 1.0)
    train = torch.randn(50000, 1, generator=g)
    # exact: 0.5 log(2 pi e) = 1.4189 for N(0, 1) scored by itself; se of the test mean ~0.003
    test = torch.randn(50000, 1, generator=g)
    nll = -torch.distributions.Normal(0.0, 1.0).log_prob(test).numpy()
    assert abs(gaussian_nll(train, test) - nll.mean()) < 0.01


def test_energy_distance_takes_rows_and_says_so():
    draws = torch.randn(1, 50, 2)  # (chain, draw, event): a sampler's layout, not rows
    with pytest.raises(ValueError, match=r"same number of columns.*draws.get_samples\(\)\['x_0'\]"):
        energy_distance(draws, torch.randn(50, 2))
