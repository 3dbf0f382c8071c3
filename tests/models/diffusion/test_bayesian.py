"""Tests for the Bayesian denoiser of probgen/models/diffusion: chain.py with ``prior=``, weights.py, io.py.

These checks are exact (no Monte Carlo tolerance): the structure of the Pyro programs, the vectorised
evaluation of stacked weight draws against one draw at a time, the closed-form KL, and save/reload.
The ELBO itself is checked against Pyro in tests/infer/diffusion/test_bayesian.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch import nn

from probgen.models.diffusion import (
    ConvDenoiser,
    DiffusionChain,
    MeanFieldWeights,
    MLPDenoiser,
    call_with_weights,
    get_schedule,
    load_chain,
    save_chain,
)
from probgen.priors import GaussianPrior, Prior

LAST_LAYER = GaussianPrior(1.0, fan_in=True, deterministic=("embed", "inp", "blocks", "cond"))
EVERYTHING_DETERMINISTIC = GaussianPrior(1.0, deterministic=("embed", "inp", "blocks", "out"))


def _net(**condition):
    torch.manual_seed(0)
    return MLPDenoiser(2, hidden_dim=8, num_blocks=1, **condition)


def _chain(prior=LAST_LAYER, init_scale=0.05, num_timesteps=5, **condition):
    return DiffusionChain(
        _net(**condition), get_schedule("cosine", num_timesteps), event_shape=(2,), prior=prior, init_scale=init_scale
    )


def test_weights_are_sites_drawn_once_outside_the_data_plate():
    chain = _chain()
    assert chain.bayesian and chain.weight_sites == ("out.1.weight", "out.1.bias")
    x0 = torch.randn(10, 2)
    guide = poutine.trace(chain.guide).get_trace(x0, subsample_size=4)
    model = poutine.trace(poutine.replay(chain.model, trace=guide)).get_trace(x0, subsample_size=4)
    for trace in (guide, model):
        sites = [name for name in trace.stochastic_nodes if not name.startswith("_")]
        assert sites[:2] == ["out.1.weight", "out.1.bias"]  # first, once
        for name in chain.weight_sites:
            assert trace.nodes[name]["cond_indep_stack"] == ()  # outside every plate
            assert trace.nodes[name]["value"].shape == chain.net.get_parameter(name).shape
        assert [f.name for f in trace.nodes["x_5"]["cond_indep_stack"]] == ["data"]
    # the plate visits a minibatch of 4 of the 10 rows and scales its terms by N / B
    assert model.nodes["x_0"]["value"].shape == (4, 2)
    assert model.nodes["x_0"]["scale"] == pytest.approx(10 / 4)
    assert model.nodes["out.1.weight"]["scale"] == 1.0
    # the model's weights come from the prior, the guide's from q(w)
    prior_scale = model.nodes["out.1.weight"]["fn"].base_dist.scale
    assert torch.allclose(prior_scale, torch.full_like(prior_scale, 1.0 / 8**0.5))
    q = guide.nodes["out.1.weight"]["fn"].base_dist
    assert torch.equal(q.loc, chain.weight_posterior.locs()["out.1.weight"])


def test_the_model_given_a_weight_draw_is_the_point_chain_with_those_weights():
    chain = _chain(num_classes=3)
    x0, labels = torch.randn(6, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    guide = poutine.trace(chain.guide).get_trace(x0, condition=labels)
    model = poutine.trace(poutine.replay(chain.model, trace=guide)).get_trace(x0, condition=labels)
    draw = {name: guide.nodes[name]["value"] for name in chain.weight_sites}
    point = chain.with_weights(draw)
    assert not point.bayesian and point.weight_sites == ()
    again = poutine.trace(poutine.replay(point.model, trace=guide)).get_trace(x0, condition=labels)
    for t in range(5, -1, -1):
        name = f"x_{t}"
        torch.testing.assert_close(model.nodes[name]["fn"].log_prob(x0 if t == 0 else model.nodes[name]["value"]),
                                   again.nodes[name]["fn"].log_prob(x0 if t == 0 else again.nodes[name]["value"]))


def test_a_prior_that_keeps_every_weight_deterministic_gives_the_point_chain():
    bayes = _chain(prior=EVERYTHING_DETERMINISTIC)
    point = DiffusionChain(_net(), get_schedule("cosine", 5), event_shape=(2,))
    assert bayes.weight_sites == () and bayes.weight_posterior is not None
    assert bayes.weight_posterior.num_weights == 0
    x0 = torch.randn(7, 2)
    losses = []
    for chain in (bayes, point):
        pyro.set_rng_seed(3)
        losses.append(pyro.infer.TraceMeanField_ELBO(num_particles=5).loss(chain.model, chain.guide, x0))
    assert losses[0] == losses[1]
    assert float(bayes.weight_posterior.kl(bayes.weight_priors()).detach()) == 0.0


@pytest.mark.parametrize("condition", [{}, {"num_classes": 3}, {"cond_dim": 2}], ids=["unconditional", "labels", "covariates"])
def test_stacked_draws_in_one_vectorised_call_equal_one_draw_at_a_time(condition):
    chain = _chain(prior=GaussianPrior(1.0, fan_in=True), **condition)
    draws = chain.weight_posterior.sample(4, torch.Generator().manual_seed(0))
    x = torch.randn(4, 6, 2)  # draw s with x[s]
    c = None
    if condition.get("num_classes"):
        c = torch.tensor([0, 1, 2, 0, 1, 2])
    elif condition.get("cond_dim"):
        c = torch.randn(6, 2)
    together = chain.p_mean_variance(x, 3, condition=c, weights=draws)
    for s in range(4):
        one = chain.with_weights({name: value[s] for name, value in draws.items()}).p_mean_variance(x[s], 3, condition=c)
        torch.testing.assert_close(together.mean[s], one.mean)
    # a shared x (leading dim 1) is broadcast to every draw
    shared = chain.p_mean_variance(x[:1], 3, condition=c, weights=draws)
    assert shared.mean.shape == (4, 6, 2)
    torch.testing.assert_close(shared.mean[0], together.mean[0])


def test_stacked_draws_work_for_the_conv_denoiser():
    torch.manual_seed(0)
    net = ConvDenoiser(1, hidden_channels=8, num_blocks=1)
    chain = DiffusionChain(net, get_schedule("linear", 4), event_shape=(1, 4, 4), prior=GaussianPrior(1.0, fan_in=True), init_scale=0.05)
    draws = chain.weight_posterior.sample(3, torch.Generator().manual_seed(1))
    x = torch.randn(3, 2, 1, 4, 4)
    together = chain.p_mean_variance(x, 2, weights=draws).mean
    one = chain.with_weights({name: value[1] for name, value in draws.items()}).p_mean_variance(x[1], 2).mean
    torch.testing.assert_close(together[1], one)


def test_weight_posterior_draws_and_closed_form_kl():
    chain = _chain(prior=GaussianPrior(2.0, fan_in=True, bias_scale=0.5, deterministic=LAST_LAYER.deterministic), init_scale=0.3)
    posterior = chain.weight_posterior
    assert posterior.num_weights == 2 * 8 + 2 and len(posterior.names) == 2
    torch.testing.assert_close(posterior.locs()["out.1.weight"], chain.net.get_parameter("out.1.weight"))
    draws = posterior.sample(5, torch.Generator().manual_seed(0))
    assert draws["out.1.weight"].shape == (5, 2, 8) and not draws["out.1.weight"].requires_grad
    again = posterior.sample(5, torch.Generator().manual_seed(0))
    assert torch.equal(draws["out.1.bias"], again["out.1.bias"])
    priors = chain.weight_priors()
    expected = sum(
        torch.distributions.kl_divergence(posterior.distributions()[name], priors[name]) for name in posterior.names
    )
    torch.testing.assert_close(posterior.kl(priors), expected)
    one = posterior.rsample()
    one["out.1.bias"].sum().backward()  # reparameterised: gradients reach the locations and scales
    assert posterior.loc.grad is not None and posterior.unconstrained_scale.grad is not None


@dataclass(frozen=True)
class _LaplacePrior(Prior):
    """A non-Normal prior, whose KL is a Monte Carlo estimate."""

    def distribution(self, name, param):
        if not name.startswith("out."):
            return None
        return dist.Laplace(torch.zeros_like(param), 1.0).to_event(param.dim())


def test_kl_of_a_non_normal_prior_is_the_log_ratio_at_the_draw():
    chain = _chain(prior=_LaplacePrior())
    posterior, priors = chain.weight_posterior, chain.weight_priors()
    draw = posterior.rsample(torch.Generator().manual_seed(0))
    expected = sum(posterior.distributions()[n].log_prob(draw[n]) - priors[n].log_prob(draw[n]) for n in posterior.names)
    torch.testing.assert_close(posterior.kl(priors, draw), expected)
    with pytest.raises(ValueError, match="pass draw="):
        posterior.kl(priors)
    with pytest.raises(ValueError, match="pass chain.weight_priors"):
        posterior.kl({})


def test_bad_arguments_give_clear_errors():
    with pytest.raises(TypeError, match="prior must be a probgen.priors.Prior"):
        DiffusionChain(_net(), get_schedule("linear", 4), event_shape=(2,), prior="gaussian")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="init_scale sets the weight posterior"):
        DiffusionChain(_net(), get_schedule("linear", 4), event_shape=(2,), init_scale=0.1)
    with pytest.raises(ValueError, match="init_scale must be a finite positive number"):
        _chain(init_scale=0.0)
    with pytest.raises(ValueError, match="num_draws must be a positive int"):
        _chain().weight_posterior.sample(0)
    chain = _chain()
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match="'out.9.weight', which is not a parameter of the net"):
        chain.p_mean_variance(x, 2, weights={"out.9.weight": torch.zeros(2, 8)})
    with pytest.raises(ValueError, match="but the parameter has shape"):
        chain.p_mean_variance(x, 2, weights={"out.1.weight": torch.zeros(8, 2)})
    with pytest.raises(ValueError, match="different leading"):
        chain.p_mean_variance(x, 2, weights={"out.1.weight": torch.zeros(3, 2, 8), "out.1.bias": torch.zeros(2)})
    with pytest.raises(ValueError, match="x_t's leading dimension is 3"):
        chain.p_mean_variance(x, 2, weights=chain.weight_posterior.sample(4))
    with pytest.raises(ValueError, match="with_weights takes one draw"):
        chain.with_weights(chain.weight_posterior.sample(2))
    with pytest.raises(ValueError, match="must line up"):
        call_with_weights(
            chain.net, {"out.1.bias": torch.zeros(1, 4, 2)}, torch.randn(4, 3, 2), torch.ones(4, 3, dtype=torch.long),
            None, event_dim=1, labels=False,
        )  # fmt: skip


def test_describe_and_repr_name_the_prior():
    chain = _chain()
    described = chain.describe()
    assert described["weight_sites"] == ["out.1.weight", "out.1.bias"] and "GaussianPrior" in described["prior"]
    assert "prior=GaussianPrior" in repr(chain) and "MeanFieldWeights(2 parameters, 18 weights)" == repr(chain.weight_posterior)
    point = DiffusionChain(_net(), get_schedule("linear", 4), event_shape=(2,))
    assert "prior" not in point.describe() and point.weight_priors() == {}
    # replace_net keeps the prior and starts a fresh posterior at the new net
    other = chain.replace_net(_net())
    assert other.prior == chain.prior and other.weight_posterior is not chain.weight_posterior
    assert other.weight_posterior.init_scale == chain.weight_posterior.init_scale


def test_a_bayesian_chain_saves_and_reloads_its_prior_and_posterior(tmp_path):
    chain = _chain(num_classes=3, init_scale=0.2).replace_net(_net(num_classes=3))
    with torch.no_grad():  # a posterior away from its start
        chain.weight_posterior.loc.add_(0.3)
        chain.weight_posterior.unconstrained_scale.sub_(0.5)
    save_chain(chain, tmp_path / "bayes.pt")
    again = load_chain(tmp_path / "bayes.pt")
    assert again.prior == chain.prior and again.weight_sites == chain.weight_sites
    for key, value in chain.weight_posterior.state_dict().items():
        assert torch.equal(again.weight_posterior.state_dict()[key], value)
    generator = torch.Generator()
    first = chain.weight_posterior.sample(3, generator.manual_seed(0))
    second = again.weight_posterior.sample(3, generator.manual_seed(0))
    x, c = torch.randn(3, 4, 2), torch.tensor([0, 1, 2, 0])
    torch.testing.assert_close(
        chain.p_mean_variance(x, 2, condition=c, weights=first).mean, again.p_mean_variance(x, 2, condition=c, weights=second).mean,
        rtol=0, atol=0,
    )  # fmt: skip
    # float32 chains come back in float32, posterior included
    small = _chain()
    small.net.float()
    small.weight_posterior.float()
    save_chain(small, tmp_path / "float.pt")
    assert load_chain(tmp_path / "float.pt").weight_posterior.loc.dtype == torch.float32


def test_a_bayesian_chain_file_is_refused_by_a_reader_that_predates_posteriors(tmp_path):
    """A Bayesian file is version 2: a probgen that reads version 1 at most says to upgrade instead of
    loading the posterior-mean chain without its posterior. A point chain's file stays version 1."""
    from probgen._io import load_checkpoint
    from probgen.models.diffusion.io import CHAIN_FORMAT, POINT_CHAIN_VERSION

    save_chain(_chain(), tmp_path / "bayes.pt")
    save_chain(_chain().with_weights(_chain().weight_posterior.mean()), tmp_path / "point.pt")
    old = {"file_format": CHAIN_FORMAT, "version": POINT_CHAIN_VERSION, "what": "a diffusion chain"}
    assert load_checkpoint(tmp_path / "point.pt", **old)["version"] == 1
    with pytest.raises(ValueError, match="newer than this probgen reads .version 1.; upgrade probgen"):
        load_checkpoint(tmp_path / "bayes.pt", **old)
    assert load_chain(tmp_path / "bayes.pt").weight_posterior is not None


