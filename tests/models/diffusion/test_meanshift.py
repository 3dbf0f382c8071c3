"""Tests for MeanShiftDenoiser: the chain on ``y`` is the residual chain on ``y - m(c)``, shifted, step for step."""

from __future__ import annotations

import pytest
import torch

from probgen.infer.diffusion import fit_diffusion, predictive_uncertainty, sample_ddim
from probgen.models.diffusion import (
    DiffusionChain,
    MeanShiftDenoiser,
    MLPDenoiser,
    get_schedule,
    load_chain,
    save_chain,
)
from probgen.priors import GaussianPrior

T = 12


def _pair(prediction: str = "epsilon", **options):
    """A chain on ``y`` with a MeanShiftDenoiser, the residual chain on ``z`` with its inner net, and ``m``."""
    torch.manual_seed(0)
    schedule = get_schedule("linear", T)
    inner = MLPDenoiser(2, hidden_dim=8, num_blocks=1, cond_dim=3).double()
    net = MeanShiftDenoiser(inner, schedule, event_shape=(2,), prediction=prediction, **options).double()
    chain_y = DiffusionChain(net, schedule, event_shape=(2,), prediction=prediction)
    chain_z = DiffusionChain(inner, schedule, event_shape=(2,), prediction=prediction)
    return chain_y, chain_z, net


@pytest.mark.parametrize("prediction", ["epsilon", "x0"])
def test_reverse_step_is_the_residual_step_shifted(prediction):
    chain_y, chain_z, net = _pair(prediction)
    c = torch.randn(6, 3, dtype=torch.float64)
    y_t = torch.randn(6, 2, dtype=torch.float64)
    t = torch.tensor([1, 2, 5, 7, 11, 12])
    with torch.no_grad():
        m = net.condition_mean(c)
        sqrt_ab = chain_y.schedule.sqrt_alphas_cumprod[t - 1][:, None]
        sqrt_ab_prev = chain_y.schedule.alphas_cumprod_prev[t - 1].sqrt()[:, None]
        step_y = chain_y.p_mean_variance(y_t, t, condition=c)
        step_z = chain_z.p_mean_variance(y_t - sqrt_ab * m, t, condition=c)
    # mu_y(y_t) = mu_z(y_t - sqrt(ab_t) m) + sqrt(ab_{t-1}) m, with the same variance and noise prediction
    torch.testing.assert_close(step_y.mean, step_z.mean + sqrt_ab_prev * m)
    torch.testing.assert_close(step_y.variance, step_z.variance)
    torch.testing.assert_close(step_y.pred_eps, step_z.pred_eps)
    torch.testing.assert_close(step_y.pred_x0, step_z.pred_x0 + m)


def test_every_term_of_the_bound_is_the_residual_chains():
    # log p(y | c) = log p_z(y - m(c) | c): each term L_t (t = 1..T) of the bound agrees, for the same noise
    chain_y, chain_z, net = _pair()
    c = torch.randn(5, 3, dtype=torch.float64)
    y = torch.randn(5, 2, dtype=torch.float64)
    noise = torch.randn(5, 2, dtype=torch.float64)
    with torch.no_grad():
        z = y - net.condition_mean(c)
        for t in range(1, T + 1):
            torch.testing.assert_close(
                chain_y.vlb_term(y, t, noise, condition=c), chain_z.vlb_term(z, t, noise, condition=c)
            )


def test_class_labels_and_no_hidden_layers():
    schedule = get_schedule("linear", T)
    net = MeanShiftDenoiser(
        MLPDenoiser(2, hidden_dim=8, num_classes=4), schedule, event_shape=(2,), mean_hidden=5, mean_layers=0
    )
    labels = torch.tensor([0, 3, 3, 1])
    assert net.num_classes == 4 and net.cond_dim is None
    assert net.condition_mean(labels).shape == (4, 2)
    # the same label gives the same mean, different labels (almost surely) different ones
    means = net.condition_mean(labels)
    torch.testing.assert_close(means[1], means[2])
    assert not torch.allclose(means[0], means[3])
    assert net(torch.zeros(4, 2), torch.full((4,), 3), labels).shape == (4, 2)


