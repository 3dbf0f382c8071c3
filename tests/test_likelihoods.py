"""Observation models: shapes with and without sample dims, the plate's scaling, targets."""

from __future__ import annotations

import pyro
import pytest
import torch

from probgen import Bernoulli, Categorical, Gaussian, HeteroskedasticGaussian


def test_gaussian_broadcasts_a_noise_draw_per_sample():
    lik = Gaussian()
    f = torch.randn(3, 5, 10, 1)  # (chain, draw, n, 1)
    d = lik.distribution(f, {"noise_scale": torch.rand(3, 5) + 0.1})
    assert d.batch_shape == (3, 5, 10)
    assert torch.allclose(d.stddev[1, 2], d.stddev[1, 2, 0].expand(10))


def test_gaussian_multi_output_is_one_event_per_row():
    d = Gaussian(noise_scale=0.3).distribution(torch.randn(10, 2), {})
    assert d.batch_shape == (10,) and d.event_shape == (2,)


def test_heteroskedastic_scale_is_positive_and_predicted():
    lik = HeteroskedasticGaussian()
    f = torch.tensor([[0.0, -50.0], [1.0, 2.0]])
    d = lik.distribution(f, {})
    assert (d.stddev > 0).all()
    assert d.stddev[1] == pytest.approx(torch.nn.functional.softplus(torch.tensor(2.0)) + 1e-3)
    assert lik.output_dim(1) == 2


def test_classification_probabilities():
    f = torch.randn(4, 3)
    assert torch.allclose(Categorical(3).class_probs(f).sum(-1), torch.ones(4))
    probs = Bernoulli().class_probs(torch.zeros(4, 1))
    assert torch.allclose(probs, torch.full((4, 2), 0.5))


def test_the_plate_scales_a_minibatch_to_the_full_data():
    lik = Gaussian(noise_scale=1.0)
    x, y = torch.randn(40, 1), torch.randn(40)
    trace = pyro.poutine.trace(lik).get_trace(lambda xb: xb, x, y, subsample_size=10)
    obs = trace.nodes["obs"]
    assert obs["value"].shape == (10,)
    assert obs["scale"] == pytest.approx(4.0)


def test_bernoulli_targets_must_be_binary():
    with pytest.raises(ValueError, match="binary labels 0 and 1"):
        Bernoulli().check_target([0, 2, 1])
    assert Bernoulli().check_target([0, 1]).dtype == torch.get_default_dtype()


def test_bad_likelihood_options_are_named():
    with pytest.raises(ValueError, match="noise_scale must be a finite positive number"):
        Gaussian(noise_scale=0.0)
    with pytest.raises(ValueError, match="num_classes must be an int of at least 2"):
        Categorical(1)
