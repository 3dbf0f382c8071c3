"""Tests for a Bayesian denoiser in probgen/infer/diffusion: its ELBO against Pyro's, fitting, resuming, the bound.

Statistical checks use ``Z_SCORE * standard error`` from tests/_stats.py (z = 4.5); each states its se.
The exact stand-in is the Gaussian oracle of tests/models/diffusion/_oracle.py with its one parameter,
``scale``, made Bayesian, so that the bound per point is small and well-behaved and the weight KL is
known in closed form.
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import torch

from probgen.infer.diffusion import (
    BayesianBoundResult,
    DiffusionTrainState,
    estimate_bayesian_loss,
    evaluate_bound,
    fit_diffusion,
    sample_ancestral,
    sample_conditional,
    sample_ddim,
)
from probgen.infer.diffusion._util import weight_seed
from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule, load_chain, save_chain
from probgen.priors import GaussianPrior
from tests._stats import Z_SCORE, iid_se_mean
from tests.models.diffusion._oracle import GaussianOracle

LAST_LAYER = GaussianPrior(1.0, fan_in=True, deterministic=("embed", "inp", "blocks", "cond"))
EVERYTHING_DETERMINISTIC = GaussianPrior(1.0, deterministic=("embed", "inp", "blocks", "out", "cond"))


def _oracle_chain(prior_scale: float, init_scale: float = 0.05, num_timesteps: int = 6) -> DiffusionChain:
    """The exact denoiser of N(0, 0.5 I) data with a Bayesian ``scale``: q = N(1, init_scale^2), p = N(0, prior_scale^2)."""
    schedule = get_schedule("cosine", num_timesteps)
    return DiffusionChain(
        GaussianOracle(schedule, 0.5, 1.0), schedule, event_shape=(2,), prior=GaussianPrior(prior_scale), init_scale=init_scale
    )


def _mlp_chain(prior=LAST_LAYER, init_scale=0.05, **condition) -> DiffusionChain:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = MLPDenoiser(2, hidden_dim=8, num_blocks=1, **condition)
    return DiffusionChain(net, get_schedule("cosine", 5), event_shape=(2,), prior=prior, init_scale=init_scale)


def test_the_minibatch_loss_is_pyros_trace_mean_field_elbo_with_the_kl_once_and_n_over_b():
    """The loss fit_diffusion minimises, times N, against TraceMeanField_ELBO(chain.model, chain.guide, subsample_size=B)."""
    chain = _oracle_chain(prior_scale=0.1)
    num_data, batch = 12, 3
    x0 = torch.randn(num_data, 2) * math.sqrt(0.5)
    kl = float(chain.weight_posterior.kl(chain.weight_priors()).detach())
    # KL(N(1, 0.05^2) || N(0, 0.1^2)) = log 2 + (0.25 + 100) / 2 - 1/2: about 50.3 nats
    assert kl == pytest.approx(math.log(2) + (0.25 + 100) / 2 - 0.5)
    elbo = pyro.infer.TraceMeanField_ELBO(num_particles=400, vectorize_particles=True, max_plate_nesting=1)
    with torch.no_grad():
        pyro_values = np.array([elbo.loss(chain.model, chain.guide, x0, subsample_size=batch) for _ in range(20)])
    pyro_mean, pyro_se = pyro_values.mean(), iid_se_mean(pyro_values)
    generator = torch.Generator().manual_seed(1)
    ours = []
    with torch.no_grad():  # minibatches drawn as fit_diffusion draws them (with replacement); 60 rows for a smaller se
        for _ in range(1500):
            index = torch.randint(num_data, (60,), generator=generator)
            ours.append(float(estimate_bayesian_loss(chain, x0[index], num_data=num_data, generator=generator).loss) * num_data)
    ours_mean, ours_se = float(np.mean(ours)), iid_se_mean(np.array(ours))
    # se's are ~1.5 (Pyro, 20 x 400 particles) and ~1.5 (ours, 1500 draws) on ~110 nats, of which ~60 are the data's
    tolerance = Z_SCORE * math.hypot(pyro_se, ours_se)
    assert abs(ours_mean - pyro_mean) < tolerance
    data_term = pyro_mean - kl
    # both halves are seen: counting the KL N times, or the minibatch without its N / B, is far outside the tolerance
    assert abs((ours_mean - kl + num_data * kl) - pyro_mean) > 10 * tolerance
    assert abs(kl + data_term * batch / num_data - pyro_mean) > 3 * tolerance


def test_fit_diffusion_trains_the_weight_posterior_and_the_deterministic_weights():
    chain = _mlp_chain(init_scale=0.01)
    data = torch.randn(64, 2) * 0.5
    fit = fit_diffusion(chain, data, num_steps=30, batch_size=16, lr=1e-2, seed=0, progress_bar=False)
    assert fit.bayesian and fit.weight_posterior is fit.chain.weight_posterior
    assert fit.state.weight_state is not None and fit.state.config["weight_sites"] == ["out.1.weight", "out.1.bias"]
    assert fit.state.config["num_data"] == 64 and "GaussianPrior" in fit.state.config["prior"]
    moved = fit.weight_posterior.loc.detach() - chain.weight_posterior.loc.detach()
    assert float(moved.abs().max()) > 1e-3  # q(w) moved
    assert not torch.equal(fit.weight_posterior.unconstrained_scale, chain.weight_posterior.unconstrained_scale)
    assert not torch.equal(fit.chain.net.inp.weight, chain.net.inp.weight)  # so did the deterministic weights
    # the trained net holds the posterior means; the chain passed in is untouched
    for name, loc in fit.weight_posterior.locs().items():
        assert torch.equal(fit.chain.net.get_parameter(name), loc.detach())
    assert torch.equal(chain.net.out[1].weight, _mlp_chain().net.out[1].weight)
    assert torch.isfinite(fit.losses).all()
    # the per-point loss includes KL / N: with a tiny q scale the KL dominates and is large
    assert float(fit.losses[0]) > float(fit.weight_posterior.kl(fit.chain.weight_priors()).detach()) / 64


def test_a_bayesian_fit_whose_weights_are_all_deterministic_is_the_point_fit():
    data = torch.randn(48, 2)
    bayes = fit_diffusion(_mlp_chain(EVERYTHING_DETERMINISTIC), data, num_steps=8, batch_size=8, seed=2, progress_bar=False)
    point_chain = _mlp_chain(EVERYTHING_DETERMINISTIC).with_weights({})
    point = fit_diffusion(point_chain, data, num_steps=8, batch_size=8, seed=2, progress_bar=False)
    assert torch.equal(bayes.losses, point.losses)
    for (name, a), (_, b) in zip(bayes.chain.net.named_parameters(), point.chain.net.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    # and its bound under "weight draws" is the point bound, with no epistemic spread
    draws = evaluate_bound(bayes, data, num_posterior_draws=3, seed=0, progress_bar=False)
    single = evaluate_bound(point.chain, data, seed=0, progress_bar=False)
    for s in range(3):
        torch.testing.assert_close(draws.per_example[s], single.per_example)
    assert torch.equal(draws.epistemic_std, torch.zeros(48, dtype=torch.float64))


@pytest.mark.parametrize("ema_decay", [None, 0.9], ids=["plain", "ema"])
def test_a_resumed_bayesian_run_continues_exactly(tmp_path, ema_decay):
    labels = torch.arange(40) % 3
    data = torch.randn(40, 2)
    options = dict(batch_size=8, seed=4, condition=labels, ema_decay=ema_decay, progress_bar=False, decay_steps=10, final_lr=1e-4)
    whole = fit_diffusion(_mlp_chain(num_classes=3), data, num_steps=10, **options)
    first = fit_diffusion(_mlp_chain(num_classes=3), data, num_steps=4, checkpoint=tmp_path / "state.pt", **options)
    state = DiffusionTrainState.load(tmp_path / "state.pt")
    assert state.weight_state is not None
    options.pop("seed")
    options.pop("decay_steps")
    rest = fit_diffusion(_mlp_chain(num_classes=3), data, num_steps=6, init_state=state, **options)
    assert torch.equal(torch.cat([first.losses, rest.losses]), whole.losses)
    for key, value in whole.weight_posterior.state_dict().items():
        assert torch.equal(rest.weight_posterior.state_dict()[key], value)
    # a point chain cannot continue a Bayesian state, nor the other way round
    with pytest.raises(ValueError, match="state of a Bayesian chain, but the chain is a point-estimate chain"):
        fit_diffusion(_mlp_chain(num_classes=3).with_weights({}), data, num_steps=1, init_state=state, **options)
    with pytest.raises(ValueError, match="the chain's prior selects"):
        fit_diffusion(_mlp_chain(GaussianPrior(1.0), num_classes=3), data, num_steps=1, init_state=state, **options)


def test_a_bayesian_chain_is_trained_by_its_elbo_only():
    with pytest.raises(ValueError, match="a Bayesian chain \\(prior=\\) is trained by its ELBO"):
        fit_diffusion(_mlp_chain(), torch.randn(16, 2), num_steps=2, objective="eps_mse", progress_bar=False)
    with pytest.raises(ValueError, match="needs a Bayesian chain"):
        estimate_bayesian_loss(_mlp_chain().with_weights({}), torch.randn(4, 2), num_data=10)


def test_the_bound_under_weight_draws():
    chain = _mlp_chain(num_classes=2, init_scale=0.2)
    data, labels = torch.randn(20, 2), torch.arange(20) % 2
    bound = evaluate_bound(chain, data, num_posterior_draws=4, seed=3, condition=labels, batch_size=7, progress_bar=False)
    assert isinstance(bound, BayesianBoundResult) and bound.source == "posterior"
    assert bound.per_example.shape == (4, 20) and bound.num_posterior_draws == 4
    torch.testing.assert_close(bound.per_example_mean, bound.per_example.mean(0))
    torch.testing.assert_close(bound.epistemic_std, bound.per_example.std(0))
    assert bound.nats == pytest.approx(float(bound.per_example.mean()))
    assert bound.bits_per_dim == pytest.approx(bound.nats / (2 * math.log(2)))
    torch.testing.assert_close(bound.epistemic_std_bits_per_dim, bound.epistemic_std / (2 * math.log(2)))
    torch.testing.assert_close(bound.per_draw_terms.sum(1), bound.per_example.mean(1))
    assert bound.weight_kl == pytest.approx(float(chain.weight_posterior.kl(chain.weight_priors()).detach()))
    assert bool((bound.epistemic_std > 0).all())
    # draw s is the point bound of the chain with weights w_s, under the same noise (common random numbers)
    draws = chain.weight_posterior.sample(4, torch.Generator().manual_seed(weight_seed(3)))
    one = chain.with_weights({name: value[2] for name, value in draws.items()})
    torch.testing.assert_close(
        evaluate_bound(one, data, seed=3, condition=labels, batch_size=7, progress_bar=False).per_example,
        bound.per_example[2],
    )
    assert "posterior draws" in repr(bound)


def test_bound_errors_name_the_problem():
    chain = _mlp_chain()
    data = torch.randn(5, 2)
    with pytest.raises(ValueError, match="needs num_posterior_draws=S"):
        evaluate_bound(chain, data, progress_bar=False)
    with pytest.raises(ValueError, match="num_posterior_draws must be a positive int, got 0"):
        evaluate_bound(chain, data, num_posterior_draws=0, progress_bar=False)
    with pytest.raises(TypeError, match="num_posterior_draws must be an int"):
        evaluate_bound(chain, data, num_posterior_draws=2.5, progress_bar=False)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="point-estimate chain \\(no prior\\), which has none"):
        evaluate_bound(chain.with_weights({}), data, num_posterior_draws=3, progress_bar=False)


def test_samplers_refuse_a_bayesian_chain_and_say_what_to_do():
    chain = _mlp_chain()
    for call in (
        lambda: sample_ancestral(chain, num_samples=2),
        lambda: sample_ddim(chain, num_samples=2),
        lambda: sample_conditional(chain, torch.zeros(1, 2), torch.tensor([True, False]), num_samples=2),
    ):
        with pytest.raises(ValueError, match="chain.with_weights"):
            call()
    mean_chain = chain.with_weights(chain.weight_posterior.mean())
    assert sample_ddim(mean_chain, num_samples=3, seed=0).samples.shape == (1, 3, 2)


def test_a_reloaded_bayesian_fit_gives_identical_read_outs(tmp_path):
    labels = torch.arange(24) % 2
    data = torch.randn(24, 2)
    fit = fit_diffusion(_mlp_chain(num_classes=2), data, num_steps=5, batch_size=8, seed=0, condition=labels, progress_bar=False)
    save_chain(fit.chain, tmp_path / "fit.pt")
    again = load_chain(tmp_path / "fit.pt")
    options = dict(num_posterior_draws=3, seed=5, condition=labels, progress_bar=False)
    first, second = evaluate_bound(fit, data, **options), evaluate_bound(again, data, **options)
    assert torch.equal(first.per_example, second.per_example)
