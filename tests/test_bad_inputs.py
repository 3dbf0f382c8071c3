"""The public API and the command line driven with malformed inputs, one table row each.

Every row says what a user passes and what must happen: either it works (NumPy, float64 and pandas
inputs should), or it raises the documented exception with a message that names the argument, the
file, the column or the flag. Nothing may fail deep inside torch or Pyro, and the command line never
prints a traceback for a user's mistake.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import probgen
from probgen import BNN, Bernoulli, Categorical, Gaussian, GaussianPrior, HeteroskedasticGaussian, fit_nuts, fit_svi
from probgen._io import CheckpointError
from probgen.cli import main
from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
from tests import _tiny_fits as fits

OK = "works"
X = torch.linspace(-1, 1, 20).reshape(10, 2)
Y = torch.linspace(0, 1, 10)
LABELS = torch.tensor([0, 1] * 5)
CLASSES = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])


def mlp(outputs: int = 1, likelihood: Any = None, features: int = 2) -> BNN:
    return BNN(nn.Sequential(nn.Linear(features, 4), nn.Tanh(), nn.Linear(4, outputs)), likelihood=likelihood)


def svi(model: Any, *data: Any, **options: Any) -> Any:
    return fit_svi(model, *data, **{"num_steps": 2, "num_samples": 3, "progress_bar": False, **options})


def nuts(model: Any, *data: Any, **options: Any) -> Any:
    defaults = {"num_warmup": 2, "num_samples": 2, "num_chains": 1, "progress_bar": False, "compile": False}
    return fit_nuts(model, *data, **{**defaults, **options})


def read_only(array: np.ndarray) -> np.ndarray:
    out = array.copy()
    out.setflags(write=False)
    return out


def with_nan(t: torch.Tensor, index: tuple[int, ...] = (0,)) -> torch.Tensor:
    out = t.clone().double()
    out[index] = math.nan
    return out


def eight_schools(sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("J", len(sigma)):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0])
Y8 = torch.tensor([28.0, 8.0, -3.0, 7.0])


def chain(num_timesteps: int = 5) -> DiffusionChain:
    return DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("linear", num_timesteps), event_shape=(2,))


POINTS = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))

# -- the API -------------------------------------------------------------------------------------

API: list[tuple[str, Callable[[], Any], Any]] = [
    # BNN data: types and containers that must work
    ("numpy-float64", lambda: svi(mlp(), X.numpy().astype(np.float64), Y.numpy()), OK),
    ("numpy-float32", lambda: svi(mlp(), X.numpy().astype(np.float32), Y.numpy().astype(np.float32)), OK),
    ("pandas-frame", lambda: svi(mlp(), pd.DataFrame(X.numpy(), columns=["a", "b"]), pd.Series(Y.numpy())), OK),
    ("lists", lambda: svi(mlp(), X.tolist(), Y.tolist()), OK),
    ("integer-x", lambda: svi(mlp(), (X * 10).long(), Y), OK),
    ("float32-tensors", lambda: svi(mlp(), X.float(), Y.float()), OK),
    ("y-one-column", lambda: svi(mlp(), X, Y[:, None]), OK),
    ("readonly-numpy", lambda: svi(mlp(), read_only(X.numpy()), read_only(Y.numpy())), OK),
    ("labels-as-float", lambda: svi(mlp(likelihood=Bernoulli()), X, LABELS.double()), OK),
    ("labels-numpy-int", lambda: svi(mlp(3, Categorical(3)), X, CLASSES.numpy()), OK),
    ("multi-output", lambda: svi(mlp(2), X, torch.stack([Y, Y], 1)), OK),
    ("heteroskedastic", lambda: svi(mlp(2, HeteroskedasticGaussian()), X, Y), OK),
    # BNN data: what must be refused, by name
    ("nan-x", lambda: svi(mlp(), with_nan(X, (3, 1)), Y), (ValueError, "x contains 1 NaN")),
    ("inf-x", lambda: svi(mlp(), X.masked_fill(X > 0.9, math.inf), Y), (ValueError, "x contains .* NaN or infinite")),
    ("nan-y", lambda: svi(mlp(), X, with_nan(Y)), (ValueError, "y contains 1 NaN")),
    ("y-rows", lambda: svi(mlp(), X, Y[:7]), (ValueError, "same number of rows, got 10 and 7")),
    ("x-1d", lambda: svi(mlp(), X[:, 0], Y), (ValueError, r"x must be 2-D, got shape \(10,\)")),
    ("x-3d", lambda: svi(mlp(), X[:, :, None], Y), (ValueError, r"x must be 2-D, got shape \(10, 2, 1\)")),
    ("x-width", lambda: svi(mlp(), torch.randn(10, 3), Y), (ValueError, "x has 3 features but the network expects 2")),
    ("x-empty", lambda: svi(mlp(), X[:0], Y[:0]), (ValueError, "x is empty")),
    ("x-strings", lambda: svi(mlp(), np.array([["a", "b"]] * 10), Y), (TypeError, "x must hold real numbers")),
    ("x-complex", lambda: svi(mlp(), X.to(torch.complex64), Y), (TypeError, "x must hold real numbers")),
    ("y-strings", lambda: svi(mlp(), X, np.array(["u"] * 10)), (TypeError, "y must hold real numbers")),
    ("y-3d", lambda: svi(mlp(), X, Y[:, None, None]), (ValueError, r"y must be 1-D or 2-D")),
    ("y-width", lambda: svi(mlp(), X, torch.stack([Y, Y], 1)), (ValueError, r"network has 1 output\(s\) but Gaussian.*needs 2")),
    ("bernoulli-two-outputs", lambda: svi(mlp(2, Bernoulli()), X, LABELS), (ValueError, r"2 output\(s\) but Bernoulli\(\) needs 1.*Categorical\(2\)")),
    ("categorical-one-output", lambda: svi(mlp(1, Categorical(3)), X, CLASSES), (ValueError, r"1 output\(s\) but Categorical\(num_classes=3\) needs 3")),
    ("heteroskedastic-one-output", lambda: svi(mlp(1, HeteroskedasticGaussian()), X, Y), (ValueError, "needs 2 .*a mean and a raw scale")),
    ("bernoulli-labels", lambda: svi(mlp(likelihood=Bernoulli()), X, LABELS + 1), (ValueError, "binary labels 0 and 1")),
    ("bernoulli-fractions", lambda: svi(mlp(likelihood=Bernoulli()), X, Y), (TypeError, "integer class labels")),
    ("categorical-range", lambda: svi(mlp(3, Categorical(3)), X, CLASSES + 1), (ValueError, r"class labels in 0..2, got values from 1 to 3")),
    ("categorical-negative", lambda: svi(mlp(3, Categorical(3)), X, CLASSES - 1), (ValueError, "class labels in 0..2")),
    ("no-y", lambda: nuts(mlp(), X, None), (ValueError, "y is required")),
    ("only-x", lambda: nuts(mlp(), X), (TypeError, r"needs its data as \(x, y\)")),
    ("bnn-kwargs", lambda: svi(mlp(), X, Y, model_kwargs={"z": 1}), (TypeError, "takes its data positionally")),
    # models
    ("model-string", lambda: svi("model", X, Y), (TypeError, "callable Pyro program")),
    ("model-module", lambda: svi(nn.Linear(2, 1), X, Y), (TypeError, "probgen.BNN")),
    ("bnn-net-type", lambda: BNN("net"), (TypeError, "net must be a torch.nn.Module")),
    ("bnn-no-params", lambda: BNN(nn.Tanh()), (ValueError, "net has no parameters")),
    ("bnn-prior-type", lambda: BNN(nn.Linear(2, 1), prior="normal"), (TypeError, "prior must be a probgen.priors.Prior")),
    ("bnn-likelihood-type", lambda: BNN(nn.Linear(2, 1), likelihood="gauss"), (TypeError, "likelihood must be")),
    ("prior-scale", lambda: GaussianPrior(0.0), (ValueError, "scale must be a finite positive number")),
    ("prior-layer-scale", lambda: GaussianPrior(1.0, layer_scales={"0": -1.0}), (ValueError, r"layer_scales\['0'\]")),
    ("prior-all-deterministic", lambda: BNN(nn.Linear(2, 1), GaussianPrior(deterministic=("weight", "bias"))), (ValueError, "makes no parameter Bayesian")),
    ("noise-scale", lambda: Gaussian(noise_scale=-1.0), (ValueError, "noise_scale must be a finite positive")),
    ("categorical-classes", lambda: Categorical(1), (ValueError, "num_classes must be an int of at least 2")),
    # NUTS options
    ("chains-zero", lambda: nuts(mlp(), X, Y, num_chains=0), (ValueError, "num_chains must be a positive int, got 0")),
    ("chains-float", lambda: nuts(mlp(), X, Y, num_chains=1.5), (TypeError, "num_chains must be an int")),
    ("chains-string", lambda: nuts(mlp(), X, Y, num_chains="4"), (TypeError, "num_chains must be an int")),
    ("chains-bool", lambda: nuts(mlp(), X, Y, num_chains=True), (TypeError, "num_chains must be an int")),
    ("warmup-negative", lambda: nuts(mlp(), X, Y, num_warmup=-1), (ValueError, "num_warmup must be a non-negative int")),
    ("samples-zero", lambda: nuts(mlp(), X, Y, num_samples=0), (ValueError, "num_samples must be a positive int")),
    ("accept-zero", lambda: nuts(mlp(), X, Y, target_accept_prob=0.0), (ValueError, r"target_accept_prob must lie in \(0, 1\)")),
    ("accept-one", lambda: nuts(mlp(), X, Y, target_accept_prob=1.0), (ValueError, "target_accept_prob must lie in")),
    ("accept-string", lambda: nuts(mlp(), X, Y, target_accept_prob="0.8"), (TypeError, "target_accept_prob must be a number")),
    ("depth-zero", lambda: nuts(mlp(), X, Y, max_tree_depth=0), (ValueError, "max_tree_depth must be a positive int")),
    ("backend", lambda: nuts(mlp(), X, Y, backend="stan"), (ValueError, "unknown backend 'stan'; expected one of 'auto', 'flat', 'pyro'")),
    ("seed-negative", lambda: nuts(mlp(), X, Y, seed=-1), (ValueError, "seed must be non-negative")),
    ("seed-string", lambda: nuts(mlp(), X, Y, seed="a"), (TypeError, "seed must be an int or None")),
    ("seed-float", lambda: nuts(mlp(), X, Y, seed=1.5), (TypeError, "seed must be an int or None")),
    ("workers-zero", lambda: nuts(mlp(), X, Y, num_workers=0), (ValueError, "num_workers must be a positive int")),
    ("workers-over-chains", lambda: nuts(mlp(), X, Y, num_workers=3), (ValueError, "num_workers=3 exceeds num_chains=1")),
    ("compile-string", lambda: nuts(mlp(), X, Y, compile="yes"), (TypeError, "compile must be True, False or None")),
    ("nuts-typo", lambda: nuts(mlp(), X, Y, num_warmpu=3), (TypeError, r"'num_warmpu' \(did you mean 'num_warmup'\?\)")),
    ("nuts-data-by-keyword", lambda: fit_nuts(mlp(), x=X, y=Y), (TypeError, "Model data go positionally")),
    # SVI options
    ("guide-name", lambda: svi(mlp(), X, Y, guide="fullrank"), (ValueError, "unknown guide 'fullrank'; expected one of 'normal'")),
    ("guide-type", lambda: svi(mlp(), X, Y, guide=3), (TypeError, "guide must be one of")),
    ("elbo", lambda: svi(mlp(), X, Y, elbo="renyi"), (ValueError, "unknown elbo 'renyi'; expected one of 'auto'")),
    ("steps-zero", lambda: svi(mlp(), X, Y, num_steps=0), (ValueError, "num_steps must be a positive int")),
    ("lr-zero", lambda: svi(mlp(), X, Y, lr=0.0), (ValueError, "lr must be a finite positive number")),
    ("lr-nan", lambda: svi(mlp(), X, Y, lr=math.nan), (ValueError, "lr must be a finite positive number")),
    ("lr-inf", lambda: svi(mlp(), X, Y, lr=math.inf), (ValueError, "lr must be a finite positive number")),
    ("lr-string", lambda: svi(mlp(), X, Y, lr="0.01"), (TypeError, "lr must be a number")),
    ("final-lr", lambda: svi(mlp(), X, Y, final_lr=-1e-3), (ValueError, "final_lr must be a finite positive")),
    ("decay-steps", lambda: svi(mlp(), X, Y, decay_steps=0), (ValueError, "decay_steps must be a positive int")),
    ("batch-zero", lambda: svi(mlp(), X, Y, batch_size=0), (ValueError, "batch_size must be a positive int")),
    ("draws-zero", lambda: svi(mlp(), X, Y, num_samples=0), (ValueError, "num_samples must be a positive int")),
    ("particles-zero", lambda: svi(mlp(), X, Y, num_particles=0), (ValueError, "num_particles must be a positive int")),
    ("init-scale", lambda: svi(mlp(), X, Y, init_scale=0.0), (ValueError, "init_scale must be a finite positive")),
    ("rank", lambda: svi(mlp(), X, Y, guide="lowrank", rank=0), (ValueError, "rank must be a positive int")),
    ("patience", lambda: svi(mlp(), X, Y, patience=0), (ValueError, "patience must be a positive int")),
    ("eval-every", lambda: svi(mlp(), X, Y, eval_every=0), (ValueError, "eval_every must be a positive int")),
    ("min-delta", lambda: svi(mlp(), X, Y, min_delta=-1.0), (ValueError, "min_delta must be a finite non-negative")),
    ("validation-width", lambda: svi(mlp(), X, Y, validation=(torch.randn(5, 3), Y[:5])), (ValueError, "x has 3 features")),
    ("svi-typo", lambda: svi(mlp(), X, Y, num_step=3), (TypeError, r"'num_step' \(did you mean 'num_steps'\?\)")),
    ("init-state-type", lambda: svi(mlp(), X, Y, init_state={"step": 3}), (TypeError, "init_state must be an SVIState")),
    ("init-state-guide", lambda: svi(mlp(), X, Y, guide="delta", init_state=svi(mlp(), X, Y).state), (ValueError, "comes from a 'normal' guide")),
    ("init-state-architecture", lambda: svi(BNN(nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))), X, Y, init_state=svi(mlp(), X, Y).state), (ValueError, "init_state does not fit the guide.*other shapes")),
    ("diverging", lambda: svi(mlp(), X * 1e3, Y * 1e6, lr=1e3, num_steps=50), (FloatingPointError, "diverged; lower lr")),
    # results
    ("predict-seed", lambda: fits.svi_fit().predict(fits.regression_data()[0], seed="a"), (TypeError, "seed must be an int or None")),
    ("predict-width", lambda: fits.svi_fit().predict(torch.randn(5, 3)), (ValueError, "x has 3 features but the network expects 1")),
    ("predict-nan", lambda: fits.svi_fit().predict(with_nan(torch.zeros(5, 1))), (ValueError, "x contains 1 NaN")),
    ("predict-kwargs-type", lambda: fits.svi_fit().predict(X[:, :1], model_kwargs=[1]), (TypeError, "model_kwargs must be a dict")),
    ("log-likelihood-half", lambda: fits.svi_fit().log_likelihood(X[:, :1]), (ValueError, "pass both x and y")),
    ("interval-level", lambda: fits.svi_fit().predict(X[:, :1]).interval(1.5), (ValueError, r"level must lie in \(0, 1\)")),
    ("to-arviz-type", lambda: probgen.to_arviz("posterior.nc"), (TypeError, "probgen result")),
    # a user's own Pyro program
    ("pyro-numpy", lambda: svi(eight_schools, SIGMA.numpy(), Y8.numpy()), OK),
    ("pyro-by-keyword", lambda: nuts(eight_schools, sigma=SIGMA, y=Y8), (TypeError, r"'sigma', 'y'.*model_kwargs")),
    ("pyro-model-kwargs", lambda: svi(eight_schools, SIGMA, model_kwargs={"y": Y8}), OK),
    ("pyro-kwargs-type", lambda: svi(eight_schools, SIGMA, model_kwargs=[Y8]), (TypeError, "model_kwargs")),
    ("pyro-too-many", lambda: svi(eight_schools, SIGMA, Y8, Y8), (TypeError, "cannot be called with 3 positional")),
    ("pyro-unknown-keyword", lambda: svi(eight_schools, SIGMA, model_kwargs={"y": Y8, "z": 1}), (TypeError, "cannot be called with")),
    ("pyro-observes-nothing", lambda: nuts(eight_schools, SIGMA), (ValueError, "observes nothing")),
    ("pyro-nan", lambda: nuts(eight_schools, SIGMA, with_nan(Y8)), (ValueError, "y contains 1 NaN")),
    ("pyro-batch-size", lambda: svi(eight_schools, SIGMA, Y8, batch_size=2), (ValueError, "batch_size minibatches probgen's BNN")),
    ("pyro-negative-scale", lambda: nuts(eight_schools, -SIGMA, Y8), (ValueError, "parameter scale")),
    # diffusion
    ("ddim-eta-high", lambda: probgen.sample_ddim(chain(), num_samples=4, eta=5.0, seed=0), (ValueError, r"eta must lie in \[0, 1\], got 5.0")),
    ("ddim-eta-negative", lambda: probgen.sample_ddim(chain(), num_samples=4, eta=-0.1, seed=0), (ValueError, r"eta must lie in \[0, 1\]")),
    ("ddim-eta-one", lambda: probgen.sample_ddim(chain(), num_samples=4, eta=1.0, seed=0), OK),
    ("ddim-steps-one", lambda: probgen.sample_ddim(chain(), num_samples=4, num_sampling_steps=1, seed=0), (ValueError, "num_sampling_steps must lie in")),
    ("ddim-steps-over", lambda: probgen.sample_ddim(chain(), num_samples=4, num_sampling_steps=9, seed=0), (ValueError, r"num_sampling_steps must lie in \[2, 5\]")),
    ("ancestral-zero", lambda: probgen.sample_ancestral(chain(), num_samples=0, seed=0), (ValueError, "num_samples must be a positive int")),
    ("diffusion-steps", lambda: probgen.fit_diffusion(chain(), POINTS, num_steps=0, seed=0, progress_bar=False), (ValueError, "num_steps must be a positive int")),
    ("diffusion-batch", lambda: probgen.fit_diffusion(chain(), POINTS, num_steps=1, batch_size=0, progress_bar=False), (ValueError, "batch_size must be a positive int")),
    ("diffusion-lr", lambda: probgen.fit_diffusion(chain(), POINTS, num_steps=1, lr=-1.0, progress_bar=False), (ValueError, "lr must be a finite positive")),
    ("diffusion-shape", lambda: probgen.fit_diffusion(chain(), torch.randn(20, 3), num_steps=1, progress_bar=False), (ValueError, r"data must have shape \(N, 2\)")),
    ("diffusion-nan", lambda: probgen.fit_diffusion(chain(), with_nan(POINTS, (0, 0)), num_steps=1, progress_bar=False), (ValueError, "data contains 1 NaN")),
    ("diffusion-objective", lambda: probgen.fit_diffusion(chain(), POINTS, num_steps=1, objective="mse", progress_bar=False), (ValueError, "unknown objective 'mse'")),
    ("diffusion-timestep-sampling", lambda: probgen.fit_diffusion(chain(), POINTS, num_steps=1, timestep_sampling="greedy", progress_bar=False), (ValueError, "unknown timestep_sampling 'greedy'")),
    ("diffusion-ema", lambda: probgen.fit_diffusion(chain(), POINTS, num_steps=1, ema_decay=1.5, progress_bar=False), (ValueError, "ema_decay must lie in")),
    ("diffusion-numpy", lambda: probgen.fit_diffusion(chain(), POINTS.numpy(), num_steps=1, progress_bar=False), OK),
    ("bound-shape", lambda: probgen.evaluate_bound(chain(), torch.randn(5, 3), seed=0, progress_bar=False), (ValueError, r"must have shape \(N, 2\)")),
    ("schedule-name", lambda: get_schedule("cosin", 5), (ValueError, "unknown schedule 'cosin'")),
    ("schedule-length", lambda: get_schedule("linear", 0), (ValueError, "num_timesteps must be a positive int")),
    ("chain-type", lambda: probgen.sample_ancestral("chain", num_samples=2), (TypeError, "chain must be a DiffusionChain")),
]


@pytest.mark.parametrize("call, expected", [case[1:] for case in API], ids=[case[0] for case in API])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # two-draw NUTS runs warn about their own trees
def test_the_api_refuses_bad_input_by_name(call, expected):
    if expected == OK:
        call()
        return
    error, match = expected
    with pytest.raises(error, match=match):
        call()


# -- files ----------------------------------------------------------------------------------------


def _truncated(path: Path, tmp: Path) -> Path:
    broken = tmp / f"truncated-{path.name}"
    broken.write_bytes(path.read_bytes()[: max(path.stat().st_size // 3, 1)])
    return broken


def test_corrupt_and_foreign_files_are_named(tmp_path):
    posterior = tmp_path / "posterior.nc"
    fits.svi_fit().to_arviz(predictive=False).to_netcdf(posterior)
    state = tmp_path / "state.pt"
    fits.svi_fit().state.save(state)
    chain_file = tmp_path / "chain.pt"
    probgen.save_chain(chain(), chain_file)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    model = fits.regression_model(deterministic=fits.SVI_DETERMINISTIC)
    cases: list[tuple[Callable[[], Any], type[Exception], str]] = [
        (lambda: probgen.load_result(tmp_path / "missing.nc", model), FileNotFoundError, "no such file"),
        (lambda: probgen.load_result(_truncated(posterior, tmp_path), model), ValueError, "truncated-posterior.nc' is not a readable ArviZ NetCDF"),
        (lambda: probgen.load_result(text, model), ValueError, "notes.txt' is not a readable ArviZ NetCDF"),
        (lambda: probgen.SVIState.load(tmp_path / "missing.pt"), FileNotFoundError, "no such file"),
        (lambda: probgen.SVIState.load(_truncated(state, tmp_path)), CheckpointError, "truncated-state.pt is not an SVI state.*truncated"),
        (lambda: probgen.SVIState.load(foreign), CheckpointError, "foreign.pt is not an SVI state saved by probgen"),
        (lambda: probgen.SVIState.load(chain_file), CheckpointError, r"chain.pt is not an SVI state.*'probgen.diffusion_chain'"),
        (lambda: probgen.SVIState.load(text), CheckpointError, "notes.txt is not an SVI state"),
        (lambda: probgen.load_chain(state), ValueError, r"state.pt is not a diffusion chain.*'probgen.svi_state'"),
        (lambda: probgen.load_chain(_truncated(chain_file, tmp_path)), ValueError, "truncated-chain.pt is not a diffusion chain"),
        (lambda: probgen.DiffusionTrainState.load(chain_file), ValueError, "is not a diffusion training state"),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()
    assert isinstance(probgen.SVIState.load(state), probgen.SVIState)  # and the good file still loads


def test_a_loaded_posterior_must_match_the_models_sites(tmp_path):
    """A model whose noise is fixed cannot reload a file that learned it (and the other way round)."""
    fixed = BNN(nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).double(), likelihood=Gaussian(noise_scale=0.3))
    with pytest.raises(ValueError, match="draws of 'noise_scale', which this model does not sample"):
        probgen.load_result(fits.nuts_fit().to_arviz(predictive=False), fixed)


# -- the command line ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def csv_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("csv")
    rows = "\n".join(f"{i / 10},{(i / 10) ** 2},{i % 2}" for i in range(12))
    files = {
        "good": "x,y,label\n" + rows + "\n",
        "header-only": "x,y,label\n",
        "empty": "",
        "text": "x,y,label\n0.1,0.2,0\nabc,0.3,1\n",
        "gap": "x,y,label\n0.1,0.2,0\n,0.3,1\n0.2,0.4,0\n",
        "inf": "x,y,label\n0.1,inf,0\n0.2,0.3,1\n",
    }
    paths = {}
    for name, content in files.items():
        path = folder / f"{name}.csv"
        path.write_text(content)
        paths[name] = path
    (folder / "a-file").write_text("")
    paths["a-file"] = folder / "a-file"
    return paths


CLI: list[tuple[str, list[str], str]] = [
    ("hidden-zero", ["bnn", "fit", "--data", "{good}", "--target", "y", "--out", "{out}", "--hidden", "0"], "argument --hidden: must be a positive integer, got 0"),
    ("hidden-negative", ["bnn", "fit", "--data", "{good}", "--target", "y", "--out", "{out}", "--hidden", "-3"], "argument --hidden: must be a positive integer, got -3"),
    ("hidden-text", ["bnn", "fit", "--data", "{good}", "--target", "y", "--out", "{out}", "--hidden", "many"], "argument --hidden: must be an integer, got 'many'"),
    ("steps-zero", ["bnn", "fit", "--data", "{good}", "--target", "y", "--out", "{out}", "--num-steps", "0"], "argument --num-steps: must be a positive integer"),
    ("lr-negative", ["bnn", "fit", "--data", "{good}", "--target", "y", "--out", "{out}", "--lr", "-1"], "argument --lr: must be a finite positive number"),
    ("lr-nan", ["bnn", "fit", "--data", "{good}", "--target", "y", "--out", "{out}", "--lr", "nan"], "argument --lr: must be a finite positive number"),
    ("chains-zero", ["bnn", "fit", "--data", "{good}", "--target", "y", "--out", "{out}", "--num-chains", "0"], "argument --num-chains: must be a positive integer"),
    ("seed-negative", ["bnn", "fit", "--data", "{good}", "--target", "y", "--out", "{out}", "--seed", "-1"], "argument --seed: must be a non-negative integer"),
    ("method", ["bnn", "fit", "--data", "{good}", "--target", "y", "--out", "{out}", "--method", "hmc"], "argument --method: invalid choice: 'hmc'"),
    ("missing-file", ["bnn", "fit", "--data", "{out}/none.csv", "--target", "y", "--out", "{out}"], "no such data file"),
    ("header-only", ["bnn", "fit", "--data", "{header-only}", "--target", "y", "--out", "{out}"], "has a header but 0 rows of data"),
    ("empty-file", ["bnn", "fit", "--data", "{empty}", "--target", "y", "--out", "{out}"], "empty.csv is empty"),
    ("text-column", ["bnn", "fit", "--data", "{text}", "--target", "y", "--out", "{out}"], "column 'x' of text.csv is not numeric .*'abc'"),
    ("gap", ["bnn", "fit", "--data", "{gap}", "--target", "y", "--out", "{out}"], "column 'x' of gap.csv has 1 missing or infinite value.*line 3"),
    ("inf-target", ["bnn", "fit", "--data", "{inf}", "--target", "y", "--out", "{out}"], "column 'y' of inf.csv has 1 missing or infinite"),
    ("unknown-target", ["bnn", "fit", "--data", "{good}", "--target", "price", "--out", "{out}"], "target column 'price' is not in good.csv"),
    ("unknown-feature", ["bnn", "fit", "--data", "{good}", "--target", "y", "--features", "z", "--out", "{out}"], r"column\(s\) \['z'\] are not in good.csv"),
    ("target-as-feature", ["bnn", "fit", "--data", "{good}", "--target", "y", "--features", "x", "y", "--out", "{out}"], "cannot also be a feature"),
    ("out-is-a-file", ["bnn", "fit", "--data", "{good}", "--target", "y", "--out", "{a-file}"], "output folder .*a-file is an existing file"),
    ("bernoulli-labels", ["bnn", "fit", "--data", "{good}", "--target", "y", "--likelihood", "bernoulli", "--out", "{out}"], "integer class labels"),
    ("diffusion-eta", ["diffusion", "sample", "--model", "{out}", "--out", "{out}/s.png", "--eta", "5"], r"argument --eta: must lie in \[0, 1\], got 5"),
    ("diffusion-ema", ["diffusion", "fit", "--data", "8gaussians", "--out", "{out}", "--ema-decay", "1"], "argument --ema-decay: must lie strictly between 0 and 1"),
    ("diffusion-timesteps", ["diffusion", "fit", "--data", "8gaussians", "--out", "{out}", "--timesteps", "0"], "argument --timesteps: must be a positive integer"),
    ("diffusion-data", ["diffusion", "fit", "--data", "nowhere.csv", "--out", "{out}"], "--data must be"),
    ("diffusion-model-missing", ["diffusion", "sample", "--model", "{out}/none", "--out", "{out}/s.png"], "no saved model at"),
    ("diffusion-text-csv", ["diffusion", "fit", "--data", "{text}", "--out", "{out}"], "column 'x' of text.csv is not numeric"),
    ("inspect-missing", ["inspect", "{out}/none.nc"], "no such file"),
    ("inspect-foreign", ["inspect", "{good}"], "is not a readable ArviZ NetCDF"),
]


@pytest.mark.parametrize("argv, message", [case[1:] for case in CLI], ids=[case[0] for case in CLI])
def test_the_command_line_names_the_mistake_in_one_line(argv, message, csv_files, tmp_path, capsys):
    names = {**{k: str(v) for k, v in csv_files.items()}, "out": str(tmp_path)}
    argv = [arg.format(**names) if "{" in arg else arg for arg in argv]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse reports bad flags itself, with exit code 2
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert re.search(message, err), err
    assert len([line for line in err.splitlines() if "error" in line]) == 1, err
