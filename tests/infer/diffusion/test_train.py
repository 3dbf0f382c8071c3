"""Tests for probgen/infer/diffusion/train.py and its DiffusionTrainState: training, EMA, LR decay, resumption.

Statistical checks use ``Z_SCORE * standard error`` from tests/_stats.py (z = 4.5); each states its se.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from probgen.datasets.toy2d import load_8gaussians
from probgen.infer.diffusion import (
    OBJECTIVES,
    DiffusionFitResult,
    DiffusionTrainState,
    evaluate_bound,
    fit_diffusion,
    sample_ancestral,
)
from probgen.metrics import energy_distance, gaussian_nll
from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule, save_chain
from tests._stats import Z_SCORE


def _tiny_chain(num_timesteps=10, schedule="cosine"):
    net = MLPDenoiser(2, hidden_dim=8, num_blocks=1)
    return DiffusionChain(net, get_schedule(schedule, num_timesteps), event_shape=(2,))


def test_short_training_on_8gaussians_beats_a_gaussian_and_samples_well():
    data = load_8gaussians(num_train=5000, num_val=0, num_test=1000)
    chain = DiffusionChain(
        MLPDenoiser(2, hidden_dim=64, num_blocks=2).float(), get_schedule("linear", 50), event_shape=(2,)
    )
    train, test = data.train.float(), data.test.float()
    result = fit_diffusion(
        chain, train, num_steps=500, batch_size=256, lr=3e-3, seed=0, ema_decay=0.99, progress_bar=False
    )
    bound = evaluate_bound(result.chain, test, seed=0, progress_bar=False)
    baseline = gaussian_nll(train, test)
    # bound se ~0.06 nats; the single Gaussian's NLL is ~4.26 nats
    assert bound.nats + Z_SCORE * bound.nats_se < baseline
    assert bound.nats > data.entropy - Z_SCORE * bound.nats_se
    samples = sample_ancestral(result.chain, num_samples=1000, seed=0).get_samples()["x_0"]
    gaussian = torch.distributions.MultivariateNormal(train.double().mean(0), torch.cov(train.double().T))
    model_distance = energy_distance(samples, test)
    # a single Gaussian's samples are ~0.085 away, two held-out samples ~0.002; the model's ~0.005
    assert model_distance < 0.15 * energy_distance(gaussian.sample((1000,)), test)


def test_fit_leaves_the_input_untouched_and_records_the_seed():
    chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8, num_blocks=1), get_schedule("linear", 10), event_shape=(2,))
    before = {k: v.clone() for k, v in chain.net.state_dict().items()}
    result = fit_diffusion(chain, torch.randn(50, 2), num_steps=3, batch_size=8, seed=None, progress_bar=False)
    for key, value in chain.net.state_dict().items():
        assert torch.equal(value, before[key])
    assert isinstance(result.seed, int) and result.state.config["seed"] == result.seed
    assert result.chain.net is not chain.net
    assert isinstance(result, DiffusionFitResult) and result.wall_time > 0


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_resume_continues_exactly(objective, tmp_path):
    chain = _tiny_chain()
    data = torch.randn(100, 2)
    options = dict(batch_size=32, seed=3, objective=objective, ema_decay=0.9, progress_bar=False)
    if objective == "elbo":
        options["timestep_sampling"] = "importance"
    whole = fit_diffusion(chain, data, num_steps=12, **options)
    path = tmp_path / "state.pt"
    first = fit_diffusion(chain, data, num_steps=5, checkpoint=path, checkpoint_every=5, **options)
    resumed = DiffusionTrainState.load(path)
    rest = fit_diffusion(chain, data, num_steps=7, init_state=resumed, **{**options, "seed": None})
    assert torch.equal(torch.cat([first.losses, rest.losses]), whole.losses)
    for key, value in whole.chain.net.state_dict().items():
        assert torch.equal(rest.chain.net.state_dict()[key], value)
    assert rest.state.step == 12 and rest.seed == 3
    assert DiffusionTrainState.load(path).step == 5


def test_resume_with_learning_rate_decay_continues_exactly():
    chain, data = _tiny_chain(), torch.randn(100, 2)
    options = dict(batch_size=32, seed=1, lr=1e-2, final_lr=1e-4, decay_steps=12, progress_bar=False)
    whole = fit_diffusion(chain, data, num_steps=12, **options)
    first = fit_diffusion(chain, data, num_steps=5, **options)
    rest = fit_diffusion(chain, data, num_steps=7, init_state=first.state, **{**options, "decay_steps": None})
    assert torch.equal(torch.cat([first.losses, rest.losses]), whole.losses)
    assert rest.state.scheduler_state == whole.state.scheduler_state


def test_learning_rate_decays_exponentially_through_a_torch_scheduler():
    chain, data = _tiny_chain(), torch.randn(40, 2)
    lr, final_lr = 1e-2, 1e-4
    for steps in (1, 4, 8, 10):
        state = fit_diffusion(
            chain, data, num_steps=steps, batch_size=8, lr=lr, final_lr=final_lr, decay_steps=8, seed=0, progress_bar=False
        ).state
        # after k steps the next step's rate is lr * (final_lr / lr) ** min(k / decay_steps, 1)
        expected = lr * (final_lr / lr) ** min(steps / 8, 1.0)
        assert state.scheduler_state is not None and state.scheduler_state["last_epoch"] == steps
        assert state.optimizer_state["param_groups"][0]["lr"] == pytest.approx(expected, rel=1e-12)
    assert fit_diffusion(chain, data, num_steps=2, batch_size=8, seed=0, progress_bar=False).state.scheduler_state is None


class _CountingNet(nn.Module):
    """A denoiser with a float buffer that counts its training calls (as a running statistic would)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x, t):
        if self.training:
            self.calls += 1
        return self.linear(x)


