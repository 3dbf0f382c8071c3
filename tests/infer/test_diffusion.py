"""Tests for probgen/infer/diffusion.py: the ELBO estimator against Pyro, training, evaluation, samplers.

Statistical checks use ``Z_SCORE * standard error`` from tests/_stats.py (z = 4.5); each states its se.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyro
import pytest
import torch

from probgen.datasets.toy2d import load_8gaussians
from probgen.infer.diffusion import (
    TimestepSampler,
    ddim_step,
    energy_distance,
    estimate_bound,
    evaluate_bound,
    fit_diffusion,
    gaussian_nll,
    load_train_state,
    sample_ancestral,
    sample_conditional,
    sample_ddim,
)
from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
from tests._stats import Z_SCORE, iid_se_mean
from tests.models.diffusion._oracle import GaussianOracle

DATA_VARIANCE = 0.5


def _oracle_chain(num_steps=8, variance="fixed_large", scale=0.8, schedule="cosine"):
    """A chain whose denoiser is the exact one for N(0, 0.5 I) data, mis-scaled by ``scale``."""
    sched = get_schedule(schedule, num_steps)
    return DiffusionChain(GaussianOracle(sched, DATA_VARIANCE, scale), sched, event_shape=(2,), variance=variance)


def _pyro_elbo(chain, guide, x0, elbo_class=pyro.infer.TraceMeanField_ELBO, repeats=30, particles=200):
    """Mean and se of Pyro's loss (negative ELBO, summed over x0's rows) from independent repeats."""
    elbo = elbo_class(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    with torch.no_grad():
        values = np.array([elbo.loss(chain.model, guide, x0) for _ in range(repeats)])
    return values.mean(), iid_se_mean(values)


def _estimator(chain, x0, step_probs=None, repeats=4000):
    """Mean and se of the per-t estimator, summed over x0's rows, from ``repeats`` independent draws."""
    with torch.no_grad():
        losses = estimate_bound(chain, x0.repeat(repeats, 1), step_probs=step_probs).loss
    totals = losses.reshape(repeats, x0.shape[0]).sum(1).numpy()
    return totals.mean(), iid_se_mean(totals)


@pytest.mark.parametrize("variance", ["fixed_large", "fixed_small"])
@pytest.mark.parametrize("weighting", ["uniform", "importance"])
def test_per_t_estimator_matches_pyro_trace_mean_field_elbo(variance, weighting):
    chain = _oracle_chain(num_steps=8, variance=variance)
    x0 = torch.randn(8, 2) * math.sqrt(DATA_VARIANCE)
    probs = None
    if weighting == "importance":
        probs = torch.arange(1, 9, dtype=torch.float64).flip(0)
        probs = probs / probs.sum()
    pyro_mean, pyro_se = _pyro_elbo(chain, chain.guide, x0)
    est_mean, est_se = _estimator(chain, x0, probs)
    # se's are ~1 (Pyro, 30 x 200 particles) and ~3-8 (estimator, 4000 draws) on values ~300-400
    assert abs(est_mean - pyro_mean) < Z_SCORE * math.hypot(pyro_se, est_se)


def test_evaluate_bound_matches_pyro_trace_mean_field_elbo():
    chain = _oracle_chain(num_steps=8)
    x0 = torch.randn(4, 2) * math.sqrt(DATA_VARIANCE)
    pyro_mean, pyro_se = _pyro_elbo(chain, chain.guide, x0)
    bound = evaluate_bound(chain, x0.repeat(500, 1), seed=0, progress_bar=False)
    totals = bound.per_example.reshape(500, 4).sum(1).numpy()
    # evaluate_bound's totals have sd ~20, so se ~0.9; tolerance 4.5 * hypot(se's)
    assert abs(totals.mean() - pyro_mean) < Z_SCORE * math.hypot(pyro_se, iid_se_mean(totals))


