"""Weight priors as rules over the module tree, and both views of the conversion."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from probgen import GaussianPrior, make_bayesian
from probgen.nn import split_parameters
from probgen.priors import fan_in


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


def _scale(prior, name):
    return float(prior.base_dist.scale.flatten()[0])


def test_one_scale_for_all():
    priors = GaussianPrior(0.7).apply(_net())
    assert sorted(priors) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert all(_scale(p, n) == pytest.approx(0.7) for n, p in priors.items())


def test_fan_in_scaling_divides_weights_only():
    priors = GaussianPrior(2.0, fan_in=True).apply(_net())
    assert _scale(priors["0.weight"], "") == pytest.approx(2.0 / math.sqrt(4))
    assert _scale(priors["2.weight"], "") == pytest.approx(2.0 / math.sqrt(8))
    assert _scale(priors["0.bias"], "") == pytest.approx(2.0)


def test_per_layer_scales_take_the_longest_matching_path():
    prior = GaussianPrior(1.0, layer_scales={"2": 0.1, "2.bias": 5.0}, bias_scale=3.0)
    priors = prior.apply(_net())
    assert _scale(priors["2.weight"], "") == pytest.approx(0.1)
    assert _scale(priors["2.bias"], "") == pytest.approx(5.0)
    assert _scale(priors["0.bias"], "") == pytest.approx(3.0)


def test_conv_fan_in_counts_channels_times_kernel():
    assert fan_in(nn.Conv2d(3, 5, kernel_size=3).weight) == 27


def test_deterministic_layers_stay_parameters():
    net = _net()
    functional, priors = split_parameters(net, GaussianPrior(deterministic=("0",)))
    assert sorted(priors) == ["2.bias", "2.weight"]
    assert sorted(n for n, _ in functional.named_parameters()) == ["0.bias", "0.weight"]
    assert sum(1 for _ in net.parameters()) == 4  # the user's module is untouched


def test_a_prior_with_no_bayesian_parameter_is_refused():
    with pytest.raises(ValueError, match="makes no parameter Bayesian"):
        split_parameters(_net(), GaussianPrior(deterministic=("0", "2")))


@pytest.mark.parametrize("kwargs, match", [({"scale": 0.0}, "scale"), ({"layer_scales": {"0": -1.0}}, r"layer_scales\['0'\]")])
def test_bad_prior_scales_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianPrior(**kwargs)


def test_make_bayesian_gives_pyro_sample_sites_with_module_paths():
    import pyro

    bayes = make_bayesian(_net(), GaussianPrior(deterministic=("2.bias",)))
    assert "weight" in bayes[0]._pyro_samples and "bias" not in bayes[2]._pyro_samples
    trace = pyro.poutine.trace(bayes).get_trace(torch.randn(3, 4))
    sites = sorted(n for n, s in trace.nodes.items() if s["type"] == "sample")
    assert sites == ["0.bias", "0.weight", "2.weight"]
