"""Held-out scores of a fitted BNN, a linear baseline on the same split, and a one-line verdict.

"The sampler converged" and "the model fits" are different claims: the first is about the
chains (R-hat, ESS, divergences, in ``diagnostics.txt``), the second about predictions on rows the
fit never saw. This module scores the second, next to the simplest model a practitioner would try
first (least squares, or logistic regression for labels), and says in one line which it is:

* ``underfit``: the learned noise explains most of the target's variance, or the BNN does not
  beat the linear baseline;
* ``miscalibrated``: the central 90% predictive interval covers far more or far fewer test rows
  than 90% (outside the binomial band for the number of rows);
* ``fits``: better than the baseline on RMSE and log-likelihood, with a calibrated interval.

Every score is on the data's original scale (the :class:`~probgen.datasets.uci.Standardization`
of the training rows is undone first).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from probgen.datasets.uci import Standardization
from probgen.infer.results import PosteriorResult
from probgen.metrics import accuracy, coverage, crps, expected_calibration_error, mixture_log_likelihood, nll, rmse

__all__ = ["held_out_metrics", "linear_baseline", "logistic_baseline", "verdict", "UNDERFIT_NOISE_FRACTION"]

#: The interval whose coverage is checked.
INTERVAL_LEVEL = 0.9
#: A learned noise variance above this fraction of the training target's variance means the
#: network explains less than half of it: the fit is called underfit.
UNDERFIT_NOISE_FRACTION = 0.5


def linear_baseline(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor) -> dict[str, float]:
    """Least squares with an intercept and its maximum-likelihood Gaussian noise, scored on the test rows."""
    design = torch.cat([x_train, torch.ones_like(x_train[:, :1])], dim=1).double()
    coef = torch.linalg.lstsq(design, y_train.double().unsqueeze(-1)).solution
    sigma = float((design @ coef - y_train.double().unsqueeze(-1)).pow(2).mean().sqrt().clamp_min(1e-12))
    test_design = torch.cat([x_test, torch.ones_like(x_test[:, :1])], dim=1).double()
    mean = (test_design @ coef).squeeze(-1)
    log_lik = torch.distributions.Normal(mean, sigma).log_prob(y_test.double())
    return {"rmse": rmse(mean, y_test.double()), "log_likelihood": float(log_lik.mean())}


def logistic_baseline(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, num_classes: int) -> dict[str, float]:
    """Multinomial logistic regression (a tiny L2 penalty keeps separable data finite), scored on the test rows."""
    features = x_train.shape[1] + 1
    weights = torch.zeros(features, num_classes, dtype=torch.float64, requires_grad=True)

    def design(x: Tensor) -> Tensor:
        return torch.cat([x, torch.ones_like(x[:, :1])], dim=1).double()

    train, labels = design(x_train), y_train.long()
    optimiser = torch.optim.LBFGS([weights], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(train @ weights, labels) + 1e-4 * weights.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    probs = torch.softmax(design(x_test) @ weights.detach(), dim=-1)
    return {"accuracy": accuracy(probs, y_test), "nll": nll(probs, y_test)}


def held_out_metrics(
    result: PosteriorResult,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    scaler: Standardization | None,
    *,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """The BNN's test scores, the baseline's on the same split, and the verdict (a flat dict for JSON and CSV)."""
    metrics: dict[str, Any] = {"num_test": int(y_test.shape[0])}
    pred = result.predict(x_test)
    if num_classes is None:
        unscale = scaler or Standardization.identity(x_test.shape[1])
        target = unscale.unscale_y(y_test)
        mean = unscale.unscale_y(pred.mean)
        lower, upper = (unscale.unscale_y(bound) for bound in pred.interval(INTERVAL_LEVEL))
        log_lik = float(mixture_log_likelihood(result.log_likelihood(x_test, y_test))) + unscale.log_likelihood_offset
        metrics.update(
            test_rmse=rmse(mean, target),
            test_log_likelihood=log_lik,
            test_coverage_90=coverage(lower, upper, target),
            test_crps=crps(unscale.unscale_y(pred.y), target),
        )
        baseline = linear_baseline(x_train, y_train, x_test, y_test)
        metrics.update(
            baseline="linear regression",
            baseline_rmse=baseline["rmse"] * unscale.y_std,
            baseline_log_likelihood=baseline["log_likelihood"] + unscale.log_likelihood_offset,
        )
        noise = result.get_samples().get("noise_scale")
        if noise is not None:
            variance = float(y_train.double().var())
            metrics["noise_variance_fraction"] = float(noise.double().pow(2).mean()) / variance if variance > 0 else math.nan
    else:
        probs = pred.mean if pred.mean.ndim == 2 else torch.stack([1 - pred.mean, pred.mean], dim=-1)
        metrics.update(
            test_accuracy=accuracy(probs, y_test),
            test_nll=nll(probs, y_test),
            test_ece=expected_calibration_error(probs, y_test),
        )
        baseline = logistic_baseline(x_train, y_train, x_test, y_test, max(num_classes, 2))
        metrics.update(baseline="logistic regression", baseline_accuracy=baseline["accuracy"], baseline_nll=baseline["nll"])
    metrics["verdict"] = verdict(metrics)
    return metrics


def _coverage_band(n: int, level: float) -> tuple[float, float]:
    """Coverage fractions a calibrated interval gives with 99% probability on ``n`` rows (normal approximation, at least ±0.05)."""
    half = max(2.576 * math.sqrt(level * (1 - level) / n), 0.05)
    return level - half, level + half


def verdict(metrics: dict[str, Any]) -> str:
    """One line: does the model fit the held-out rows, judged against the baseline?"""
    if "test_rmse" in metrics:
        fraction = metrics.get("noise_variance_fraction", math.nan)
        if fraction > UNDERFIT_NOISE_FRACTION:
            return f"underfit: the noise explains {fraction:.0%} of the target's variance"
        scores = (
            f"RMSE {metrics['test_rmse']:.4g} vs {metrics['baseline_rmse']:.4g}, "
            f"log-likelihood {metrics['test_log_likelihood']:.4g} vs {metrics['baseline_log_likelihood']:.4g}"
        )
        if metrics["test_rmse"] >= metrics["baseline_rmse"] and metrics["test_log_likelihood"] <= metrics["baseline_log_likelihood"]:
            return f"underfit: no better than a linear regression ({scores})"
        low, high = _coverage_band(metrics["num_test"], INTERVAL_LEVEL)
        covered = metrics["test_coverage_90"]
        if not low <= covered <= high:
            return f"miscalibrated: the 90% predictive interval covers {covered:.0%} of the test rows ({scores})"
        return f"fits: {scores} against a linear regression; the 90% interval covers {covered:.0%}"
    if metrics["test_accuracy"] <= metrics["baseline_accuracy"] and metrics["test_nll"] >= metrics["baseline_nll"]:
        return "underfit: no better than a logistic regression on accuracy or NLL"
    return "fits: beats the logistic baseline on held-out accuracy or NLL"
