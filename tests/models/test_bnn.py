"""The BNN as a Pyro program: its sites, its functional forward and its vectorised forward."""

from __future__ import annotations

import pyro
import torch
from torch import nn

from probgen import BNN, Categorical, GaussianPrior


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1))


def test_sites_are_module_paths_plus_globals_and_obs():
    model = BNN(_net())
    trace = pyro.poutine.trace(model).get_trace(torch.randn(5, 3), torch.randn(5))
    sites = [n for n, s in trace.nodes.items() if s["type"] == "sample" and n != "data"]  # "data" is the plate
    assert sites == ["0.weight", "0.bias", "2.weight", "2.bias", "noise_scale", "obs"]
    assert trace.nodes["obs"]["is_observed"]


def test_the_user_network_is_copied_not_modified():
    net = _net()
    before = [p.clone() for p in net.parameters()]
    BNN(net)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert sum(1 for _ in net.parameters()) == 4


def test_forward_batched_equals_a_loop_over_draws():
    model = BNN(_net())
    draws = {n: d.sample((2, 3)) for n, d in model.weight_priors.items()}
    x = torch.randn(7, 3)
    batched = model.forward_batched(draws, x, batch_dims=2)
    assert batched.shape == (2, 3, 7, 1)
    for c in range(2):
        for s in range(3):
            one = model.forward_with({n: v[c, s] for n, v in draws.items()}, x)
            assert torch.allclose(batched[c, s], one)


def test_deterministic_layers_are_module_parameters():
    model = BNN(_net(), GaussianPrior(deterministic=("0",)))
    assert sorted(n for n, _ in model.named_parameters()) == ["net.0.bias", "net.0.weight"]
    assert model.site_names == ("2.weight", "2.bias", "noise_scale")


def test_a_classifier_has_no_global_sites():
    model = BNN(nn.Linear(2, 3), likelihood=Categorical(3))
    assert model.site_names == ("weight", "bias")
    draw = model(torch.randn(4, 2))
    assert draw.dtype == torch.long and draw.shape == (4,)


def test_a_convolutional_network_is_a_bnn_too():
    from probgen import fit_svi

    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    model = BNN(net, GaussianPrior(1.0, fan_in=True), Categorical(3))
    assert model.site_names == ("0.weight", "0.bias", "3.weight", "3.bias")
    x = torch.randn(12, 1, 6, 6)
    y = torch.arange(12) % 3
    result = fit_svi(model, x, y, num_steps=5, num_samples=4, seed=0, progress_bar=False)
    pred = result.predict(x[:5])
    assert pred.probs is not None and pred.probs.shape == (1, 4, 5, 3)
    assert torch.allclose(pred.mean.sum(-1), torch.ones(5))


def test_repr_shows_the_layers_as_built_with_their_biases():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1, bias=False))
    text = repr(BNN(net))
    assert "Linear(in_features=3, out_features=4, bias=True)" in text
    assert "Linear(in_features=4, out_features=1, bias=False)" in text
    assert "3 weight tensors (20 numbers)" in text and "noise_scale" in text
