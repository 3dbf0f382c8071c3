"""Tests for probgen/infer/diffusion/evaluate.py: the full bound against Pyro and against the exact NLL.

Statistical checks use ``Z_SCORE * standard error`` from tests/_stats.py (z = 4.5); each states its se.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from probgen.infer.diffusion import BoundResult, evaluate_bound
from probgen.models.diffusion import DiffusionChain, get_schedule
from tests._stats import Z_SCORE, iid_se_mean
from tests.infer.diffusion._common import DATA_VARIANCE, oracle_chain, pyro_elbo
from tests.models.diffusion._oracle import GaussianOracle


def test_evaluate_bound_matches_pyro_trace_mean_field_elbo():
    chain = oracle_chain(num_timesteps=8)
    x0 = torch.randn(4, 2) * math.sqrt(DATA_VARIANCE)
    pyro_mean, pyro_se = pyro_elbo(chain, chain.guide, x0)
    bound = evaluate_bound(chain, x0.repeat(500, 1), seed=0, progress_bar=False)
    totals = bound.per_example.reshape(500, 4).sum(1).numpy()
    # evaluate_bound's totals have sd ~20, so se ~0.9; tolerance 4.5 * hypot(se's)
    assert abs(totals.mean() - pyro_mean) < Z_SCORE * math.hypot(pyro_se, iid_se_mean(totals))


def test_bound_with_exact_denoiser_is_tight_and_above_the_nll():
    """Gaussian data and the exact denoiser: bound >= -log p(x) per example, and the gap is small."""
    variance = 0.125
    sched = get_schedule("linear", 200)
    chain = DiffusionChain(GaussianOracle(sched, variance), sched, event_shape=(2,))
    x0 = torch.randn(1000, 2) * math.sqrt(variance)
    bound = evaluate_bound(chain, x0, seed=1, progress_bar=False)
    nll = -torch.distributions.Normal(0.0, math.sqrt(variance)).log_prob(x0).sum(1)
    gap = (bound.per_example - nll).numpy()
    # per-example gap sd ~0.7, se ~0.02; the bound's expectation exceeds the NLL
    assert gap.mean() > -Z_SCORE * iid_se_mean(gap)
    assert gap.mean() < 0.1
    assert bound.bits_per_dim == pytest.approx(bound.nats / (2 * math.log(2)))
    assert bound.terms.shape == (201,)
    torch.testing.assert_close(bound.terms[-1], chain.prior_kl(x0).mean())
    assert bound.terms.sum().item() == pytest.approx(bound.nats)


def test_bound_result_is_a_frozen_record_of_seed_and_time():
    bound = evaluate_bound(oracle_chain(num_timesteps=4), torch.zeros(3, 2), seed=5, progress_bar=False)
    assert isinstance(bound, BoundResult) and bound.seed == 5 and bound.wall_time >= 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        bound.nats = 0.0  # type: ignore[misc]
    # the same seed gives the same bound
    again = evaluate_bound(oracle_chain(num_timesteps=4), torch.zeros(3, 2), seed=5, progress_bar=False)
    assert torch.equal(again.per_example, bound.per_example)
