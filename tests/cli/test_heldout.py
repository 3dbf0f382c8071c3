"""The held-out verdict: what counts as underfit, miscalibrated and a fit, and the baselines it compares with."""

from __future__ import annotations

import pytest
import torch

from probgen.cli._heldout import UNDERFIT_NOISE_FRACTION, linear_baseline, logistic_baseline, verdict


def test_linear_baseline_recovers_a_linear_law():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 2, generator=gen)
    y = 3 * x[:, 0] - x[:, 1] + 0.5 + 0.1 * torch.randn(200, generator=gen)
    scores = linear_baseline(x[:150], y[:150], x[150:], y[150:])
    # RMSE of the exact law is the noise sd 0.1; 50 test points put its estimate within ~0.1 * (1 +- 0.3)
    assert 0.07 < scores["rmse"] < 0.13
    assert scores["log_likelihood"] == pytest.approx(-0.5 * torch.log(torch.tensor(2 * torch.pi * 0.01)).item() - 0.5, abs=0.3)


def test_logistic_baseline_separates_separable_classes():
    x = torch.linspace(-2, 2, 100).unsqueeze(-1)
    y = (x[:, 0] > 0).long()
    scores = logistic_baseline(x[::2], y[::2], x[1::2], y[1::2], 2)
    assert scores["accuracy"] == 1.0 and scores["nll"] < 0.2


def _regression(**changes):
    metrics = {
        "num_test": 100, "test_rmse": 0.5, "baseline_rmse": 1.0, "test_log_likelihood": -1.0,
        "baseline_log_likelihood": -1.5, "test_coverage_90": 0.9, "noise_variance_fraction": 0.1,
    }  # fmt: skip
    return {**metrics, **changes}


@pytest.mark.parametrize(
    "changes, start",
    [
        ({}, "fits:"),
        ({"noise_variance_fraction": UNDERFIT_NOISE_FRACTION + 0.2}, "underfit: the noise explains 70%"),
        ({"test_rmse": 1.2, "test_log_likelihood": -2.0}, "underfit: no better than a linear regression"),
        ({"test_coverage_90": 0.6}, "miscalibrated: the 90% predictive interval covers 60%"),
        ({"test_coverage_90": 1.0}, "miscalibrated"),
        ({"test_coverage_90": 0.86}, "fits:"),  # within the binomial band of 100 rows
    ],
)
def test_regression_verdicts(changes, start):
    assert verdict(_regression(**changes)).startswith(start)


def test_classifier_verdicts():
    good = {"test_accuracy": 0.9, "baseline_accuracy": 0.8, "test_nll": 0.3, "baseline_nll": 0.4}
    assert verdict(good).startswith("fits:")
    assert verdict({**good, "test_accuracy": 0.7, "test_nll": 0.6}).startswith("underfit:")
