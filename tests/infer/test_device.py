"""``device=`` end to end: SVI, NUTS (flat and trace kernels), diffusion training, bounds, samplers, read-outs.

CI has no GPU, so most tests run on CPU tensors through ``device="cpu"``: the same code path a GPU
takes, watched by :class:`~tests._device_guard.DeviceGuard`, which fails a test for every tensor made
on the default device instead of the run's, every generator of another device, and every copy to
the host repeated at each step. ``test_on_cuda`` runs the same calls on CUDA where a GPU exists and
is skipped (with its reason) otherwise.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from probgen._device import check_device, move
from probgen.infer.diffusion import (
    evaluate_bound,
    fit_diffusion,
    mutual_information,
    predictive_uncertainty,
    sample_ancestral,
    sample_conditional,
    sample_ddim,
    sample_uncertainty,
)
from probgen.infer.mcmc import fit_nuts
from probgen.infer.svi import fit_svi
from probgen.models.bnn import BNN
from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
from probgen.priors import GaussianPrior
from tests._device_guard import DeviceGuard

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine (CI has none)")


def _data(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.linspace(-2, 2, n).unsqueeze(-1).repeat(1, 2) * torch.tensor([1.0, -0.5])
    return x, x.sum(-1).sin() + 0.1 * torch.randn(n)


def _bnn() -> BNN:
    return BNN(nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)))


def _regression(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """A Pyro program written for any device: its constants come from the data's."""
    w = pyro.sample("w", dist.Normal(torch.zeros(2, device=x.device), 1.0).to_event(1))
    s = pyro.sample("s", dist.HalfNormal(torch.ones((), device=x.device)))
    with pyro.plate("rows", x.shape[0], device=x.device):
        pyro.sample("y", dist.Normal(x @ w, s), obs=y)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Short chains diverge and warn; that is not what these tests are about."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _guarded(run):  # type: ignore[no-untyped-def]
    guard = DeviceGuard()
    with guard:
        out = run()
    assert not guard.violations(), "tensors left the run's device:\n" + guard.report()
    return out


# -- the guard itself: it must see what it is there to catch -------------------------------------


def test_the_guard_catches_a_factory_without_device_a_foreign_generator_and_a_repeated_host_copy():
    guard = DeviceGuard()
    x = torch.ones(20)
    with guard:
        torch.zeros(3)  # no device=
        torch.zeros((), dtype=torch.float64)  # a scalar: fine on a GPU
        torch.zeros(3, device=x.device)
        torch.randn(4, generator=torch.Generator(), device=x.device)  # same device: fine
        for _ in range(3):
            x.cpu()  # at every "step"
        x.tolist()  # once: set-up
    problems = {problem for problem, _ in guard.violations()}
    assert problems == {"zeros without device=", ".cpu() of 20 numbers"}, guard.report()
    assert all(where.startswith("tests/infer/test_device.py") for _, where in guard.violations())


# -- checking the argument -----------------------------------------------------------------------


def test_check_device_names_the_problem():
    assert check_device(None) is None
    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="not a device torch knows"):
        check_device("gpu0")
    with pytest.raises(TypeError, match="device must be a torch.device"):
        check_device(3)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA device"):
            check_device("cuda")
        with pytest.raises(ValueError, match="no CUDA device"):
            fit_svi(_bnn(), *_data(), num_steps=2, device="cuda", progress_bar=False)


def test_move_reaches_nested_and_named_tuples():
    from probgen.infer.nuts import NUTSConfig

    value = {"a": (torch.ones(2), [torch.zeros(1)]), "b": NUTSConfig(1, 2, 3, 0.8, 4, False)}
    moved = move(value, torch.device("cpu"))
    assert isinstance(moved["b"], NUTSConfig) and moved["b"] == value["b"]
    assert moved["a"][0].device.type == "cpu" and isinstance(moved["a"][1], list)


# -- SVI -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"batch_size": 16, "fast_path": False}], ids=["fused", "traced-minibatch"])
def test_svi_of_a_bnn_keeps_to_the_device(options):
    x, y = _data()
    fit = _guarded(lambda: fit_svi(_bnn(), x, y, num_steps=20, num_samples=10, seed=0, device="cpu", progress_bar=False, **options))
    pred = _guarded(lambda: fit.predict(x))
    _guarded(lambda: fit.log_likelihood(x, y))
    _guarded(lambda: pred.interval(0.9))
    assert pred.mean.shape == (x.shape[0],) and torch.isfinite(pred.mean).all()
    # the same run without device= is the same run
    again = fit_svi(_bnn(), x, y, num_steps=20, num_samples=10, seed=0, progress_bar=False, **options)
    assert torch.equal(fit.losses, again.losses)


def test_svi_of_a_pyro_program_keeps_to_the_device():
    x, y = _data()
    fit = _guarded(lambda: fit_svi(_regression, x, y, num_steps=20, num_samples=10, seed=0, device="cpu", progress_bar=False))
    draws = _guarded(lambda: fit.predict(x))
    assert draws["y"].shape == (1, 10, x.shape[0])


# -- NUTS ----------------------------------------------------------------------------------------


def _guarded_nuts(model, num: int, compile: bool):  # type: ignore[no-untyped-def]
    x, y = _data()
    with _quiet():
        fit = _guarded(
            lambda: fit_nuts(model, x, y, num_warmup=num, num_samples=num, num_chains=2, num_workers=1, seed=0,
                             device="cpu", compile=compile, progress_bar=False)
        )  # fmt: skip
    assert all(v.shape[:2] == (2, num) for v in fit.samples.values())
    _guarded(lambda: fit.predict(x))


@pytest.mark.parametrize("model", [_bnn, lambda: _regression], ids=["flat-bnn", "trace-kernel"])
def test_nuts_keeps_to_the_device(model):
    _guarded_nuts(model(), 20, compile=False)


