"""Tests for probgen/infer/diffusion/sample.py and DiffusionSamples: the samplers, their shapes, ArviZ.

Statistical checks use ``Z_SCORE * standard error`` from tests/_stats.py (z = 4.5); each states its se.
"""

from __future__ import annotations

import math

import pytest
import torch

from probgen.infer.diffusion import (
    SAMPLERS,
    DiffusionSamples,
    ddim_step,
    sample_ancestral,
    sample_conditional,
    sample_ddim,
)
from probgen.models.diffusion import DiffusionChain, get_schedule
from tests._stats import Z_SCORE, iid_se_mean
from tests.infer.diffusion._common import small_chain
from tests.models.diffusion._oracle import GaussianOracle


def _rows(draws: DiffusionSamples) -> torch.Tensor:
    return draws.get_samples()["x_0"]


def test_ddim_step_with_eta_one_is_the_ancestral_step():
    chain = small_chain()
    x_t, noise = torch.randn(5, 2), torch.randn(5, 2)
    for t in range(2, 11):
        torch.testing.assert_close(ddim_step(chain, x_t, t, t - 1, eta=1.0, noise=noise), chain.p_sample(x_t, t, noise))


def test_ddim_eta_one_all_steps_matches_ancestral_in_distribution():
    chain = small_chain()
    n = 4000
    ddim = _rows(sample_ddim(chain, num_samples=n, eta=1.0, seed=1))
    ancestral = _rows(sample_ancestral(chain, num_samples=n, seed=2))
    # compare means, variances and the correlation; se's from the draws
    def centred(x):
        return x - x.mean(0)

    for stat in (lambda x: x, lambda x: centred(x) ** 2, lambda x: centred(x)[:, :1] * centred(x)[:, 1:]):
        a, b = stat(ddim).numpy(), stat(ancestral).numpy()
        for j in range(a.shape[1]):
            se = math.hypot(iid_se_mean(a[:, j]), iid_se_mean(b[:, j]))
            assert abs(a[:, j].mean() - b[:, j].mean()) < Z_SCORE * se


def test_samplers_are_seeded_and_leave_global_rng_alone():
    chain = small_chain()
    state = torch.get_rng_state()
    a = sample_ancestral(chain, num_samples=5, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.samples, sample_ancestral(chain, num_samples=5, seed=7).samples)
    d0 = sample_ddim(chain, num_samples=5, num_sampling_steps=4, eta=0.0, seed=1, return_chain=True)
    assert torch.equal(d0.samples, sample_ddim(chain, num_samples=5, num_sampling_steps=4, eta=0.0, seed=1).samples)
    assert d0.steps.tolist() == [10, 7, 4, 1, 0] and d0.trajectory is not None and d0.trajectory.shape == (1, 5, 5, 2)
    with pytest.raises(ValueError, match=r"num_sampling_steps must lie in \[2, 10\]"):
        sample_ddim(chain, num_samples=5, num_sampling_steps=11)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_returns_chain_draw_event_draws(sampler):
    chain = small_chain()
    options = dict(num_samples=4, num_chains=3, seed=0, return_chain=True)
    if sampler == "conditional":
        draws = sample_conditional(chain, torch.zeros(2, 2), torch.tensor([True, False]), **options)
        shape = (3, 4, 2, 2)  # one completion of each of the 2 observed rows per draw
    else:
        draws = sample_ancestral(chain, **options) if sampler == "ancestral" else sample_ddim(chain, **options)
        shape = (3, 4, 2)
    assert draws.sampler == sampler and draws.sample_dims == ("chain", "draw")
    assert draws.samples.shape == shape and (draws.num_chains, draws.num_draws) == (3, 4)
    assert draws.trajectory is not None and draws.trajectory.shape == shape[:2] + (len(draws.steps),) + shape[2:]
    assert torch.equal(draws.trajectory[:, :, -1], draws.samples)  # the last visited state is x_0
    grouped, flat = draws.get_samples(group_by_chain=True), draws.get_samples()
    assert torch.equal(grouped["x_0"], draws.samples) and flat["x_0"].shape == (12,) + shape[2:]
    assert torch.equal(flat["trajectory"][5], draws.trajectory[1, 1])
    assert draws.seed == 0 and draws.wall_time >= 0


def test_one_chain_of_draws_is_the_rows_of_the_model():
    """num_chains only reshapes: the same seed gives the same numbers in (chain, draw) order."""
    chain = small_chain()
    one = sample_ancestral(chain, num_samples=6, seed=3)
    two = sample_ancestral(chain, num_samples=3, num_chains=2, seed=3)
    assert torch.equal(one.samples.reshape(2, 3, 2), two.samples)


def test_conditional_sampling_is_exact_for_independent_coordinates():
    """With an elementwise denoiser the coordinates are independent, so x[1] | x[0] = x[1]'s marginal."""
    sched = get_schedule("linear", 50)
    chain = DiffusionChain(GaussianOracle(sched, 0.3), sched, event_shape=(2,))
    n = 3000
    x_obs = torch.tensor([[1.2, 0.0]])
    cond = sample_conditional(chain, x_obs, torch.tensor([True, False]), num_samples=n, seed=0).samples[0, :, 0]
    marg = sample_ancestral(chain, num_samples=n, seed=1).samples[0]
    assert torch.equal(cond[:, 0], x_obs[:, 0].expand(n))
    for stat in (lambda x: x[:, 1], lambda x: (x[:, 1] - x[:, 1].mean()) ** 2):
        a, b = stat(cond).numpy(), stat(marg).numpy()
        assert abs(a.mean() - b.mean()) < Z_SCORE * math.hypot(iid_se_mean(a), iid_se_mean(b))


def test_conditional_sampling_errors():
    chain = small_chain()
    with pytest.raises(TypeError, match="mask must be a boolean tensor"):
        sample_conditional(chain, torch.zeros(3, 2), torch.tensor([1, 0]), num_samples=1)
    with pytest.raises(ValueError, match="does not broadcast"):
        sample_conditional(chain, torch.zeros(3, 2), torch.tensor([True, False, True]), num_samples=1)
    with pytest.raises(TypeError, match="takes 1 positional argument"):  # sizes are keyword-only
        sample_ancestral(chain, 5)  # type: ignore[misc]
    with pytest.raises(ValueError, match="num_chains must be a positive int, got 0"):
        sample_ancestral(chain, num_samples=5, num_chains=0)
