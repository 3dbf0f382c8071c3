"""Tests for conditional diffusion in probgen/infer/diffusion: training, the bound and sampling given ``c``.

Two kinds of stand-in. The exact one is the conditional Gaussian oracle of
tests/models/diffusion/_conditional_oracle.py; its checks use ``Z_SCORE * standard error`` from
tests/_stats.py (z = 4.5). The trained ones are small nets fitted briefly on 1-D toys; what they learn
carries a model error far larger than the Monte Carlo error, so their tolerances are set from that
error (measured over training seeds 0-7) and from what a chain that ignored its condition would give.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pyro
import pytest
import torch

from probgen.infer.diffusion import (
    DiffusionTrainState,
    estimate_bound,
    evaluate_bound,
    fit_diffusion,
    sample_ancestral,
    sample_conditional,
    sample_ddim,
)
from probgen.infer.results import DiffusionFitResult
from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
from tests._stats import Z_SCORE, iid_se_mean
from tests.models.diffusion._conditional_oracle import CLASS_MEANS, ORACLE_VARIANCE, class_oracle_chain

NUM_TOY = 512


def _two_class_toy() -> tuple[torch.Tensor, torch.Tensor]:
    """1-D data: class 0 around -2, class 1 around +2, sd 0.2; labels alternate."""
    labels = torch.arange(NUM_TOY) % 2
    generator = torch.Generator().manual_seed(0)
    data = (4.0 * labels - 2.0)[:, None] + 0.2 * torch.randn(NUM_TOY, 1, dtype=torch.float64, generator=generator)
    return data, labels


@functools.cache
def _two_class_fit() -> DiffusionFitResult:
    """A class-conditional chain trained for 300 ELBO steps on the two-class toy (about a second), built once.

    Module-scoped fixtures run before conftest's per-test seed and dtype, so this sets both itself.
    """
    data, labels = _two_class_toy()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = MLPDenoiser(1, hidden_dim=32, num_blocks=1, num_classes=2).double()
    chain = DiffusionChain(net, get_schedule("linear", 20), event_shape=(1,))
    return fit_diffusion(
        chain, data, num_steps=300, batch_size=128, lr=3e-3, seed=0, condition=labels, progress_bar=False
    )


@pytest.fixture(scope="module")
def two_class_fit() -> DiffusionFitResult:
    return _two_class_fit()


def _labelled_chain(num_classes=2, num_timesteps=6):
    net = MLPDenoiser(2, hidden_dim=8, num_blocks=1, num_classes=num_classes)
    return DiffusionChain(net, get_schedule("cosine", num_timesteps), event_shape=(2,))


# ---------------------------------------------------------------------------------------- trained toys
def test_class_conditional_samples_follow_their_class(two_class_fit):
    labels = torch.tensor([0, 1]).repeat(500)
    draws = sample_ancestral(two_class_fit.chain, num_samples=1000, seed=0, condition=labels)
    assert draws.samples.shape == (1, 1000, 1)
    x = draws.samples[0, :, 0]
    mean0, mean1 = float(x[labels == 0].mean()), float(x[labels == 1].mean())
    # Over seeds 0-7 (initialisation and training) the class means land within 0.3 of -2 and +2: the error
    # of a 300-step fit, against a Monte Carlo se of only ~0.4 / sqrt(500) ~ 0.02. A chain that ignored its
    # condition would draw both classes from one distribution: equal means, at least 2 from one target
    # (the mixture's mean is 0; a chain that always used class 0 puts both near -2).
    assert abs(mean0 + 2.0) < 0.6 and abs(mean1 - 2.0) < 0.6
    assert mean1 - mean0 > 3.0


def test_the_true_condition_gives_a_better_bound_than_a_wrong_one(two_class_fit):
    data, labels = _two_class_toy()
    shuffled = labels[torch.randperm(NUM_TOY, generator=torch.Generator().manual_seed(1))]
    bounds = {
        name: evaluate_bound(two_class_fit.chain, data, seed=0, condition=condition, progress_bar=False)
        for name, condition in {"true": labels, "flipped": 1 - labels, "shuffled": shuffled}.items()
    }
    true = bounds["true"].per_example.numpy()
    for name in ("flipped", "shuffled"):
        # the same seed draws the same noise, so the per-example bounds pair up; the paired se is 0.2-0.5
        # nats, and a wrong label costs ~25 nats on each point it mislabels (half of them when shuffled)
        gap = bounds[name].per_example.numpy() - true
        assert gap.mean() > Z_SCORE * iid_se_mean(gap) and bounds[name].nats > bounds["true"].nats + 3.0
    assert bounds["true"].chain_config["num_classes"] == 2


def test_diffusion_regression_tracks_the_covariate():
    """p(y | x) for y = 2 x + 0.2 noise, x uniform on [-1, 1]: eps-MSE training with covariates."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(NUM_TOY, 1, generator=generator) * 2 - 1
    y = 2.0 * x + 0.2 * torch.randn(NUM_TOY, 1, generator=generator)
    net = MLPDenoiser(1, hidden_dim=32, num_blocks=1, cond_dim=1)
    chain = DiffusionChain(net, get_schedule("linear", 20), event_shape=(1,))
    fit = fit_diffusion(
        chain, y, num_steps=300, batch_size=128, lr=3e-3, seed=0, objective="eps_mse", condition=x,
        progress_bar=False,
    )  # fmt: skip
    grid = torch.linspace(-0.9, 0.9, 1000)[:, None]
    draws = sample_ancestral(fit.chain, num_samples=1000, seed=0, condition=grid).samples[0]
    centred = grid - grid.mean()
    slope = float((centred * (draws - draws.mean())).sum() / centred.pow(2).sum())
    residual = draws - 2.0 * grid
    # Over seeds 0-5 (initialisation and training) the slope is 1.91-2.08 and the residual sd ~0.3 (the
    # noise is 0.2). With the covariate zeroed inside the chain, the slope is ~0 and the residual sd ~1.1.
    assert abs(slope - 2.0) < 0.5
    assert abs(float(residual.mean())) < 0.3 and float(residual.std()) < 0.6


