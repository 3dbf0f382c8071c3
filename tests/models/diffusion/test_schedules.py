"""Tests for probgen/models/diffusion/schedules.py: the beta schedules and their derived quantities."""

from __future__ import annotations

import math

import pytest
import torch

from probgen.models.diffusion import (
    SCHEDULE_NAMES,
    cosine_schedule,
    get_schedule,
    linear_schedule,
    log_snr_schedule,
    make_schedule,
)


def test_linear_schedule_matches_ddpm_at_1000_steps():
    betas = linear_schedule(1000)
    assert betas.dtype == torch.float64
    assert betas.shape == (1000,)
    assert float(betas[0]) == pytest.approx(1e-4)
    assert float(betas[-1]) == pytest.approx(0.02)
    assert bool((betas.diff() > 0).all())


@pytest.mark.parametrize("num_timesteps", [100, 250, 2000])
def test_linear_schedule_rescales_with_num_timesteps(num_timesteps):
    betas = linear_schedule(num_timesteps)
    scale = 1000 / num_timesteps
    assert float(betas[0]) == pytest.approx(1e-4 * scale)
    assert float(betas[-1]) == pytest.approx(0.02 * scale)
    # rescaling keeps the chain's end close to N(0, I): alpha_bar_T stays tiny
    assert float(torch.cumprod(1 - betas, 0)[-1]) < 1e-3


@pytest.mark.parametrize("num_timesteps", [2, 7, 50, 1000])
def test_cosine_schedule_reproduces_alpha_bar(num_timesteps):
    betas = cosine_schedule(num_timesteps)
    assert betas.dtype == torch.float64
    assert float(betas.max()) <= 0.999
    s = 0.008
    f = [math.cos((t / num_timesteps + s) / (1 + s) * math.pi / 2) ** 2 for t in range(num_timesteps + 1)]
    expected = torch.tensor([f[t] / f[0] for t in range(1, num_timesteps + 1)], dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    unclipped = betas < 0.999
    # wherever no earlier beta was clipped, alpha_bar_t is the cosine formula exactly
    ok = torch.cumprod(unclipped.long(), 0).bool()
    torch.testing.assert_close(alphas_cumprod[ok], expected[ok], rtol=1e-12, atol=1e-14)
    assert float(betas[-1]) == pytest.approx(0.999)


@pytest.mark.parametrize("num_timesteps", [3, 10, 100])  # at T = 2 the single jump exceeds the 0.999 clip
def test_log_snr_schedule_is_linear_in_log_snr(num_timesteps):
    betas = log_snr_schedule(num_timesteps, log_snr_start=6.0, log_snr_end=-8.0)
    ab = torch.cumprod(1 - betas, 0)
    log_snr = torch.log(ab / (1 - ab))
    torch.testing.assert_close(log_snr, torch.linspace(6.0, -8.0, num_timesteps, dtype=torch.float64))
    with pytest.raises(ValueError, match="log_snr_end must be below log_snr_start"):
        log_snr_schedule(10, log_snr_start=-1.0, log_snr_end=2.0)


def test_make_schedule_derived_quantities():
    betas = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    schedule = make_schedule(betas)
    ab = torch.tensor([0.9, 0.72, 0.504], dtype=torch.float64)
    torch.testing.assert_close(schedule.alphas_cumprod, ab)
    torch.testing.assert_close(schedule.alphas_cumprod_prev, torch.tensor([1.0, 0.9, 0.72], dtype=torch.float64))
    # Ho et al. (2020) eq. 7
    expected_var = betas * (1 - schedule.alphas_cumprod_prev) / (1 - ab)
    torch.testing.assert_close(schedule.posterior_variance, expected_var)
    assert float(schedule.posterior_variance[0]) == 0.0
    assert float(schedule.posterior_log_variance_clipped[0]) == pytest.approx(math.log(float(expected_var[1])))
    assert schedule.num_timesteps == 3


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_get_schedule_by_name(name):
    assert get_schedule(name, 20).num_timesteps == 20


def test_schedule_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown schedule 'cosin'; expected one of 'linear', 'cosine', 'log_snr'"):
        get_schedule("cosin", 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_timesteps must be at least 2"):
        linear_schedule(1)
    with pytest.raises(TypeError, match="num_timesteps must be an int"):
        cosine_schedule(10.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"betas must lie in \(0, 1\)"):
        make_schedule(torch.tensor([0.1, 1.5]))