def test_forward_order_guide_breaks_the_analytic_kl_but_not_trace_elbo():
    chain = _oracle_chain(num_steps=8)
    x0 = torch.randn(8, 2) * math.sqrt(DATA_VARIANCE)
    right_mean, right_se = _pyro_elbo(chain, chain.guide, x0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Failed to verify mean field restriction")
        wrong_mean, wrong_se = _pyro_elbo(chain, chain.forward_guide, x0)
    trace_mean, trace_se = _pyro_elbo(chain, chain.forward_guide, x0, pyro.infer.Trace_ELBO, particles=1000)
    # the forward-order analytic-KL value is off by ~10% (about 40 nats here), far beyond 4.5 se (~5)
    assert abs(wrong_mean - right_mean) > Z_SCORE * math.hypot(right_se, wrong_se)
    # the same forward-order guide with Monte Carlo log-ratios is right
    assert abs(trace_mean - right_mean) < Z_SCORE * math.hypot(right_se, trace_se)


def test_forward_order_guide_is_flagged_by_pyro():
    chain = _oracle_chain(num_steps=3)
    with pytest.warns(UserWarning, match="Failed to verify mean field restriction"):
        pyro.infer.TraceMeanField_ELBO().loss(chain.model, chain.forward_guide, torch.zeros(2, 2))


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


def test_timestep_sampler_importance_weights():
    sampler = TimestepSampler(5, "importance", history=2)
    torch.testing.assert_close(sampler.probs(), torch.full((5,), 0.2, dtype=torch.float64))
    sampler.update(torch.tensor([1, 2, 3, 4, 5] * 2), torch.tensor([1.0, 1.0, 1.0, 1.0, 4.0] * 2))
    probs = sampler.probs()
    assert float(probs.sum()) == pytest.approx(1.0)
    assert float(probs[4]) == pytest.approx(0.999 * 0.5 + 0.001 * 0.2)
    t, weights = sampler.sample(1000, torch.Generator().manual_seed(0))
    # the vectorised ring buffer keeps what a step-by-step loop keeps
    steps, values = torch.randint(1, 6, (40,)), torch.rand(40)
    squares, counts = sampler.squares.clone(), sampler.counts.clone()
    for step, value in zip(steps.tolist(), values.tolist()):
        squares[step - 1, counts[step - 1] % 2] = value**2
        counts[step - 1] += 1
    sampler.update(steps, values)
    torch.testing.assert_close(sampler.squares, squares)
    assert torch.equal(sampler.counts, counts)
    torch.testing.assert_close(weights, 1 / (5 * probs[t - 1]))
    with pytest.raises(ValueError, match="unknown timestep_sampling 'imp'"):
        TimestepSampler(5, "imp")  # type: ignore[arg-type]


def test_short_training_on_8gaussians_beats_a_gaussian_and_samples_well():
    data = load_8gaussians(num_train=5000, num_val=0, num_test=1000)
    chain = DiffusionChain(
        MLPDenoiser(2, hidden_dim=64, num_blocks=2).float(), get_schedule("linear", 50), event_shape=(2,)
    )
    train, test = data.train.float(), data.test.float()
    result = fit_diffusion(
        chain, train, num_steps=500, batch_size=256, lr=3e-3, seed=0, ema_decay=0.99, progress_bar=False
    )
    bound = evaluate_bound(result.chain, test, seed=0, progress_bar=False)
    baseline = gaussian_nll(train, test)
    # bound se ~0.06 nats; the single Gaussian's NLL is ~4.26 nats
    assert bound.nats + Z_SCORE * bound.nats_se < baseline
    assert bound.nats > data.entropy - Z_SCORE * bound.nats_se
    samples = sample_ancestral(result.chain, 1000, seed=0).samples
    gaussian = torch.distributions.MultivariateNormal(train.double().mean(0), torch.cov(train.double().T))
    model_distance = energy_distance(samples, test)
    # a single Gaussian's samples are ~0.085 away, two held-out samples ~0.002; the model's ~0.005
    assert model_distance < 0.15 * energy_distance(gaussian.sample((1000,)), test)


def test_fit_leaves_the_input_untouched_and_records_the_seed():
    chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8, num_blocks=1), get_schedule("linear", 10), event_shape=(2,))
    before = {k: v.clone() for k, v in chain.net.state_dict().items()}
    result = fit_diffusion(chain, torch.randn(50, 2), num_steps=3, batch_size=8, seed=None, progress_bar=False)
    for key, value in chain.net.state_dict().items():
        assert torch.equal(value, before[key])
    assert isinstance(result.seed, int) and result.state.config["seed"] == result.seed
    assert result.chain.net is not chain.net


@pytest.mark.parametrize("objective", ["elbo", "eps_mse"])
def test_resume_continues_exactly(objective, tmp_path):
    chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8, num_blocks=1), get_schedule("cosine", 10), event_shape=(2,))
    data = torch.randn(100, 2)
    options = dict(batch_size=32, seed=3, objective=objective, ema_decay=0.9, progress_bar=False)
    if objective == "elbo":
        options["timestep_sampling"] = "importance"
    whole = fit_diffusion(chain, data, num_steps=12, **options)
    path = tmp_path / "state.pt"
    first = fit_diffusion(chain, data, num_steps=5, checkpoint=path, checkpoint_every=5, **options)
    rest = fit_diffusion(chain, data, num_steps=7, resume_from=path, **{**options, "seed": None})
    assert torch.equal(torch.cat([first.losses, rest.losses]), whole.losses)
    for key, value in whole.chain.net.state_dict().items():
        assert torch.equal(rest.chain.net.state_dict()[key], value)
    assert rest.state.step == 12 and rest.seed == 3
    assert load_train_state(path).step == 5