def test_ema_averages_weights_and_buffers_from_the_initial_network():
    decay, num_steps = 0.8, 6
    chain = DiffusionChain(_CountingNet(), get_schedule("linear", 5), event_shape=(2,))
    data = torch.randn(30, 2)
    options = dict(batch_size=8, seed=2, progress_bar=False)
    averaged = fit_diffusion(chain, data, num_steps=num_steps, ema_decay=decay, **options)
    # the same run without EMA, one step at a time, gives the weights the average is taken over
    ema = {k: v.clone() for k, v in chain.net.state_dict().items()}
    state = None
    for _ in range(num_steps):
        step = fit_diffusion(chain, data, num_steps=1, init_state=state, **options)
        state = step.state
        for key, value in state.net_state.items():
            ema[key] = decay * ema[key] + (1 - decay) * value
    for key, value in averaged.chain.net.state_dict().items():
        torch.testing.assert_close(value, ema[key], rtol=1e-12, atol=1e-12)
    assert float(averaged.chain.net.calls) != float(state.net_state["calls"])  # the buffer is averaged too
    assert state.ema_state is None and averaged.state.ema_state is not None
    assert int(averaged.state.ema_state["n_averaged"]) == num_steps + 1  # the initial weights, then every step


def test_train_state_round_trips_through_a_weights_only_file(tmp_path):
    state = fit_diffusion(
        _tiny_chain(), torch.randn(40, 2), num_steps=3, batch_size=8, seed=0, ema_decay=0.9, final_lr=1e-4,
        timestep_sampling="importance", progress_bar=False,
    ).state  # fmt: skip
    path = tmp_path / "state.pt"
    state.save(path)
    assert not (tmp_path / "state.pt.tmp").exists()  # written atomically, then moved into place
    raw = torch.load(path, weights_only=True)  # plain data only: no class is unpickled
    assert raw["format"] == "probgen.diffusion_train_state" and raw["version"] == 1
    again = DiffusionTrainState.load(path)
    assert again._fields == state._fields
    assert again.step == state.step and again.config == state.config
    assert again.scheduler_state == state.scheduler_state
    torch.testing.assert_close(again.net_state, state.net_state, rtol=0, atol=0)
    torch.testing.assert_close(again.ema_state, state.ema_state, rtol=0, atol=0)
    torch.testing.assert_close(again.sampler_state, state.sampler_state, rtol=0, atol=0)
    assert torch.equal(again.rng_state, state.rng_state)


