"""SVI: exactness on Bayesian linear regression, minibatch scaling, resuming, early stopping."""

from __future__ import annotations

import pyro
import pytest
import torch
from torch import nn

from probgen import BNN, SVI, SVIState, fit_svi
from probgen.infer.svi import GUIDES
from tests._blr import make_blr, stack_theta
from tests._stats import Z_SCORE


def _mlp() -> BNN:
    return BNN(nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)))


def _toy(n: int = 64):
    x = torch.linspace(-1, 1, n).unsqueeze(-1)
    return x, torch.sin(3 * x[:, 0]) + 0.1 * torch.randn(n)


@pytest.mark.slow
def test_full_covariance_svi_recovers_bayesian_linear_regression():
    """A full-covariance Gaussian guide contains the exact posterior, so SVI must find it."""
    problem = make_blr()
    result = fit_svi(
        problem.model, problem.x, problem.y,
        guide="mvn", num_steps=3000, lr=0.02, final_lr=2e-4, num_samples=20000, seed=0, progress_bar=False,
    )  # fmt: skip
    theta = stack_theta(result.get_samples(group_by_chain=True))[0]  # (20000, 3), independent draws
    sd = problem.cov.diagonal().sqrt()
    # Two error sources. Monte Carlo: independent draws, SE = sd / sqrt(20000) ~ 0.007 sd.
    # Optimisation: Adam decayed to lr 2e-4 leaves the guide jittering about its optimum by about
    # that step size (~0.003 sd here); we allow 0.1 posterior sd for it, far below the ~1 sd error
    # of a wrong posterior.
    mc_se = sd / 20000**0.5
    assert ((theta.mean(0) - problem.mean).abs() < Z_SCORE * mc_se + 0.1 * sd).all()
    # Covariance, in correlation units: MC SE of a correlation ~ 1/sqrt(20000) ~ 0.007.
    est_cov = torch.cov(theta.T)
    scale = torch.outer(sd, sd)
    assert ((est_cov - problem.cov).abs() / scale < Z_SCORE * 0.0071 + 0.1).all()
    # and the variances themselves within 20% (a mean-field or wrong fit misses by far more here)
    assert ((est_cov.diagonal() / problem.cov.diagonal() - 1).abs() < 0.2).all()


def test_minibatch_loss_is_an_unbiased_full_data_estimate():
    """With batch_size B the plate scales the likelihood by N/B: the mean over many minibatch
    losses equals the full-data loss with the same guide, up to Monte Carlo error."""
    x, y = _toy(64)
    svi = SVI(_mlp(), batch_size=16)
    svi.init(x, y, seed=0)
    torch.manual_seed(1)
    full = torch.tensor([svi.evaluate(x, y, num_particles=1) for _ in range(400)])
    batch = []
    for _ in range(400):
        with torch.no_grad(), pyro.settings.context(module_local_params=True):
            batch.append(float(svi.elbo.differentiable_loss(svi.model, svi.guide, x, y, subsample_size=16)))
    batch_t = torch.tensor(batch)
    se = (full.var() / 400 + batch_t.var() / 400).sqrt()
    assert (full.mean() - batch_t.mean()).abs() < Z_SCORE * se


@pytest.mark.parametrize("guide", sorted(GUIDES), ids=lambda g: f"guide={g}")
def test_every_guide_fits_and_draws_one_chain(guide):
    x, y = _toy(32)
    result = fit_svi(_mlp(), x, y, guide=guide, num_steps=30, num_samples=25, seed=0, progress_bar=False)
    samples = result.get_samples(group_by_chain=True)
    assert samples["0.weight"].shape == (1, 25, 8, 1)
    assert samples["noise_scale"].shape == (1, 25)
    assert (samples["noise_scale"] > 0).all()
    assert result.losses.shape == (30,)
    assert result.get_sample_stats() == {}


