"""Tests for conditional diffusion in probgen/models/diffusion: conditional nets, the chain's condition, save/load.

The exact stand-in is tests/models/diffusion/_conditional_oracle.py, the true ``E[eps | x_t, c]`` of
Gaussian classes. Statistical checks use ``Z_SCORE * standard error`` from tests/_stats.py (z = 4.5).
"""

from __future__ import annotations

import pyro
import pytest
import torch
from torch import Tensor, nn

from probgen.models.diffusion import (
    ConvDenoiser,
    DiffusionChain,
    MLPDenoiser,
    get_schedule,
    load_chain,
    save_chain,
)
from tests._stats import Z_SCORE, iid_se_mean
from tests.models.diffusion._conditional_oracle import (
    CLASS_MEANS,
    ORACLE_VARIANCE,
    class_oracle_chain,
    covariate_oracle_chain,
)


def _labelled_chain(num_classes=3, num_timesteps=6):
    net = MLPDenoiser(2, hidden_dim=16, num_blocks=1, num_classes=num_classes)
    return DiffusionChain(net, get_schedule("cosine", num_timesteps), event_shape=(2,))


def _covariate_chain(cond_dim=2, num_timesteps=6):
    net = MLPDenoiser(2, hidden_dim=16, num_blocks=1, cond_dim=cond_dim)
    return DiffusionChain(net, get_schedule("cosine", num_timesteps), event_shape=(2,))