def test_loading_a_train_state_refuses_other_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        DiffusionTrainState.load(tmp_path / "missing.pt")
    pickled = tmp_path / "module.pt"
    torch.save(nn.Linear(2, 2), pickled)  # a pickled object: torch.load(weights_only=True) refuses it
    with pytest.raises(ValueError, match="is not a diffusion training state saved by probgen: torch.load"):
        DiffusionTrainState.load(pickled)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="is not a diffusion training state saved by probgen"):
        DiffusionTrainState.load(text)
    old = tmp_path / "old.pt"
    torch.save({"step": 5, "net_state": {}, "config": {}}, old)  # a checkpoint from before versioned files
    with pytest.raises(ValueError, match="no probgen format: a foreign file, or one from a probgen older"):
        DiffusionTrainState.load(old)
    chain_file = tmp_path / "chain.pt"
    save_chain(_tiny_chain(), chain_file)
    with pytest.raises(ValueError, match="format 'probgen.diffusion_chain'; expected 'probgen.diffusion_train_state'"):
        DiffusionTrainState.load(chain_file)
    newer = tmp_path / "newer.pt"
    torch.save({"format": "probgen.diffusion_train_state", "version": 99}, newer)
    with pytest.raises(ValueError, match="version 99 of its format.*newer than this probgen reads"):
        DiffusionTrainState.load(newer)


def test_fit_errors_name_the_problem():
    chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("linear", 10), event_shape=(2,))
    with pytest.raises(ValueError, match="unknown objective 'elb'; expected one of 'elbo', 'eps_mse'"):
        fit_diffusion(chain, torch.randn(10, 2), num_steps=1, objective="elb")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"data must have shape \(N, 2\)"):
        fit_diffusion(chain, torch.randn(10, 3), num_steps=1)
    with pytest.raises(ValueError, match="needs objective='elbo'"):
        fit_diffusion(chain, torch.randn(10, 2), num_steps=1, objective="eps_mse", timestep_sampling="importance")
    with pytest.raises(ValueError, match="num_steps must be a positive int, got 0"):
        fit_diffusion(chain, torch.randn(10, 2), num_steps=0)
    state = fit_diffusion(chain, torch.randn(10, 2), num_steps=1, seed=0, progress_bar=False).state
    with pytest.raises(ValueError, match="init_state was trained with objective='elbo'"):
        fit_diffusion(chain, torch.randn(10, 2), num_steps=1, objective="eps_mse", init_state=state)
    with pytest.raises(ValueError, match="init_state was trained with final_lr=None"):
        fit_diffusion(chain, torch.randn(10, 2), num_steps=1, final_lr=1e-4, init_state=state)
    with pytest.raises(ValueError, match="disagree on ema_decay"):
        fit_diffusion(chain, torch.randn(10, 2), num_steps=1, ema_decay=0.9, init_state=state)
    with pytest.raises(ValueError, match="decay_steps=1, got 5"):
        fit_diffusion(chain, torch.randn(10, 2), num_steps=1, decay_steps=5, init_state=state)
    longer = DiffusionChain(chain.net, get_schedule("linear", 20), event_shape=(2,))
    with pytest.raises(ValueError, match="init_state was trained with num_timesteps=10, but the chain has 20"):
        fit_diffusion(longer, torch.randn(10, 2), num_steps=1, init_state=state)
    with pytest.raises(TypeError, match="init_state must be a DiffusionTrainState"):
        fit_diffusion(chain, torch.randn(10, 2), num_steps=1, init_state="state.pt")  # type: ignore[arg-type]