def test_loading_a_bayesian_chain_with_a_prior_of_ones_own_class(tmp_path):
    chain = _chain(prior=_LaplacePrior())
    save_chain(chain, tmp_path / "laplace.pt")
    with pytest.raises(ValueError, match="pass the same prior as prior="):
        load_chain(tmp_path / "laplace.pt")
    assert load_chain(tmp_path / "laplace.pt", prior=_LaplacePrior()).weight_sites == chain.weight_sites
    with pytest.raises(ValueError, match="the prior selects"):
        load_chain(tmp_path / "laplace.pt", prior=GaussianPrior(1.0))
    point = DiffusionChain(_net(), get_schedule("linear", 4), event_shape=(2,))
    save_chain(point, tmp_path / "point.pt")
    with pytest.raises(ValueError, match="holds a point-estimate chain"):
        load_chain(tmp_path / "point.pt", prior=GaussianPrior(1.0))
    assert not load_chain(tmp_path / "point.pt").bayesian


def test_mean_field_weights_alone():
    posterior = MeanFieldWeights({"a": torch.zeros(2, 3), "b": torch.ones(())}, init_scale=0.5)
    assert posterior.shapes == (torch.Size([2, 3]), torch.Size([]))
    assert posterior.sample(4)["b"].shape == (4,)
    torch.testing.assert_close(posterior.scales()["a"].detach(), torch.full((2, 3), 0.5))
    empty = MeanFieldWeights({})
    assert empty.sample(3) == {} and empty.rsample() == {} and float(empty.kl({}).detach()) == 0.0
    assert isinstance(empty, nn.Module)


@pytest.mark.parametrize("condition", [{}, {"num_classes": 2}, {"cond_dim": 1}], ids=["unconditional", "labels", "covariates"])
def test_pyros_vectorised_particles_run_the_weight_draws_in_one_call(condition):
    chain = _chain(**condition)
    x0 = torch.randn(6, 2)
    c = None
    if condition.get("num_classes"):
        c = torch.arange(6) % 2
    elif condition.get("cond_dim"):
        c = torch.randn(6, 1)
    elbo = pyro.infer.TraceMeanField_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)

    def particles(*args, **kwargs):  # what vectorize_particles does: an outer plate left of the data plate
        with pyro.plate("particles", 4, dim=-2):
            return chain.guide(*args, **kwargs)

    guide = poutine.trace(particles).get_trace(x0, condition=c, subsample_size=3)
    assert guide.nodes["out.1.weight"]["value"].shape == (4, 1, 2, 8)  # one draw per particle, outside the plate
    assert guide.nodes["x_5"]["value"].shape == (4, 3, 2)
    loss = elbo.loss(chain.model, chain.guide, x0, condition=c, subsample_size=3)
    assert math.isfinite(loss)