# ---------------------------------------------------------------------------------------- exact oracle
def test_the_conditional_bound_is_what_pyro_computes_on_the_conditional_model():
    chain = class_oracle_chain(num_timesteps=8)
    labels = torch.tensor([0, 1, 1, 0])
    x0 = CLASS_MEANS[labels] + math.sqrt(ORACLE_VARIANCE) * torch.randn(4, 2)
    elbo = pyro.infer.TraceMeanField_ELBO(num_particles=200, vectorize_particles=True, max_plate_nesting=1)
    with torch.no_grad():
        values = np.array([elbo.loss(chain.model, chain.guide, x0, condition=labels) for _ in range(30)])
    bound = evaluate_bound(chain, x0.repeat(500, 1), seed=0, condition=labels.repeat(500), progress_bar=False)
    totals = bound.per_example.reshape(500, 4).sum(1).numpy()
    # tolerance 4.5 * hypot of the two se's, each from its own draws
    assert abs(totals.mean() - values.mean()) < Z_SCORE * math.hypot(iid_se_mean(values), iid_se_mean(totals))
    estimate = estimate_bound(chain, x0.repeat(500, 1), condition=labels.repeat(500))
    per_point = estimate.loss.detach().reshape(500, 4).sum(1).numpy()
    assert abs(per_point.mean() - values.mean()) < Z_SCORE * math.hypot(iid_se_mean(values), iid_se_mean(per_point))


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_every_draw_follows_its_own_condition_in_every_chain(sampler):
    chain = class_oracle_chain(num_timesteps=50)
    labels = torch.tensor([0, 1]).repeat(1000)
    if sampler == "ancestral":
        draws = sample_ancestral(chain, num_samples=2000, num_chains=2, seed=0, condition=labels)
    else:
        draws = sample_ddim(chain, num_samples=2000, num_chains=2, num_sampling_steps=25, seed=0, condition=labels)
    assert draws.samples.shape == (2, 2000, 2)
    for chain_index in range(2):
        for c in (0, 1):
            rows = draws.samples[chain_index, labels == c]
            for j in range(2):
                # sd ~0.3 on 1000 draws: se ~0.01, 4.5 se ~0.045, against class means 4 apart
                se = iid_se_mean(rows[:, j].numpy())
                assert abs(float(rows[:, j].mean()) - float(CLASS_MEANS[c, j])) < Z_SCORE * se
    # one row conditions every draw: the same draws as that label repeated
    once = sample_ancestral(chain, num_samples=6, seed=3, condition=torch.tensor([1]))
    repeated = sample_ancestral(chain, num_samples=6, seed=3, condition=torch.ones(6, dtype=torch.long))
    assert torch.equal(once.samples, repeated.samples)


def test_inpainting_with_a_condition_completes_each_observation_in_its_class():
    chain = class_oracle_chain(num_timesteps=50)
    # the coordinates are independent given the class, so replacement inpainting is exact here
    x_observed = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
    labels = torch.tensor([0, 1])
    draws = sample_conditional(
        chain, x_observed, torch.tensor([True, False]), num_samples=1000, seed=0, condition=labels
    )
    assert draws.samples.shape == (1, 1000, 2, 2)
    assert torch.equal(draws.samples[0, :, :, 0], x_observed[:, 0].expand(1000, 2))
    for i, c in enumerate(labels.tolist()):
        completed = draws.samples[0, :, i, 1].numpy()
        # sd ~0.3 on 1000 draws: se ~0.01
        assert abs(completed.mean() - float(CLASS_MEANS[c, 1])) < Z_SCORE * iid_se_mean(completed)
    with pytest.raises(ValueError, match=r"condition must have shape \(2,\) to match the 2 rows of x_observed"):
        sample_conditional(chain, x_observed, torch.tensor([True, False]), num_samples=2, condition=labels[[0, 1, 1]])