def test_fit_errors_name_the_problem():
    chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("linear", 10), event_shape=(2,))
    with pytest.raises(ValueError, match="unknown objective 'elb'; expected one of 'elbo', 'eps_mse'"):
        fit_diffusion(chain, torch.randn(10, 2), num_steps=1, objective="elb")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"data must have shape \(N, 2\)"):
        fit_diffusion(chain, torch.randn(10, 3), num_steps=1)
    with pytest.raises(ValueError, match="needs objective='elbo'"):
        fit_diffusion(chain, torch.randn(10, 2), num_steps=1, objective="eps_mse", timestep_sampling="importance")
    with pytest.raises(ValueError, match="num_steps must be a positive int, got 0"):
        fit_diffusion(chain, torch.randn(10, 2), num_steps=0)
    state = fit_diffusion(chain, torch.randn(10, 2), num_steps=1, seed=0, progress_bar=False).state
    with pytest.raises(ValueError, match="resume_from was trained with objective='elbo'"):
        fit_diffusion(chain, torch.randn(10, 2), num_steps=1, objective="eps_mse", resume_from=state)


def _small_chain(variance="fixed_small"):
    net = MLPDenoiser(2, hidden_dim=16, num_blocks=1)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.5)
    return DiffusionChain(net, get_schedule("cosine", 10), event_shape=(2,), variance=variance)


def test_ddim_step_with_eta_one_is_the_ancestral_step():
    chain = _small_chain()
    x_t, noise = torch.randn(5, 2), torch.randn(5, 2)
    for t in range(2, 11):
        torch.testing.assert_close(ddim_step(chain, x_t, t, t - 1, eta=1.0, noise=noise), chain.p_sample(x_t, t, noise))


def test_ddim_eta_one_all_steps_matches_ancestral_in_distribution():
    chain = _small_chain()
    n = 4000
    ddim = sample_ddim(chain, n, eta=1.0, seed=1).samples
    ancestral = sample_ancestral(chain, n, seed=2).samples
    # compare means, variances and the correlation; se's from the draws
    def centred(x):
        return x - x.mean(0)

    for stat in (lambda x: x, lambda x: centred(x) ** 2, lambda x: centred(x)[:, :1] * centred(x)[:, 1:]):
        a, b = stat(ddim).numpy(), stat(ancestral).numpy()
        for j in range(a.shape[1]):
            se = math.hypot(iid_se_mean(a[:, j]), iid_se_mean(b[:, j]))
            assert abs(a[:, j].mean() - b[:, j].mean()) < Z_SCORE * se


def test_samplers_are_seeded_and_leave_global_rng_alone():
    chain = _small_chain()
    state = torch.get_rng_state()
    a = sample_ancestral(chain, 5, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.samples, sample_ancestral(chain, 5, seed=7).samples)
    d0 = sample_ddim(chain, 5, num_steps=4, eta=0.0, seed=1, return_chain=True)
    assert torch.equal(d0.samples, sample_ddim(chain, 5, num_steps=4, eta=0.0, seed=1).samples)
    assert d0.steps.tolist() == [10, 7, 4, 1, 0] and d0.trajectory is not None and d0.trajectory.shape == (5, 5, 2)
    with pytest.raises(ValueError, match=r"num_steps must lie in \[2, 10\]"):
        sample_ddim(chain, 5, num_steps=11)


def test_conditional_sampling_is_exact_for_independent_coordinates():
    """With an elementwise denoiser the coordinates are independent, so x[1] | x[0] = x[1]'s marginal."""
    sched = get_schedule("linear", 50)
    chain = DiffusionChain(GaussianOracle(sched, 0.3), sched, event_shape=(2,))
    n = 3000
    x_obs = torch.tensor([[1.2, 0.0]]).expand(n, 2)
    cond = sample_conditional(chain, x_obs, torch.tensor([True, False]), seed=0).samples
    marg = sample_ancestral(chain, n, seed=1).samples
    assert torch.equal(cond[:, 0], x_obs[:, 0])
    for stat in (lambda x: x[:, 1], lambda x: (x[:, 1] - x[:, 1].mean()) ** 2):
        a, b = stat(cond).numpy(), stat(marg).numpy()
        assert abs(a.mean() - b.mean()) < Z_SCORE * math.hypot(iid_se_mean(a), iid_se_mean(b))


def test_conditional_sampling_errors():
    chain = _small_chain()
    with pytest.raises(TypeError, match="mask must be a boolean tensor"):
        sample_conditional(chain, torch.zeros(3, 2), torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="does not broadcast"):
        sample_conditional(chain, torch.zeros(3, 2), torch.tensor([True, False, True]))


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