@pytest.mark.slow
def test_compiled_nuts_keeps_to_the_device():
    """The compiled sampler's inputs (state, noise, tables) are made on the device; the compiler itself is not watched."""
    _guarded_nuts(_bnn(), 150, compile=True)


# -- diffusion -----------------------------------------------------------------------------------


def _chain(prior: GaussianPrior | None = None) -> DiffusionChain:
    return DiffusionChain(
        MLPDenoiser(2, hidden_dim=16, num_blocks=1, cond_dim=1), get_schedule("linear", 10), event_shape=(2,), prior=prior
    )


@pytest.mark.parametrize(
    "options", [{"timestep_sampling": "importance"}, {"objective": "eps_mse"}], ids=["elbo-importance", "eps-mse"]
)
def test_diffusion_training_evaluation_and_samplers_keep_to_the_device(options):
    data, cond = torch.randn(64, 2), torch.randn(64, 1)
    fit = _guarded(
        lambda: fit_diffusion(_chain(), data, condition=cond, num_steps=20, batch_size=16, seed=0, device="cpu",
                              progress_bar=False, **options)
    )  # fmt: skip
    assert fit.chain.device == torch.device("cpu") and fit.losses.device == torch.device("cpu")
    bound = _guarded(lambda: evaluate_bound(fit, data, condition=cond, seed=0, progress_bar=False))
    ddim = _guarded(lambda: sample_ddim(fit.chain, num_samples=8, seed=0, condition=cond[:8]))
    ancestral = _guarded(lambda: sample_ancestral(fit.chain, num_samples=8, seed=0, condition=cond[:8]))
    mask = torch.tensor([True, False])
    inpainted = _guarded(lambda: sample_conditional(fit.chain, data[:3], mask, num_samples=2, seed=0, condition=cond[:3]))
    assert torch.equal(inpainted.samples[..., 0], data[:3, 0].expand(1, 2, 3))
    assert torch.isfinite(bound.per_example).all()
    assert ddim.samples.shape == ancestral.samples.shape == (1, 8, 2)


def test_a_bayesian_chain_and_its_read_outs_keep_to_the_device():
    data, cond = torch.randn(64, 2), torch.randn(64, 1)
    fit = _guarded(
        lambda: fit_diffusion(_chain(GaussianPrior(1.0, fan_in=True)), data, condition=cond, num_steps=20,
                              batch_size=16, seed=0, device="cpu", progress_bar=False)
    )  # fmt: skip
    bound = _guarded(lambda: evaluate_bound(fit, data, condition=cond, num_posterior_draws=3, seed=0, progress_bar=False))
    assert bound.per_example.shape == (3, 64)
    _guarded(lambda: sample_uncertainty(fit, num_samples=4, num_posterior_draws=3, num_ancestral=2, seed=0, condition=cond[:4]))
    _guarded(lambda: predictive_uncertainty(fit, cond[:4], num_samples=3, num_posterior_draws=3, seed=0))
    _guarded(lambda: mutual_information(fit, num_samples=4, num_posterior_draws=3, seed=0, condition=cond[:4]))


def test_chain_to_moves_the_net_and_the_weight_posterior():
    chain = _chain(GaussianPrior(1.0, fan_in=True)).to("cpu")
    assert chain.device == torch.device("cpu")
    assert chain.weight_posterior is not None and chain.weight_posterior.loc.device == torch.device("cpu")
    with pytest.raises(ValueError, match="not a device torch knows"):
        chain.to("gpu")


# -- on a GPU, where there is one ------------------------------------------------------------------


@CUDA
def test_on_cuda():
    """Every entry point on CUDA: results stay on the GPU and are finite."""
    x, y = _data()
    svi = fit_svi(_bnn(), x, y, num_steps=200, num_samples=50, seed=0, device="cuda", progress_bar=False)
    pred = svi.predict(x)
    assert pred.mean.device.type == "cuda" and torch.isfinite(pred.mean).all()
    with _quiet():
        nuts = fit_nuts(_bnn(), x, y, num_warmup=50, num_samples=50, num_chains=2, seed=0, device="cuda", progress_bar=False)
        generic = fit_nuts(_regression, x, y, num_warmup=50, num_samples=50, num_chains=2, seed=0, device="cuda", progress_bar=False)
    assert all(v.device.type == "cuda" for v in (*nuts.samples.values(), *generic.samples.values()))
    assert torch.isfinite(nuts.predict(x).mean).all()
    with pytest.raises(ValueError, match="forks worker processes"):
        fit_nuts(_bnn(), x, y, num_warmup=5, num_samples=5, num_chains=2, num_workers=2, device="cuda", progress_bar=False)
    data, cond = torch.randn(64, 2), torch.randn(64, 1)
    fit = fit_diffusion(_chain(GaussianPrior(1.0, fan_in=True)), data, condition=cond, num_steps=20, batch_size=16,
                        seed=0, device="cuda", progress_bar=False)  # fmt: skip
    assert fit.chain.device.type == "cuda"
    bound = evaluate_bound(fit, data, condition=cond, num_posterior_draws=3, seed=0, progress_bar=False)
    assert bound.per_example.device.type == "cuda" and torch.isfinite(bound.per_example).all()
    point = fit.chain.with_weights(fit.chain.weight_posterior.mean())
    assert sample_ddim(point, num_samples=8, seed=0, condition=cond[:8]).samples.device.type == "cuda"
    assert sample_ancestral(point, num_samples=8, seed=0, condition=cond[:8]).samples.device.type == "cuda"
    readout = predictive_uncertainty(fit, cond[:4], num_samples=3, num_posterior_draws=3, seed=0)
    assert readout.epistemic_var.device.type == "cuda"