def test_a_bayesian_mean_fits_and_conditions_the_samples():
    # only the mean's weights Bayesian; the fit pulls m(c) to E[y | c] = 3 c, and samples follow the condition
    torch.manual_seed(1)
    schedule = get_schedule("linear", 20)
    net = MeanShiftDenoiser(MLPDenoiser(1, hidden_dim=16, num_blocks=1, cond_dim=1), schedule, event_shape=(1,))
    chain = DiffusionChain(
        net, schedule, event_shape=(1,), prior=GaussianPrior(2.0, fan_in=True, deterministic=("denoiser",)),
        init_scale=5e-3,
    )  # fmt: skip
    assert chain.weight_sites and all(name.startswith("mean.") for name in chain.weight_sites)
    c = torch.rand(512, 1) * 2 - 1
    y = 3 * c + 0.1 * torch.randn(512, 1)
    fit = fit_diffusion(chain, y, condition=c, num_steps=1500, batch_size=128, lr=1e-2, seed=0, progress_bar=False)
    grid = torch.tensor([[-0.8], [0.0], [0.8]])
    readout = predictive_uncertainty(fit, grid, num_samples=64, num_posterior_draws=8, seed=0)
    assert torch.isfinite(readout.samples).all()
    # 512 samples per condition of sd 0.1 (plus the fit's error): the means 2.4 apart are told apart by far
    assert readout.mean[0, 0] < -1.5 and abs(float(readout.mean[1, 0])) < 0.6 and readout.mean[2, 0] > 1.5
    posterior_mean = fit.chain.with_weights(fit.chain.weight_posterior.mean())
    ddim = sample_ddim(posterior_mean, num_samples=3, num_sampling_steps=10, seed=0, condition=grid).samples[0, :, 0]
    assert ddim[0] < -1.5 and ddim[2] > 1.5


def test_save_and_load_rebuild_the_net(tmp_path):
    chain_y, _, net = _pair("x0", mean_hidden=6, mean_layers=1)
    save_chain(chain_y, tmp_path / "chain.pt")
    again = load_chain(tmp_path / "chain.pt")
    assert isinstance(again.net, MeanShiftDenoiser) and again.prediction == "x0"
    assert (again.net.mean_hidden, again.net.mean_layers, again.net.event_shape) == (6, 1, torch.Size([2]))
    x, t, c = torch.randn(4, 2, dtype=torch.float64), torch.tensor([1, 4, 8, 12]), torch.randn(4, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(again.net(x, t, c), net(x, t, c))


def test_a_bayesian_chain_reloads_with_its_posterior(tmp_path):
    schedule = get_schedule("linear", T)
    net = MeanShiftDenoiser(MLPDenoiser(1, hidden_dim=8, cond_dim=1), schedule, event_shape=(1,))
    prior = GaussianPrior(2.0, fan_in=True, deterministic=("denoiser",))
    chain = DiffusionChain(net, schedule, event_shape=(1,), prior=prior, init_scale=0.05)
    save_chain(chain, tmp_path / "bayes.pt")
    again = load_chain(tmp_path / "bayes.pt")
    assert again.weight_sites == chain.weight_sites
    for name, value in chain.weight_posterior.mean().items():
        torch.testing.assert_close(again.weight_posterior.mean()[name], value)


def test_a_user_denoiser_inside_is_passed_again(tmp_path):
    class Own(torch.nn.Module):
        cond_dim, num_classes = 1, None

        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 1)

        def forward(self, x, t, c):
            return self.lin(torch.cat([x, c, t[..., None].to(x.dtype)], dim=-1))

    schedule = get_schedule("linear", T)
    chain = DiffusionChain(MeanShiftDenoiser(Own(), schedule, event_shape=(1,)), schedule, event_shape=(1,))
    save_chain(chain, tmp_path / "own.pt")
    with pytest.raises(ValueError, match="pass the same architecture as net="):
        load_chain(tmp_path / "own.pt")
    again = load_chain(tmp_path / "own.pt", net=MeanShiftDenoiser(Own(), schedule, event_shape=(1,)))
    x, t, c = torch.randn(4, 1), torch.tensor([1, 4, 8, 12]), torch.randn(4, 1)
    with torch.no_grad():
        torch.testing.assert_close(again.net(x, t, c), chain.net(x, t, c))


def test_errors_name_the_problem():
    schedule = get_schedule("linear", T)
    inner = MLPDenoiser(2, hidden_dim=8, cond_dim=3)
    with pytest.raises(ValueError, match="needs a conditional denoiser"):
        MeanShiftDenoiser(MLPDenoiser(2, hidden_dim=8), schedule, event_shape=(2,))
    with pytest.raises(ValueError, match="prediction must be 'epsilon' or 'x0'"):
        MeanShiftDenoiser(inner, schedule, event_shape=(2,), prediction="v")
    with pytest.raises(TypeError, match="schedule must be a Schedule"):
        MeanShiftDenoiser(inner, schedule.betas, event_shape=(2,))
    with pytest.raises(ValueError, match="mean_layers"):
        MeanShiftDenoiser(inner, schedule, event_shape=(2,), mean_layers=-1)
    net = MeanShiftDenoiser(inner, schedule, event_shape=(2,))
    with pytest.raises(ValueError, match="prediction='epsilon' but the chain has prediction='x0'"):
        DiffusionChain(net, schedule, event_shape=(2,), prediction="x0")
    with pytest.raises(ValueError, match="schedule of 12 steps but the chain's has 20"):
        DiffusionChain(net, get_schedule("linear", 20), event_shape=(2,))
    with pytest.raises(ValueError, match=r"x must have shape \(\*batch, 2\)"):
        net(torch.zeros(4, 3), torch.ones(4, dtype=torch.long), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="needs c="):
        net(torch.zeros(4, 2), torch.ones(4, dtype=torch.long))
