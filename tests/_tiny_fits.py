"""Tiny BNN fits shared by the ArviZ, diagnostics, plot and ``probgen inspect`` tests.

Each fit runs once per session (``functools.cache``) and is shared through module-scoped
fixtures, so the suite pays for one NUTS run and one SVI run. Module-scoped fixtures are built
before the per-test seed and dtype of ``conftest.py``, so every builder sets them itself.

* :func:`nuts_fit`: a 1-8-1 tanh net on 30 points, Pyro NUTS, 2 chains of 100 warm-up + 100 draws,
  tree depth at most 3 (short trees keep it fast; the chains do not converge, which the
  diagnostics tests rely on).
* :func:`svi_fit`: the same net with its output bias deterministic, mean-field SVI for 200
  steps, 1000 independent draws from the guide.
* :func:`classifier_fit`: a 2-4-1 Bernoulli net, SVI, for the reliability diagram.

These results are shared: tests must not change them.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator

import pyro
import torch
from torch import Tensor, nn

from probgen.infer.mcmc import fit_nuts
from probgen.infer.results import MCMCResult, SVIResult
from probgen.infer.svi import fit_svi
from probgen.likelihoods import Bernoulli
from probgen.models.bnn import BNN
from probgen.priors import GaussianPrior

NUM_POINTS = 30
NUM_CHAINS = 2
NUM_DRAWS = 100
NUM_GUIDE_DRAWS = 1000


@contextlib.contextmanager
def settings() -> Iterator[None]:
    """float64, one thread and seed 0, as conftest.py sets them per test; restored afterwards."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    pyro.set_rng_seed(0)
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)


def regression_data() -> tuple[Tensor, Tensor]:
    """``y = sin(2x) + 0.2 noise`` at 30 points of [-2, 2]."""
    generator = torch.Generator().manual_seed(0)
    x = torch.linspace(-2, 2, NUM_POINTS, dtype=torch.float64).unsqueeze(-1)
    y = torch.sin(2 * x[:, 0]) + 0.2 * torch.randn(NUM_POINTS, generator=generator, dtype=torch.float64)
    return x, y


def regression_model(*, deterministic: tuple[str, ...] = ()) -> BNN:
    """A fresh 1-8-1 tanh BNN; its deterministic parameters are randomly initialised."""
    net = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    return BNN(net, GaussianPrior(1.0, fan_in=True, deterministic=deterministic))


SVI_DETERMINISTIC = ("2.bias",)


@functools.cache
def nuts_fit() -> MCMCResult:
    # trees of depth 3 on purpose (see the module docstring): the sampler's warnings about
    # saturated trees and the odd divergence are expected here, not the subject of these tests
    with settings(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(diverged|reached max_tree_depth)", category=RuntimeWarning)
        x, y = regression_data()
        return fit_nuts(
            regression_model(), x, y, num_warmup=NUM_DRAWS, num_samples=NUM_DRAWS, num_chains=NUM_CHAINS,
            max_tree_depth=3, backend="pyro", seed=0, progress_bar=False,
        )  # fmt: skip


@functools.cache
def svi_fit() -> SVIResult:
    with settings():
        x, y = regression_data()
        model = regression_model(deterministic=SVI_DETERMINISTIC)
        return fit_svi(model, x, y, num_steps=200, num_samples=NUM_GUIDE_DRAWS, seed=0, progress_bar=False)


@functools.cache
def classifier_fit() -> SVIResult:
    with settings():
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(40, 2, generator=generator, dtype=torch.float64)
        y = (x[:, 0] + x[:, 1] + 0.5 * torch.randn(40, generator=generator, dtype=torch.float64) > 0).double()
        net = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)).double()
        model = BNN(net, likelihood=Bernoulli())
        return fit_svi(model, x, y, num_steps=100, num_samples=200, seed=0, progress_bar=False)