def test_a_decaying_schedule_split_over_two_calls_is_the_schedule_of_one_call():
    """With final_lr, the first call names the whole horizon (decay_steps); the state keeps it."""
    x, y = _toy(32)
    kwargs = dict(num_samples=10, progress_bar=False, batch_size=8, lr=0.05, final_lr=1e-3, seed=3)
    whole = fit_svi(_mlp(), x, y, num_steps=40, **kwargs)
    first = fit_svi(_mlp(), x, y, num_steps=25, decay_steps=40, **kwargs)
    assert first.state.decay_steps == 40
    second = fit_svi(_mlp(), x, y, num_steps=15, init_state=first.state, **kwargs)
    assert torch.equal(second.losses, whole.losses)
    for name in whole.state.guide_state:
        assert torch.equal(second.state.guide_state[name], whole.state.guide_state[name]), name
    # without the horizon the first call decays over its own 25 steps: a different run
    alone = fit_svi(_mlp(), x, y, num_steps=25, **kwargs)
    assert not torch.equal(alone.losses[1:], first.losses[1:])


def test_resuming_reproduces_an_uninterrupted_run(tmp_path):
    x, y = _toy(32)
    kwargs = dict(num_samples=10, progress_bar=False, batch_size=8)
    whole = fit_svi(_mlp(), x, y, num_steps=40, seed=3, **kwargs)
    # the default learning rate decays over the run: the first call of a split run is told its length
    fit_svi(_mlp(), x, y, num_steps=25, decay_steps=40, seed=3, checkpoint=str(tmp_path / "svi.pt"), **kwargs)
    state = SVIState.load(str(tmp_path / "svi.pt"))
    assert state.step == 25
    second = fit_svi(_mlp(), x, y, num_steps=15, seed=3, init_state=state, **kwargs)
    assert torch.allclose(second.losses, whole.losses)
    assert second.state.step == 40
    for name in whole.state.guide_state:
        assert torch.equal(second.state.guide_state[name], whole.state.guide_state[name]), name


def test_resuming_with_another_guide_is_refused():
    x, y = _toy(16)
    first = fit_svi(_mlp(), x, y, num_steps=5, num_samples=5, seed=0, progress_bar=False)
    with pytest.raises(ValueError, match="guide='normal'"):
        fit_svi(_mlp(), x, y, guide="lowrank", num_steps=5, init_state=first.state, progress_bar=False)


def test_early_stopping_ends_a_converged_run():
    x, y = _toy(32)
    result = fit_svi(
        _mlp(), x, y, num_steps=5000, lr=0.05, patience=3, eval_every=50, min_delta=1.0, seed=0, progress_bar=False
    )
    assert result.stopped_early
    assert result.losses.shape[0] < 5000


def test_early_stopping_on_validation_data():
    x, y = _toy(48)
    result = fit_svi(
        _mlp(), x[::2], y[::2], num_steps=3000, patience=2, eval_every=50, min_delta=5.0,
        validation=(x[1::2], y[1::2]), seed=0, progress_bar=False,
    )  # fmt: skip
    assert result.stopped_early


def test_svi_is_reproducible_and_leaves_the_model_untouched():
    x, y = _toy(32)
    model = BNN(nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)), likelihood=None)
    a = fit_svi(model, x, y, num_steps=20, num_samples=5, seed=11, progress_bar=False)
    b = fit_svi(model, x, y, num_steps=20, num_samples=5, seed=11, progress_bar=False)
    assert torch.equal(a.losses, b.losses)
    assert torch.equal(a.samples["0.weight"], b.samples["0.weight"])
    assert a.model is not model and a.seed == 11


def test_parameters_stay_out_of_the_global_param_store():
    x, y = _toy(16)
    fit_svi(_mlp(), x, y, num_steps=3, num_samples=3, seed=0, progress_bar=False)
    assert len(pyro.get_param_store()) == 0


def _fixed_guide_svi(fast: bool, model: BNN, x, y) -> SVI:
    svi = SVI(model, fast_path=fast, init_scale=0.3)
    svi.init(x, y, seed=0)
    return svi


def test_fast_path_engages_only_where_it_is_exact():
    model = _mlp()
    assert SVI(model).fast_path
    assert not SVI(model, guide="lowrank").fast_path
    assert not SVI(model, elbo="trace").fast_path
    assert not SVI(model, fast_path=False).fast_path