class _RecordingNet(nn.Module):
    """A class-conditional denoiser that predicts zero noise and records the condition of every call."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.zeros(()))
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor, t: Tensor, c: Tensor) -> Tensor:
        self.seen.append(c.clone())
        return self.weight * x


# ----------------------------------------------------------------------------------------------- networks
def test_mlp_denoiser_is_conditioned_on_class_labels():
    net = MLPDenoiser(2, hidden_dim=16, num_blocks=1, num_classes=3)
    x, t = torch.randn(4, 2), torch.full((4,), 2)
    out0, out2 = net(x, t, torch.zeros(4, dtype=torch.long)), net(x, t, torch.full((4,), 2))
    assert out0.shape == x.shape and not torch.allclose(out0, out2)
    # one label broadcasts over the rows; extra batch dims work as for t
    torch.testing.assert_close(net(x, t, torch.tensor([2])), out2)
    labels = torch.randint(3, (5, 4))
    out = net(torch.randn(5, 4, 2), torch.randint(1, 9, (5, 4)), labels)
    assert out.shape == (5, 4, 2)
    assert net.get_config() == {"data_dim": 2, "hidden_dim": 16, "num_blocks": 1, "time_dim": 32, "num_classes": 3}
    assert (net.num_classes, net.cond_dim) == (3, None)


def test_mlp_denoiser_is_conditioned_on_covariates():
    net = MLPDenoiser(2, hidden_dim=16, num_blocks=1, cond_dim=3)
    x, t = torch.randn(4, 2), torch.full((4,), 2)
    out = net(x, t, torch.randn(4, 3))
    assert out.shape == x.shape and not torch.allclose(out, net(x, t, torch.randn(4, 3)))
    c = torch.randn(1, 3)
    torch.testing.assert_close(net(x, t, c), net(x, t, c.expand(4, 3)))
    assert net.get_config()["cond_dim"] == 3 and "num_classes" not in net.get_config()
    plain = MLPDenoiser(2, hidden_dim=8)  # an unconditional net's config is what it always was
    assert plain.get_config() == {"data_dim": 2, "hidden_dim": 8, "num_blocks": 3, "time_dim": 32}


def test_conv_denoiser_is_conditioned_on_class_labels_or_covariates():
    net = ConvDenoiser(1, hidden_channels=8, num_blocks=1, num_classes=10)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([1, 5, 9])
    out = net(x, t, torch.tensor([0, 1, 2]))
    assert out.shape == x.shape and not torch.allclose(out, net(x, t, torch.tensor([7, 8, 9])))
    assert net.get_config()["num_classes"] == 10
    with pytest.raises(ValueError, match=r"ConvDenoiser is conditioned on class labels \(num_classes=10\)"):
        net(x, t)
    covariate = ConvDenoiser(1, hidden_channels=8, num_blocks=1, cond_dim=2)
    assert covariate(x, t, torch.randn(3, 2)).shape == x.shape and covariate.get_config()["cond_dim"] == 2


def test_network_condition_errors():
    labelled = MLPDenoiser(2, hidden_dim=8, num_classes=3)
    plain = MLPDenoiser(2, hidden_dim=8)
    x, t = torch.zeros(4, 2), torch.ones(4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"num_classes.*cond_dim.*not both"):
        MLPDenoiser(2, num_classes=3, cond_dim=2)
    with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
        MLPDenoiser(2, num_classes=0)
    with pytest.raises(ValueError, match=r"MLPDenoiser is conditioned on class labels \(num_classes=3\).*needs c="):
        labelled(x, t)
    with pytest.raises(ValueError, match="c was given, but MLPDenoiser is unconditional"):
        plain(x, t, torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match=r"c must be an integer tensor of class labels in \[0, 3\), got dtype"):
        labelled(x, t, torch.zeros(4))
    with pytest.raises(ValueError, match=r"labels from 0 to 3.*num_classes=3"):
        labelled(x, t, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"c must have shape \(4,\) to match the 4 rows of x.*got shape \(3,\)"):
        labelled(x, t, torch.tensor([0, 1, 2]))
    covariate = MLPDenoiser(2, hidden_dim=8, cond_dim=1)
    with pytest.raises(ValueError, match=r"c has 4 covariates per row.*cond_dim=1.*c.reshape\(-1, 1\)"):
        covariate(x, t, torch.zeros(4))
    with pytest.raises(TypeError, match="c must be a floating tensor of covariates"):
        covariate(x, t, torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="c contains 1 NaN or infinite"):
        covariate(x, t, torch.tensor([[0.0], [float("nan")], [1.0], [2.0]]))


# -------------------------------------------------------------------------------------------------- chain
def test_the_chain_knows_what_its_net_is_conditioned_on():
    chain = _labelled_chain(num_classes=3)
    assert chain.conditional and (chain.num_classes, chain.cond_dim) == (3, None)
    assert chain.describe()["num_classes"] == 3 and chain.describe()["cond_dim"] is None
    assert "num_classes=3" in repr(chain)
    covariate = _covariate_chain(cond_dim=2)
    assert covariate.conditional and covariate.describe()["cond_dim"] == 2 and "cond_dim=2" in repr(covariate)
    plain = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("cosine", 4), event_shape=(2,))
    assert not plain.conditional and plain.num_classes is None and plain.cond_dim is None
    # a net of one's own is conditional through its attributes, and replace_net reads the new net's
    assert DiffusionChain(_RecordingNet(4), get_schedule("cosine", 4), event_shape=(2,)).num_classes == 4
    assert not chain.replace_net(MLPDenoiser(2, hidden_dim=8)).conditional
    odd = _RecordingNet(2)
    odd.cond_dim = 3  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"net.num_classes=2 and net.cond_dim=3.*not both"):
        DiffusionChain(odd, get_schedule("cosine", 4), event_shape=(2,))


def _call(method, chain, condition):
    x = torch.randn(5, 2)
    if method == "p_mean_variance":
        return chain.p_mean_variance(x, 3, condition=condition)
    if method == "p_sample":
        return chain.p_sample(x, 3, condition=condition)
    if method == "vlb_term":
        return chain.vlb_term(x, torch.tensor([1, 2, 3, 4, 5]), condition=condition)
    if method == "model (x0)":
        return chain.model(x, condition=condition)
    return chain.model(num_samples=5, condition=condition)


METHODS = ["p_mean_variance", "p_sample", "vlb_term", "model (x0)", "model (samples)"]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_that_calls_the_net_checks_the_condition(method):
    chain = _labelled_chain(num_classes=3)
    assert _call(method, chain, torch.tensor([0, 1, 2, 1, 0])) is not None
    assert _call(method, chain, torch.tensor([2])) is not None  # one row for all
    with pytest.raises(ValueError, match=r"the chain's net \(MLPDenoiser\) is conditioned on class labels.*condition="):
        _call(method, chain, None)
    with pytest.raises(ValueError, match=r"condition must have shape \(5,\) to match the 5 rows of .*got shape \(3,\)"):
        _call(method, chain, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"condition holds class labels from -1 to 1.*\[0, 3\)"):
        _call(method, chain, torch.tensor([0, 1, -1, 1, 0]))
    with pytest.raises(TypeError, match="condition must be an integer tensor of class labels"):
        _call(method, chain, torch.zeros(5))
    with pytest.raises(TypeError, match="condition must be an integer tensor"):
        _call(method, chain, torch.ones(5, dtype=torch.bool))
    plain = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("cosine", 6), event_shape=(2,))
    assert _call(method, plain, None) is not None
    with pytest.raises(ValueError, match=r"condition was given, but the chain's net \(MLPDenoiser\) is unconditional"):
        _call(method, plain, torch.tensor([0, 1, 2, 1, 0]))
    covariate = _covariate_chain(cond_dim=2)
    assert _call(method, covariate, torch.randn(5, 2)) is not None
    with pytest.raises(ValueError, match=r"condition has 3 covariates per row \(shape \(5, 3\)\).*cond_dim=2"):
        _call(method, covariate, torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"condition must have shape \(5, 2\) to match the 5 rows"):
        _call(method, covariate, torch.randn(4, 2))
    with pytest.raises(ValueError, match="condition contains 1 NaN or infinite"):
        _call(method, covariate, torch.tensor([[0.0, 1.0]] * 4 + [[float("inf"), 0.0]]))


def test_the_model_passes_each_rows_condition_to_every_reverse_step():
    net = _RecordingNet(3)
    chain = DiffusionChain(net, get_schedule("linear", 5), event_shape=(2,))
    labels = torch.tensor([2, 0, 1, 1])
    trace = pyro.poutine.trace(chain.model).get_trace(num_samples=4, condition=labels)
    assert trace.nodes["x_0"]["value"].shape == (4, 2)
    assert len(net.seen) == 5 and all(torch.equal(seen, labels) for seen in net.seen)
    # the guide takes the same arguments and ignores the condition; so does the forward-order guide
    chain.guide(torch.zeros(4, 2), condition=labels)
    chain.forward_guide(torch.zeros(4, 2), condition=labels)
    # under Pyro's vectorised particles the sites gain a leading dim; each row keeps its own label
    net.seen.clear()
    elbo = pyro.infer.TraceMeanField_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    elbo.loss(chain.model, chain.guide, torch.zeros(4, 2), condition=labels)
    assert net.seen and all(torch.equal(seen, labels.expand(3, 4)) for seen in net.seen)


def test_the_exact_conditional_chain_samples_each_class_around_its_mean():
    chain = class_oracle_chain(num_timesteps=100)
    n = 4000
    labels = torch.arange(n) % 2
    with torch.no_grad():
        x0 = chain.model(num_samples=n, condition=labels)
    for c in (0, 1):
        draws = x0[labels == c]
        for j in range(2):
            # sd ~0.29 on 2000 draws, so se ~0.0065 and 4.5 se ~0.03, far below the gap of 4 between classes
            se = iid_se_mean(draws[:, j].numpy())
            assert abs(float(draws[:, j].mean()) - float(CLASS_MEANS[c, j])) < Z_SCORE * se


def test_the_true_condition_gives_the_exact_chain_a_smaller_bound_term():
    chain = class_oracle_chain(num_timesteps=20)
    labels = torch.arange(200) % 2
    x0 = CLASS_MEANS[labels] + ORACLE_VARIANCE**0.5 * torch.randn(200, 2)
    t, noise = torch.randint(1, 21, (200,)), torch.randn(200, 2)
    true = chain.vlb_term(x0, t, noise, condition=labels)
    flipped = chain.vlb_term(x0, t, noise, condition=1 - labels)
    # the same x_t for both, so the terms pair up; the wrong class mean, 4.5 away, costs nats on average
    gain = (flipped - true).detach().numpy()
    assert gain.mean() > Z_SCORE * iid_se_mean(gain) and gain.mean() > 1.0


def test_the_exact_covariate_chain_tracks_its_covariate():
    weights = torch.tensor([[2.0], [-1.0]])  # y = 2 x_1 - x_2 + noise
    chain = covariate_oracle_chain(weights, num_timesteps=100)
    covariates = torch.rand(3000, 2) * 2 - 1
    with torch.no_grad():
        y = chain.model(num_samples=3000, condition=covariates)
    residual = (y - covariates @ weights)[:, 0].numpy()
    # residual sd ~0.29, se ~0.0055; without the covariate the residual would have sd ~1.3
    assert abs(residual.mean()) < Z_SCORE * iid_se_mean(residual) and residual.std() < 0.35


# -------------------------------------------------------------------------------------------------- io
@pytest.mark.parametrize("options", [{"num_classes": 3}, {"cond_dim": 2}], ids=["classes", "covariates"])
def test_a_conditional_chain_survives_save_and_load(options, tmp_path):
    from probgen.infer.diffusion import sample_ancestral, sample_ddim

    net = MLPDenoiser(2, hidden_dim=8, num_blocks=1, **options).float().eval()
    chain = DiffusionChain(net, get_schedule("linear", 6), event_shape=(2,))
    save_chain(chain, tmp_path / "chain.pt")
    again = load_chain(tmp_path / "chain.pt")
    assert again.describe() == chain.describe() and again.net.get_config() == chain.net.get_config()
    for (name, value), (other_name, other) in zip(chain.net.state_dict().items(), again.net.state_dict().items()):
        assert name == other_name and torch.equal(value, other)
    condition = torch.tensor([0, 2, 1, 1, 0]) if chain.num_classes else torch.randn(5, 2, dtype=torch.float32)
    for sample in (sample_ancestral, sample_ddim):
        a = sample(chain, num_samples=5, num_chains=2, seed=11, condition=condition)
        b = sample(again, num_samples=5, num_chains=2, seed=11, condition=condition)
        assert a.samples.dtype == torch.float32 and torch.equal(a.samples, b.samples)


def test_loading_a_conditional_chain_refuses_a_net_conditioned_otherwise(tmp_path):
    chain = DiffusionChain(_RecordingNet(3), get_schedule("linear", 4), event_shape=(2,))
    save_chain(chain, tmp_path / "own.pt")
    again = load_chain(tmp_path / "own.pt", net=_RecordingNet(3))
    assert again.num_classes == 3
    with pytest.raises(ValueError, match=r"conditioned on class labels \(num_classes=3\), but the given net is "
                       r"conditioned on class labels \(num_classes=4\)"):  # fmt: skip
        load_chain(tmp_path / "own.pt", net=_RecordingNet(4))
    plain = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("linear", 4), event_shape=(2,))
    save_chain(plain, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match=r"conditioned on nothing \(it is unconditional\), but the given net"):
        load_chain(tmp_path / "plain.pt", net=MLPDenoiser(2, hidden_dim=8, num_classes=2))
