"""Every public string option is a ``Literal`` whose runtime check reads the same tuple of choices.

Each case names the ``Literal``, the tuple the check reads, and calls of the public entry point. The
tests are driven from the tuple: it must be the ``Literal``'s arguments, a wrong value must be refused
with every choice listed, and (where a call is cheap) every choice must pass the check.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, get_args

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from probgen import BNN, plots
from probgen.cli import bnn as cli_bnn
from probgen.datasets import toy2d
from probgen.infer import _flat, mcmc, svi
from probgen.infer import diffusion as infer_diffusion
from probgen.models.diffusion import MLPDenoiser
from probgen.models.diffusion import chain as diffusion_chain
from probgen.models.diffusion import schedules
from tests import _tiny_fits as fits

X, Y = torch.linspace(-1, 1, 8).unsqueeze(-1), torch.linspace(0, 1, 8)


def _chain(**options: Any) -> diffusion_chain.DiffusionChain:
    net = MLPDenoiser(2, hidden_dim=4, num_blocks=1)
    return diffusion_chain.DiffusionChain(net, schedules.get_schedule("linear", 3), event_shape=(2,), **options)


def _fit_diffusion(**options: Any) -> Any:
    data = torch.zeros(4, 2)
    return infer_diffusion.fit_diffusion(_chain(), data, num_steps=1, batch_size=2, seed=0, progress_bar=False, **options)


def _bnn() -> BNN:
    return BNN(nn.Sequential(nn.Linear(1, 2), nn.Tanh(), nn.Linear(2, 1)))


def _coverage(interval: str) -> Any:
    ax = plots.plot_coverage(fits.svi_fit(), interval=interval)  # type: ignore[arg-type]
    plt.close(ax.get_figure(root=True))
    return ax


def _bound_terms(unit: str) -> Any:
    bound = infer_diffusion.evaluate_bound(_chain(), torch.zeros(2, 2), seed=0, progress_bar=False)
    ax = plots.plot_bound_terms(bound, unit=unit)  # type: ignore[arg-type]
    plt.close(ax.get_figure(root=True))
    return ax


class Case(NamedTuple):
    alias: Any  # the Literal
    choices: tuple[str, ...]  # the tuple the runtime check reads
    call: Callable[[str], Any]  # the public entry point with one value of the option
    cheap: bool = True  # whether every choice can be run here


CASES: dict[str, Case] = {
    "schedule": Case(schedules.ScheduleName, schedules.SCHEDULE_NAMES, lambda v: schedules.get_schedule(v, 4)),  # type: ignore[arg-type]
    "variance": Case(diffusion_chain.Variance, diffusion_chain.VARIANCES, lambda v: _chain(variance=v)),
    "prediction": Case(diffusion_chain.Prediction, diffusion_chain.PREDICTIONS, lambda v: _chain(prediction=v)),
    "objective": Case(infer_diffusion.Objective, infer_diffusion.OBJECTIVES, lambda v: _fit_diffusion(objective=v)),
    "timestep_sampling": Case(
        infer_diffusion.TimestepSampling,
        infer_diffusion.TIMESTEP_SAMPLINGS,
        lambda v: _fit_diffusion(timestep_sampling=v),
    ),
    "toy": Case(toy2d.Toy2DName, toy2d.TOY2D_NAMES, lambda v: toy2d.load_toy2d(v, num_train=4, num_val=0, num_test=4)),  # type: ignore[arg-type]
    "interval": Case(plots.Interval, plots.INTERVALS, _coverage),
    "unit": Case(plots.BoundUnit, plots.BOUND_UNITS, _bound_terms),
    "guide": Case(svi.GuideName, svi.GUIDE_NAMES, lambda v: svi.SVI(_bnn(), guide=v)),
    "elbo": Case(svi.ElboName, svi.ELBO_NAMES, lambda v: svi.SVI(_bnn(), elbo=v)),  # type: ignore[arg-type]
    "kernel": Case(_flat.Kernel, _flat.KERNELS, lambda v: _flat.compile_bnn(_bnn(), X, Y, kernel=v)),
    # a full fit per choice is the business of tests/infer/test_mcmc.py and tests/cli/test_cli_bnn.py
    "backend": Case(
        mcmc.Backend,
        mcmc.BACKEND_CHOICES,
        lambda v: mcmc.fit_nuts(_bnn(), X, Y, num_warmup=1, num_samples=1, backend=v, progress_bar=False),  # type: ignore[arg-type]
        cheap=False,
    ),
    "method": Case(
        cli_bnn.Method,
        cli_bnn.METHODS,
        lambda v: cli_bnn.fit_from_csv(Path("unused.csv"), "y", None, v, Path("unused"), argparse.Namespace()),  # type: ignore[arg-type]
        cheap=False,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_check_reads_the_literal(name):
    case = CASES[name]
    assert tuple(case.choices) == get_args(case.alias)


@pytest.mark.parametrize("name", list(CASES))
def test_a_wrong_choice_is_refused_with_every_choice_listed(name):
    listed = ", ".join(repr(c) for c in CASES[name].choices)
    with pytest.raises(ValueError, match=re.escape(f"unknown {name} 'nope'; expected one of {listed}.")):
        CASES[name].call("nope")


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if case.cheap])
def test_every_choice_passes_the_check(name):
    for value in CASES[name].choices:
        CASES[name].call(value)
