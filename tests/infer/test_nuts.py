"""probgen's batched NUTS: tree bookkeeping, exact Gaussian targets, warnings, and stock Pyro's posterior."""

from __future__ import annotations

import math
import warnings

import arviz as az
import numpy as np
import pytest
import torch
from torch import nn

from probgen import BNN, Gaussian, GaussianPrior, fit_nuts
from probgen.infer import _nuts_util as util
from probgen.infer import nuts
from probgen.infer.mcmc import warn_about_draws
from probgen.infer.nuts import NOISE_BLOCK, STAT_NAMES, NUTSConfig, _Run, sample_nuts
from tests._stats import Z_SCORE, mcse_mean

SCALES = torch.tensor([0.1, 0.5, 1.0, 2.0])


def _gaussian(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent N(0, SCALES^2): log density and gradient, batched over rows."""
    return -0.5 * ((u / SCALES) ** 2).sum(-1), -u / SCALES**2


def _config(**kw) -> NUTSConfig:
    base = dict(num_warmup=150, num_samples=400, num_chains=4, target_accept_prob=0.8, max_tree_depth=10, progress_bar=False)
    return NUTSConfig(**{**base, **kw})


def test_checkpoints_hold_the_start_of_every_subtree_a_leaf_completes():
    """Replaying the slot writes of leaves 0..n, the slots [lo, hi] checked at odd leaf n hold
    exactly the first leaves of the balanced subtrees of sizes 2, 4, ... that end at n."""
    for n in range(2**7):
        slots: dict[int, int] = {}
        for m in range(n + 1):
            lo, hi = util.checkpoint_indices(m)
            if m % 2 == 0:
                assert lo == hi + 1  # even leaves check nothing and store into slot hi
                slots[hi] = m
        lo, hi = util.checkpoint_indices(n)
        trailing = len(bin(n)) - len(bin(n).rstrip("1")) if n % 2 else 0
        expected = {n - 2**s + 1 for s in range(1, trailing + 1)}
        assert {slots[k] for k in range(lo, hi + 1)} == expected, n


def test_slow_windows_cover_stan_layout_for_short_warmups():
    assert util.slow_windows(10) == []
    assert util.slow_windows(200) == [(75, 100), (100, 150)]
    windows = util.slow_windows(300)
    assert windows[0][0] == 75 and windows[-1][1] == 250


def test_sample_nuts_recovers_an_anisotropic_gaussian_and_adapts_the_metric():
    out = sample_nuts(_gaussian, torch.zeros(4, 4), _config(), seed=1)
    draws = out.draws.numpy()
    assert draws.shape == (4, 400, 4)
    for i, scale in enumerate(SCALES.tolist()):
        x = draws[..., i] / scale
        # unit variance after scaling, ESS >= 1000 per coordinate: MCSE <= 0.03, bound ~ 0.14
        assert abs(x.mean()) < Z_SCORE * mcse_mean(x), i
        assert abs((x**2).mean() - 1) < Z_SCORE * mcse_mean(x**2), i
    # the adapted inverse mass matrix estimates the variances (from one 25-draw window per chain
    # here, so each chain's estimate is rough; unadapted, the ratio would range from 1/4 to 100)
    log_ratio = (out.state.inverse_mass / SCALES**2).log().mean(0)
    assert (log_ratio.abs() < math.log(2)).all(), log_ratio
    stats = out.sample_stats
    assert set(stats) == set(STAT_NAMES)
    assert not stats["diverging"].any()
    # dual averaging aims at 0.8; Stan's averaged final step size lands a little above it
    assert 0.7 < float(stats["acceptance_rate"].mean()) < 0.97
    assert (stats["n_steps"] <= 2 ** stats["tree_depth"] - 1).all()
    assert int(out.num_leapfrog.sum()) >= int(stats["n_steps"].sum())


def test_sample_nuts_is_reproducible_and_seeds_differ():
    cfg = _config(num_warmup=30, num_samples=20, num_chains=2)
    a = sample_nuts(_gaussian, torch.zeros(2, 4), cfg, seed=5)
    b = sample_nuts(_gaussian, torch.zeros(2, 4), cfg, seed=5)
    c = sample_nuts(_gaussian, torch.zeros(2, 4), cfg, seed=6)
    assert torch.equal(a.draws, b.draws)
    assert not torch.equal(a.draws, c.draws)


def test_continuing_from_the_adapted_state_needs_no_warmup():
    first = sample_nuts(_gaussian, torch.zeros(4, 4), _config(num_samples=10), seed=2)
    state = first.state
    more = sample_nuts(
        _gaussian, state.position, _config(num_warmup=0), seed=3, step_size=state.step_size, inverse_mass=state.inverse_mass
    )
    assert torch.equal(more.sample_stats["step_size"][:, 0], state.step_size)
    x = more.draws.numpy()[..., 3] / 2.0
    # as above: unit variance, ESS >= 1000, so 4.5 * MCSE ~ 0.14
    assert abs((x**2).mean() - 1) < Z_SCORE * mcse_mean(x**2)


def _small_bnn(noise_scale: float | None = None) -> tuple[BNN, torch.Tensor, torch.Tensor]:
    """A 1-3-1 tanh BNN on 6 noisy points: small enough for stock Pyro NUTS in a test."""
    gen = torch.Generator().manual_seed(0)
    x = torch.linspace(-2, 2, 6).reshape(-1, 1)
    y = torch.sin(x[:, 0]) + torch.randn(6, generator=gen)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 3), nn.Tanh(), nn.Linear(3, 1))
    return BNN(net, GaussianPrior(1.0, fan_in=True), Gaussian(noise_scale, prior_scale=0.5)), x, y


@pytest.mark.filterwarnings("ignore:.*draws diverged:RuntimeWarning")  # a 40-iteration warm-up may leave a few
def test_fit_nuts_uses_the_flat_backend_and_its_statistics_reach_arviz():
    model, x, y = _small_bnn()
    result = fit_nuts(model, x, y, num_warmup=40, num_samples=30, num_chains=2, seed=0, progress_bar=False)
    assert result.backend == "flat"
    assert result.get_samples(group_by_chain=True)["0.weight"].shape == (2, 30, 3, 1)
    stats = result.get_sample_stats()
    assert stats["diverging"].dtype == torch.bool
    assert stats["tree_depth"].dtype == torch.long and stats["n_steps"].dtype == torch.long
    idata = result.to_arviz()
    assert set(STAT_NAMES) <= set(idata.sample_stats.data_vars)
    assert idata.sample_stats["energy"].shape == (2, 30)
    assert np.isfinite(az.bfmi(idata)).all()


def test_saturated_trees_warn_at_the_callers_line():
    model, x, y = _small_bnn()
    with pytest.warns(RuntimeWarning, match="reached max_tree_depth=1") as record:
        fit_nuts(model, x, y, num_warmup=10, num_samples=10, num_chains=1, max_tree_depth=1, seed=0, progress_bar=False)
    assert record[0].filename == __file__


def test_divergences_warn_with_the_remedy():
    stats = {"diverging": torch.tensor([[True, False]]), "tree_depth": torch.tensor([[3, 3]])}
    with pytest.warns(RuntimeWarning, match="1 of 2 draws diverged.*target_accept_prob"):
        warn_about_draws(stats, _config().max_tree_depth, stacklevel=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_about_draws({"diverging": torch.zeros(1, 2, dtype=torch.bool), "tree_depth": torch.ones(1, 2)}, _config().max_tree_depth, stacklevel=1)


@pytest.mark.slow
def test_flat_and_stock_pyro_agree_on_the_predictive_distribution():
    model, x, y = _small_bnn(noise_scale=1.0)  # known noise: about 12 leapfrog steps per draw
    x_test = torch.tensor([[-2.5], [0.0], [1.0], [3.0]])
    flat = fit_nuts(model, x, y, backend="flat", num_warmup=150, num_samples=400, num_chains=4, seed=0, progress_bar=False)
    ref = fit_nuts(model, x, y, backend="pyro", num_warmup=150, num_samples=200, num_chains=2, seed=1, progress_bar=False)
    f_flat = flat.predict(x_test).f[..., 0].numpy()  # E[y | x, theta] per draw, (chain, draw, 4)
    f_ref = ref.predict(x_test).f[..., 0].numpy()
    for a, b in [(f_flat[..., i], f_ref[..., i]) for i in range(4)]:
        # predictive sd of f ~ 0.5-1.5; ESS ~ 400 (Pyro) and ~ 1000 (flat): MCSE ~ 0.05, bound ~ 0.25
        se = math.hypot(mcse_mean(a), mcse_mean(b))
        assert abs(a.mean() - b.mean()) < Z_SCORE * se
        # second moments: the predictive sd agrees too
        se2 = math.hypot(mcse_mean(a**2), mcse_mean(b**2))
        assert abs((a**2).mean() - (b**2).mean()) < Z_SCORE * se2


@pytest.mark.slow
def test_the_compiled_inner_loop_samples_the_same_distribution():
    out = sample_nuts(_gaussian, torch.zeros(4, 4), _config(num_warmup=200, num_samples=300), seed=1, compile=True)
    for i, scale in enumerate(SCALES.tolist()):
        x = out.draws.numpy()[..., i] / scale
        # unit variance, ESS >= 600 per coordinate: MCSE <= 0.04, bound ~ 0.18
        assert abs(x.mean()) < Z_SCORE * mcse_mean(x), i
        assert abs((x**2).mean() - 1) < Z_SCORE * mcse_mean(x**2), i


@pytest.mark.slow
def test_compiled_blocks_replay_the_iterations_one_at_a_time():
    """A compiled block runs many iterations per call and hands back exactly where the caller must
    act (a draw to record, a slow window's end), so on the same random numbers it takes the path of
    the compiled iteration called once per step: the same draws, statistics, metric and gradients.
    (Eager and compiled runs part early, where rounding flips one of NUTS's discrete choices.)"""
    config = _config(num_warmup=150, num_samples=100, num_chains=3)  # 150 iterations hold two slow windows
    single = _Run(_gaussian, torch.zeros(3, 4), config, 3, None, None, True, blocks=False)  # one call per step
    one = single.run(None)
    run = _Run(_gaussian, torch.zeros(3, 4), config, 3, None, None, True)
    out = run.run(None)
    assert single._kernel is not None and single.calls == single.iterations
    assert run._block_kernel is not None and run.iterations > 5 * run.calls  # blocks, not single iterations
    assert out.compiled and out.num_gradients == one.num_gradients
    torch.testing.assert_close(out.draws, one.draws, rtol=1e-9, atol=1e-9)
    for name in STAT_NAMES:
        torch.testing.assert_close(out.sample_stats[name], one.sample_stats[name], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out.state.inverse_mass, one.state.inverse_mass, rtol=1e-9, atol=1e-9)
    assert 0 < run._block_next <= NOISE_BLOCK


def test_run_chains_compiles_in_blocks_only_for_costly_densities(monkeypatch):
    from probgen.infer._flat import compile_bnn

    seen: list[bool] = []
    init = nuts._Run.__init__

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        seen.append(self.blocks)

    monkeypatch.setattr(nuts._Run, "__init__", spy)
    config = _config(num_warmup=5, num_samples=5, num_chains=2, num_workers=1)
    for n, hidden in [(10, 2), (200, 50)]:  # work n * dim: 70 and 30,200 against BLOCK_MIN_WORK = 10,000
        model = BNN(nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, 1)), likelihood=Gaussian())
        x = torch.linspace(-1, 1, n)[:, None]
        density = compile_bnn(model, x, torch.sin(3 * x[:, 0]))
        nuts.run_chains(density, config, 0, compile=False)
    assert seen == [False, True]