@pytest.mark.parametrize("batch", [None, 8], ids=["full", "minibatch"])
def test_fast_path_matches_pyro_trace_mean_field_elbo(batch):
    """Same guide parameters: the fast estimator and Pyro's TraceMeanField_ELBO have the same mean
    value and the same mean gradient."""
    x, y = _toy(32)
    model = _mlp()
    fast, slow = _fixed_guide_svi(True, model, x, y), _fixed_guide_svi(False, model, x, y)
    slow.guide.load_state_dict(fast.guide.state_dict())
    torch.manual_seed(5)
    draws = {"fast": [], "slow": []}
    grads = {"fast": [], "slow": []}
    for name, svi in (("fast", fast), ("slow", slow)):
        param = dict(svi.guide.named_parameters())["locs.2.weight_unconstrained"]
        for _ in range(300):
            loss = svi.loss(x, y, subsample_size=batch)
            (grad,) = torch.autograd.grad(loss, param)
            draws[name].append(float(loss.detach()))
            grads[name].append(grad.flatten())
    a, b = torch.tensor(draws["fast"]), torch.tensor(draws["slow"])
    se = (a.var() / a.numel() + b.var() / b.numel()).sqrt()
    assert (a.mean() - b.mean()).abs() < Z_SCORE * se
    ga, gb = torch.stack(grads["fast"]), torch.stack(grads["slow"])
    se_g = (ga.var(0) / ga.shape[0] + gb.var(0) / gb.shape[0]).sqrt()
    # eight gradient coordinates, each within 4.5 SE (about 6e-5 family-wise failure rate)
    assert ((ga.mean(0) - gb.mean(0)).abs() < Z_SCORE * se_g).all()


@pytest.mark.slow
def test_mean_field_svi_finds_the_exact_mean_field_optimum():
    """For Bayesian linear regression the best fully factorised Gaussian has the posterior mean
    and variances 1 / Lambda_ii (the diagonal of the posterior precision)."""
    problem = make_blr()
    result = fit_svi(
        problem.model, problem.x, problem.y,
        num_steps=4000, lr=0.02, final_lr=2e-4, num_samples=20000, seed=0, progress_bar=False,
    )  # fmt: skip
    assert result.state is not None
    theta = stack_theta(result.get_samples(group_by_chain=True))[0]
    mf_var = 1 / torch.linalg.inv(problem.cov).diagonal()
    sd = mf_var.sqrt()
    # MC error of the mean of 20000 independent draws: sd / 141; optimisation jitter at lr 2e-4 is
    # ~0.003 sd (see the full-covariance test); allowance 0.1 sd as there.
    assert ((theta.mean(0) - problem.mean).abs() < Z_SCORE * sd / 20000**0.5 + 0.1 * sd).all()
    # the variances: relative MC SE of a variance from n draws is sqrt(2/n) = 0.01
    rel = theta.var(0) / mf_var - 1
    assert (rel.abs() < Z_SCORE * 0.01 + 0.1).all()
    # and clearly below the exact marginal variances where the posterior is correlated
    assert (mf_var <= problem.cov.diagonal() + 1e-12).all()


def test_a_learned_noise_starts_at_a_tenth_of_the_targets_sd():
    """Started from its prior, the noise explains the data before the network bends (a flat fit)."""
    from probgen.likelihoods import INITIAL_NOISE_FRACTION, Gaussian

    x, y = _toy(64)
    y = 7.0 * y
    svi = SVI(_mlp())
    svi.init(x, y, seed=0)
    loc, _ = svi.guide._get_loc_and_scale("noise_scale")
    assert float(loc.detach().exp()) == pytest.approx(INITIAL_NOISE_FRACTION * float(y.std()), rel=1e-6)
    assert svi.init_scale == 1e-3  # a BNN's guide starts near a point estimate
    assert Gaussian(noise_scale=0.3).initial_globals(y) == {}  # a known noise has nothing to start