def test_samples_and_bounds_record_their_condition_and_arviz_keeps_it():
    from probgen.infer.arviz import diffusion_to_arviz

    chain = class_oracle_chain(num_timesteps=6)
    labels = torch.tensor([1, 0, 1])
    ancestral = sample_ancestral(chain, num_samples=3, num_chains=2, seed=0, condition=labels)
    ddim = sample_ddim(chain, num_samples=3, num_chains=2, seed=0, condition=torch.tensor([1]))  # one row for all
    inpainted = sample_conditional(chain, torch.zeros(3, 2), torch.tensor([True, False]), num_samples=2, seed=0,
                                   condition=labels)  # fmt: skip
    assert torch.equal(ancestral.condition, labels) and torch.equal(inpainted.condition, labels)
    assert torch.equal(ddim.condition, torch.ones(3, dtype=torch.long))
    data = torch.randn(3, 2)
    bound = evaluate_bound(chain, data, condition=labels, seed=0, progress_bar=False)
    assert torch.equal(bound.condition, labels)
    idata = diffusion_to_arviz(bound=bound, samples=ancestral)
    assert idata.constant_data["condition"].dims == ("obs_id",)
    assert idata.constant_data["condition"].values.tolist() == [1, 0, 1]
    assert idata.constant_data["sample_condition"].dims == ("draw",)
    # an unconditional chain records none
    plain = DiffusionChain(MLPDenoiser(2, hidden_dim=8, num_blocks=1), get_schedule("linear", 4), event_shape=(2,))
    assert sample_ancestral(plain, num_samples=2, seed=0).condition is None
    assert evaluate_bound(plain, data, seed=0, progress_bar=False).condition is None


# -------------------------------------------------------------------------------------- training runs
def test_conditional_training_resumes_exactly_and_from_a_checkpoint(tmp_path):
    chain = _labelled_chain()
    data, labels = torch.randn(40, 2), torch.arange(40) % 2
    options = dict(batch_size=8, seed=5, condition=labels, progress_bar=False)
    whole = fit_diffusion(chain, data, num_steps=6, **options)
    first = fit_diffusion(chain, data, num_steps=3, checkpoint=tmp_path / "state.pt", **options)
    resumed = fit_diffusion(
        chain, data, num_steps=3, init_state=DiffusionTrainState.load(tmp_path / "state.pt"), **options
    )
    torch.testing.assert_close(torch.cat([first.losses, resumed.losses]), whole.losses, rtol=0, atol=0)
    assert whole.state.config["num_classes"] == 2 and whole.state.config["cond_dim"] is None
    assert resumed.chain.num_classes == 2 and whole.to_arviz().attrs["num_classes"] == 2
    plain = DiffusionChain(MLPDenoiser(2, hidden_dim=8, num_blocks=1), get_schedule("cosine", 6), event_shape=(2,))
    with pytest.raises(ValueError, match=r"init_state was trained with a net of num_classes=2.*num_classes=None"):
        fit_diffusion(plain, data, num_steps=1, init_state=first.state, progress_bar=False)


def test_fit_evaluate_and_sample_check_the_condition():
    chain = _labelled_chain(num_classes=2)
    plain = DiffusionChain(MLPDenoiser(2, hidden_dim=8, num_blocks=1), get_schedule("cosine", 6), event_shape=(2,))
    data, labels = torch.randn(10, 2), torch.arange(10) % 2
    with pytest.raises(ValueError, match=r"conditioned on class labels \(num_classes=2\) and needs condition="):
        fit_diffusion(chain, data, num_steps=1, progress_bar=False)
    with pytest.raises(ValueError, match="condition was given, but the chain's net .* is unconditional"):
        fit_diffusion(plain, data, num_steps=1, condition=labels, progress_bar=False)
    with pytest.raises(ValueError, match=r"condition must have shape \(10,\) to match the 10 rows of data.*\(9,\)"):
        fit_diffusion(chain, data, num_steps=1, condition=labels[:9], progress_bar=False)
    with pytest.raises(ValueError, match=r"labels from 0 to 2.*\[0, 2\)"):
        fit_diffusion(chain, data, num_steps=1, condition=labels * 2, progress_bar=False)
    with pytest.raises(TypeError, match="condition must be an integer tensor of class labels"):
        fit_diffusion(chain, data, num_steps=1, condition=labels.double(), progress_bar=False)
    with pytest.raises(ValueError, match=r"condition must have shape \(10,\) to match the 10 rows of data"):
        evaluate_bound(chain, data, condition=labels[:4], progress_bar=False)
    with pytest.raises(ValueError, match="needs condition="):
        evaluate_bound(chain, data, progress_bar=False)
    with pytest.raises(ValueError, match=r"shape \(5,\) to match the 5 rows of the draws \(num_samples=5\)"):
        sample_ancestral(chain, num_samples=5, condition=labels)
    with pytest.raises(ValueError, match="needs condition="):
        sample_ddim(chain, num_samples=5)
    with pytest.raises(ValueError, match="condition was given, but the chain's net"):
        sample_ddim(plain, num_samples=5, condition=labels[:5])
    # the unconditional paths are unchanged
    assert sample_ancestral(plain, num_samples=3, seed=0).samples.shape == (1, 3, 2)
