"""Results of inference, and their conversion to ArviZ.

SVI and MCMC results share one protocol, so downstream code never branches on the method:

* ``sample_dims``: ``("chain", "draw")``; every array from ``get_samples`` leads with them
  (SVI results have one chain of draws from the fitted guide);
* ``get_samples(group_by_chain=False)``;
* ``get_sample_stats()``: per-draw sampler statistics under ArviZ names (empty for SVI);
* ``predict(x)``: a :class:`~probgen.infer.predictive.Prediction`;
* ``log_likelihood(x, y)``: pointwise log-likelihood per draw;
* ``to_arviz()``: an ``arviz.InferenceData``.

Conversion to ArviZ lives in this module and nowhere else: one small function per group,
then ``az.from_dict``. A group with no source is simply absent. :func:`load_result` reads such
an InferenceData (or its NetCDF file) back into a result that predicts without refitting.
"""

from __future__ import annotations

import copy
import importlib.metadata
import math
import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from probgen._compat import import_arviz
from probgen._types import SAMPLE_DIMS, Samples
from probgen.infer.predictive import Prediction
from probgen.infer.predictive import log_likelihood as _log_likelihood
from probgen.infer.predictive import predict as _predict
from probgen.models.bnn import BNN

__all__ = [
    "PosteriorResult",
    "MCMCResult",
    "SVIResult",
    "SVIState",
    "to_arviz",
    "load_result",
    "as_inference_data",
]



class SVIState(NamedTuple):
    """Everything needed to resume an SVI run exactly where it stopped.

    :ivar int step: optimisation steps taken so far.
    :ivar dict guide_state: ``guide.state_dict()`` (variational parameters).
    :ivar dict model_state: ``model.state_dict()`` (deterministic network parameters).
    :ivar dict optim_state: the torch optimiser's ``state_dict()``.
    :ivar Tensor rng_state: torch's RNG state after the last step.
    :ivar Tensor losses: the loss (negative ELBO) of every step so far.
    :ivar str guide_name: which guide family produced ``guide_state``.
    """

    step: int
    guide_state: dict[str, Any]
    model_state: dict[str, Any]
    optim_state: dict[str, Any]
    rng_state: Tensor
    losses: Tensor
    guide_name: str

    def save(self, path: str) -> None:
        """Write the state with ``torch.save``."""
        torch.save(self._asdict(), path)

    @classmethod
    def load(cls, path: str) -> SVIState:
        """Read a state written by :meth:`save`."""
        return cls(**torch.load(path, weights_only=False))


@dataclass(frozen=True)
class PosteriorResult:
    """Draws from a posterior over a model's latent sites, with the data they condition on.

    :ivar model: the fitted model (a copy; the caller's model is never changed).
    :ivar samples: draws per site, each shaped ``(chain, draw, *site_shape)``.
    :ivar x: the training inputs.
    :ivar y: the training targets.
    :ivar int seed: the seed the run used.
    :ivar float wall_time: seconds the fit took.
    """

    model: BNN
    samples: Samples
    x: Tensor
    y: Tensor
    seed: int
    wall_time: float

    sample_dims = SAMPLE_DIMS

    @property
    def num_chains(self) -> int:
        return next(iter(self.samples.values())).shape[0]

    @property
    def num_draws(self) -> int:
        """Draws per chain."""
        return next(iter(self.samples.values())).shape[1]

    def get_samples(self, group_by_chain: bool = False) -> Samples:
        """Draws per site, ``(chain, draw, ...)`` if ``group_by_chain`` else ``(chain * draw, ...)``."""
        if group_by_chain:
            return dict(self.samples)
        return {k: v.reshape((-1,) + v.shape[2:]) for k, v in self.samples.items()}

    def get_sample_stats(self) -> dict[str, Tensor]:
        """Per-draw sampler statistics, ``(chain, draw)`` each; empty when there are none."""
        return {}

    def predict(self, x: Any, *, seed: int | None = None) -> Prediction:
        """Posterior predictive at new inputs ``x`` (vectorised over draws).

        :param int seed: seeds the draws of ``y``; defaults to the fit's seed.
        """
        x_t = self.model.check_x(x)
        return _predict(self.model, self.samples, x_t, seed=self.seed if seed is None else seed)

    def log_likelihood(self, x: Any = None, y: Any = None) -> Tensor:
        """Pointwise ``log p(y_i | x_i, theta)`` per draw, ``(chain, draw, n)``; training data by default."""
        if (x is None) != (y is None):
            raise ValueError("pass both x and y, or neither to use the training data.")
        if x is None:
            x_t, y_t = self.x, self.y
        else:
            x_t, y_opt = self.model.check_data(x, y)
            assert y_opt is not None  # y was given, so check_data returned it
            y_t = y_opt
        return _log_likelihood(self.model, self.samples, x_t, y_t)

    def to_arviz(self, *, x_new: Any = None, seed: int | None = None, predictive: bool = True) -> Any:
        """This posterior as an ``arviz.InferenceData``; see :func:`to_arviz`."""
        return to_arviz(self, x_new=x_new, seed=seed, predictive=predictive)


@dataclass(frozen=True)
class MCMCResult(PosteriorResult):
    """Draws from NUTS.

    :ivar sample_stats: per-draw statistics under ArviZ names: ``diverging``, ``lp``, ``energy``,
        ``step_size``, ``tree_depth``, ``n_steps``, ``acceptance_rate``; each ``(chain, draw)``.
    :ivar int num_warmup: warm-up iterations per chain (discarded).
    :ivar str backend: which NUTS implementation produced the draws.
    :ivar int num_workers: processes the chains were split over (with ``seed``, what reproduces them).
    """

    sample_stats: dict[str, Tensor] = field(default_factory=dict)
    num_warmup: int = 0
    backend: str = "pyro"
    num_workers: int = 1

    def get_sample_stats(self) -> dict[str, Tensor]:
        return dict(self.sample_stats)

    @property
    def num_divergences(self) -> int:
        div = self.sample_stats.get("diverging")
        return 0 if div is None else int(div.sum())


@dataclass(frozen=True)
class SVIResult(PosteriorResult):
    """A fitted variational posterior and draws from it (one chain).

    :ivar guide: the fitted guide (a Pyro autoguide).
    :ivar losses: the loss (negative ELBO, in nats) of every step.
    :ivar state: an :class:`SVIState`; pass it as ``init_state=`` to resume.
    :ivar bool stopped_early: whether early stopping ended the run.
    :ivar str guide_name: the guide family (``"normal"``, ``"lowrank"``, ...); kept through
        NetCDF so that a reloaded result still says how it was fitted.
    """

    guide: Any = None
    losses: Tensor = field(default_factory=lambda: torch.zeros(0))
    state: SVIState | None = None
    stopped_early: bool = False
    guide_name: str | None = None


# -- ArviZ -----------------------------------------------------------------------------------
#
# The InferenceData that to_arviz writes, and load_result reads back:
#
#   posterior                  every latent site, (chain, draw, *site dims)
#   sample_stats               NUTS only: the statistics of MCMCResult.sample_stats, (chain, draw)
#   log_likelihood             "obs": log p(y_i | x_i, theta), (chain, draw, obs_id)
#   posterior_predictive       "obs": one draw of y per posterior draw, (chain, draw, obs_id[, target])
#   observed_data              "obs": the training targets, (obs_id[, target])
#   constant_data              "x": the training inputs, (obs_id, feature); plus every entry of
#                              model.state_dict() (the deterministic parameters), under its key
#   predictions                "obs" at new inputs (only when x_new is given)
#   predictions_constant_data  "x": the new inputs

#: The observed site's name, and the variable name of every data-shaped group.
OBS = "obs"
#: The inputs' variable name in ``constant_data`` and ``predictions_constant_data``.
INPUTS = "x"
#: Dimension of observations (rows of x and y).
OBS_DIM = "obs_id"
#: Dimension of the input features (columns of a 2-D x).
FEATURE_DIM = "feature"
#: Dimension of the target columns of multi-output regression.
TARGET_DIM = "target"
#: Layers whose parameters get named dims: weights ``(out, in, *kernel)``, biases ``(out,)``.
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _probgen_version() -> str:
    try:
        return importlib.metadata.version("probgen")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "unknown"


def _param_dims(net: nn.Module, name: str, ndim: int) -> list[str]:
    """Dims of parameter ``name`` of ``net``, named after its place in the module tree.

    A Linear or convolution layer at path ``"0"`` gives ``"0.weight"`` the dims
    ``("0.out", "0.in"[, "0.kernel_0", ...])`` and ``"0.bias"`` the dim ``("0.out",)``, so a
    layer's weight and bias share their output dim. Anything else gets ``"<name>_dim_<i>"``.
    """
    path, _, attr = name.rpartition(".")
    prefix = f"{path}." if path else ""
    try:
        module: nn.Module | None = net.get_submodule(path)
    except AttributeError:  # not a parameter path of this module
        module = None
    if isinstance(module, _LAYERS):
        if attr == "weight" and ndim >= 2:
            return [f"{prefix}out", f"{prefix}in", *(f"{prefix}kernel_{i}" for i in range(ndim - 2))]
        if attr == "bias" and ndim == 1:
            return [f"{prefix}out"]
    return [f"{name}_dim_{i}" for i in range(ndim)]


def _data_dims(value: Tensor, inner: str) -> list[str]:
    """``(obs_id, inner)`` for 2-D data, ``(obs_id,)`` for 1-D, numbered inner dims beyond."""
    if value.dim() <= 2:
        return [OBS_DIM, inner][: value.dim()]
    return [OBS_DIM, *(f"{inner}_{i}" for i in range(value.dim() - 1))]


def _deterministic_params(model: BNN) -> dict[str, Tensor]:
    """``model.state_dict()``: the parameters the prior leaves deterministic (and buffers)."""
    return {key: value.detach() for key, value in model.state_dict().items()}


def _dims(result: PosteriorResult) -> dict[str, list[str]]:
    """Dims of every variable, keyed by variable name (ArviZ applies them in every group).

    A dim name that would get two different sizes falls back to ``"<name>_dim_<i>"``.
    """
    model = result.model
    shapes: dict[str, tuple[int, ...]] = {name: tuple(v.shape[2:]) for name, v in result.samples.items()}
    proposed: dict[str, list[str]] = {}
    for name, shape in shapes.items():
        in_net = name in model.weight_priors  # globals such as "noise_scale" are not parameters of the net
        proposed[name] = _param_dims(model.net if in_net else nn.Module(), name, len(shape))
    for key, value in _deterministic_params(model).items():
        shapes[key] = tuple(value.shape)
        net_key = key.removeprefix("net.")
        root = model.net if net_key != key else model
        proposed[key] = _param_dims(root, net_key, value.dim())
    sizes: dict[str, int] = {}
    dims: dict[str, list[str]] = {}
    for name, names in proposed.items():
        clash = any(sizes.get(d, n) != n for d, n in zip(names, shapes[name]))
        if clash:
            names = [f"{name}_dim_{i}" for i in range(len(names))]
        sizes.update(zip(names, shapes[name]))
        dims[name] = names
    dims[INPUTS] = _data_dims(result.x, FEATURE_DIM)
    dims[OBS] = _data_dims(result.y, TARGET_DIM)  # log_likelihood drops the target dim (skip_event_dims)
    return dims


def _method(result: PosteriorResult) -> str:
    """The ``inference_method`` attribute: ``"nuts"``, ``"svi"`` or ``"unknown"``."""
    if isinstance(result, MCMCResult):
        return "nuts"
    if isinstance(result, SVIResult):
        return "svi"
    return "unknown"


def _attrs(result: PosteriorResult) -> dict[str, Any]:
    """Provenance, stored with the file. NetCDF attributes hold no ``None`` or bool."""
    attrs: dict[str, Any] = {
        "inference_library": "probgen",
        "inference_library_version": _probgen_version(),
        "inference_method": _method(result),
        "seed": int(result.seed),
        "num_chains": result.num_chains,
        "num_draws": result.num_draws,
        "wall_time": float(result.wall_time),
        "likelihood": repr(result.model.likelihood),
    }
    if isinstance(result, MCMCResult):
        attrs["backend"] = result.backend
        attrs["num_warmup"] = int(result.num_warmup)
        attrs["num_workers"] = int(result.num_workers)
    if isinstance(result, SVIResult):
        attrs["num_steps"] = int(result.losses.numel())
        attrs["stopped_early"] = int(result.stopped_early)
        if result.guide_name is not None:
            attrs["guide"] = result.guide_name
        if result.losses.numel():
            attrs["final_loss"] = float(result.losses[-1])
    return attrs


def _posterior_group(result: PosteriorResult) -> dict[str, np.ndarray]:
    """Sites in the order the model samples them (weights by module path, then globals)."""
    order = [name for name in result.model.site_names if name in result.samples]
    order += [name for name in result.samples if name not in order]
    return {name: _numpy(result.samples[name]) for name in order}


def _sample_stats_group(result: PosteriorResult) -> dict[str, np.ndarray]:
    return {name: _numpy(v) for name, v in result.get_sample_stats().items()}


def _log_likelihood_group(result: PosteriorResult) -> dict[str, np.ndarray]:
    return {OBS: _numpy(result.log_likelihood())}


def _posterior_predictive_group(result: PosteriorResult, seed: int | None) -> dict[str, np.ndarray]:
    return {OBS: _numpy(result.predict(result.x, seed=seed).y)}


def _observed_data_group(result: PosteriorResult) -> dict[str, np.ndarray]:
    return {OBS: _numpy(result.y)}


def _constant_data_group(result: PosteriorResult) -> dict[str, np.ndarray]:
    params = {key: _numpy(value) for key, value in _deterministic_params(result.model).items()}
    return {INPUTS: _numpy(result.x), **params}


def to_arviz(
    result: PosteriorResult,
    *,
    x_new: Any = None,
    seed: int | None = None,
    predictive: bool = True,
) -> Any:
    """Convert a NUTS or SVI result to ``arviz.InferenceData``.

    Groups (a group with no source is absent):

    * ``posterior``: every latent site under its Pyro name (the module path, such as
      ``"0.weight"``), ``(chain, draw, *dims)``. NUTS gives one chain per sampler chain. SVI
      gives the result's draws from the fitted guide as one chain (``fit_svi(num_samples=...)``
      of them, independent); R-hat needs two chains, so it is undefined for SVI draws, and
      their ESS measures only the Monte Carlo error of the draws, not the fit.
    * ``sample_stats`` (NUTS only): ``diverging``, ``lp``, ``energy``, ``step_size``,
      ``tree_depth``, ``n_steps``, ``acceptance_rate``, so ``az.bfmi`` and ``az.plot_energy`` work.
    * ``log_likelihood``: ``"obs"``, the pointwise ``log p(y_i | x_i, theta)`` per draw, so
      ``az.loo`` and ``az.waic`` work.
    * ``posterior_predictive``: ``"obs"``, one draw of ``y`` per posterior draw at the training inputs.
    * ``observed_data``: ``"obs"``, the training targets.
    * ``constant_data``: ``"x"``, the training inputs, and every entry of ``model.state_dict()``
      (the parameters the prior leaves deterministic) under its key, such as ``"net.2.bias"``,
      so that :func:`load_result` can rebuild the model.
    * ``predictions`` and ``predictions_constant_data``: ``"obs"`` and ``"x"`` at ``x_new``.

    Dims: a Linear or convolution layer at module path ``"0"`` gives ``"0.weight"`` the dims
    ``("0.out", "0.in")`` (then ``"0.kernel_0"``, ... for convolutions) and ``"0.bias"`` the
    dim ``("0.out",)``; other parameters and global sites get ``"<site>_dim_<i>"``. Data use
    ``obs_id``, ``feature`` (columns of x) and ``target`` (columns of a 2-D y). Every
    coordinate is an integer index from 0.

    Attributes record the provenance: ``inference_library`` (``"probgen"``),
    ``inference_library_version``, ``inference_method`` (``"nuts"`` or ``"svi"``), ``seed``,
    ``num_chains``, ``num_draws``, ``wall_time``, ``likelihood``; for NUTS ``backend``,
    ``num_warmup`` and ``num_workers``; for SVI ``guide``, ``num_steps``, ``stopped_early`` and ``final_loss``.

    :param PosteriorResult result: a fitted result.
    :param x_new: new inputs for the ``predictions`` groups.
    :param int seed: seeds the predictive draws of ``y``; defaults to the fit's seed.
    :param bool predictive: compute ``log_likelihood``, ``posterior_predictive`` and the
        ``predictions`` groups (one network pass per draw); ``False`` gives only the posterior,
        the sampler statistics and the data, which is all that diagnostics need.
    :returns: an ``arviz.InferenceData``.
    :raises TypeError: if ``result`` is not a probgen result.

    Example:

    >>> import torch
    >>> from torch import nn
    >>> from probgen.infer.svi import fit_svi
    >>> x = torch.linspace(-1, 1, 20).unsqueeze(-1)
    >>> result = fit_svi(BNN(nn.Linear(1, 1)), x, 2 * x[:, 0], num_steps=20, num_samples=50,
    ...                  seed=0, progress_bar=False)
    >>> idata = to_arviz(result)
    >>> idata.posterior["weight"].dims
    ('chain', 'draw', 'out', 'in')
    >>> idata.log_likelihood["obs"].shape
    (1, 50, 20)
    """
    if not isinstance(result, PosteriorResult):
        raise TypeError(f"result must be a probgen result (from fit_nuts or fit_svi), got {type(result).__name__}.")
    az = import_arviz()
    groups: dict[str, Any] = {
        "posterior": _posterior_group(result),
        "observed_data": _observed_data_group(result),
        "constant_data": _constant_data_group(result),
    }
    stats = _sample_stats_group(result)
    if stats:
        groups["sample_stats"] = stats
    if predictive:
        groups["log_likelihood"] = _log_likelihood_group(result)
        groups["posterior_predictive"] = _posterior_predictive_group(result, seed)
    if predictive and x_new is not None:
        x_t = result.model.check_x(x_new)
        groups["predictions"] = {OBS: _numpy(result.predict(x_t, seed=seed).y)}
        groups["predictions_constant_data"] = {INPUTS: _numpy(x_t)}
    return az.from_dict(**groups, dims=_dims(result), attrs=_attrs(result))


def as_inference_data(source: Any, *, predictive: bool = True) -> Any:
    """An ``arviz.InferenceData`` from a result, an InferenceData, or the path of a NetCDF file.

    Diagnostics and plots accept any of the three through this function.

    :param source: a :class:`PosteriorResult`, an ``arviz.InferenceData`` (returned as is), or
        a ``str`` / ``os.PathLike`` naming a file written by ``InferenceData.to_netcdf``.
    :param bool predictive: passed to :func:`to_arviz` for results.
    :raises TypeError: for anything else.
    :raises FileNotFoundError: for a path that does not exist.
    """
    az = import_arviz()
    if isinstance(source, PosteriorResult):
        return to_arviz(source, predictive=predictive)
    if isinstance(source, az.InferenceData):
        return source
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"no such file: {os.fspath(source)!r}; pass the path of a posterior.nc file.")
        return az.from_netcdf(os.fspath(source))
    raise TypeError(
        "expected a probgen result, an arviz.InferenceData or the path of a NetCDF file, "
        f"got {type(source).__name__}."
    )


def _group(idata: Any, name: str) -> Any:
    if name not in idata.groups():
        raise ValueError(
            f"the InferenceData has no {name!r} group (it has {', '.join(idata.groups())}); "
            "load a file written by probgen's to_arviz()."
        )
    return getattr(idata, name)


def _draws(array: Any) -> np.ndarray:
    """Values of a DataArray with ``chain`` and ``draw`` leading."""
    return np.asarray(array.transpose("chain", "draw", ...).values)


def load_result(source: Any, model: BNN) -> PosteriorResult:
    """Rebuild a result from an InferenceData (or a NetCDF file) and the model's configuration.

    The posterior group gives ``samples`` ``(chain, draw, ...)``, ``constant_data`` gives the
    inputs and the deterministic parameters (``model.state_dict()``), ``observed_data`` the
    targets, and the attributes the seed. The result predicts exactly as the original did,
    without refitting: ``load_result(path, model).predict(x_new)`` equals ``result.predict(x_new)``.

    :param source: an ``arviz.InferenceData`` from :func:`to_arviz`, or the path of a file
        written by its ``to_netcdf``.
    :param BNN model: a model built with the same architecture, prior and likelihood as the
        fitted one (its parameter values do not matter; it is copied, never changed).
    :returns: an :class:`MCMCResult` (with its sampler statistics) for NUTS files, an
        :class:`SVIResult` without guide or optimiser state for SVI files, otherwise a
        :class:`PosteriorResult`.
    :raises ValueError: if the file lacks a group, or the model's sites or parameter shapes
        differ from the file's.
    :raises TypeError: if ``model`` is not a probgen BNN.

    Example:

    >>> import torch
    >>> from torch import nn
    >>> from probgen.infer.svi import fit_svi
    >>> x = torch.linspace(-1, 1, 20).unsqueeze(-1)
    >>> model = BNN(nn.Linear(1, 1))
    >>> result = fit_svi(model, x, 2 * x[:, 0], num_steps=20, num_samples=50, seed=0, progress_bar=False)
    >>> again = load_result(result.to_arviz(), model)
    >>> bool((again.predict(x).y == result.predict(x).y).all())
    True
    """
    if not isinstance(model, BNN):
        raise TypeError(f"model must be a probgen.BNN, got {type(model).__name__}.")
    idata = as_inference_data(source)
    posterior = _group(idata, "posterior")
    constant = _group(idata, "constant_data")
    observed = _group(idata, "observed_data")

    missing = [name for name in model.site_names if name not in posterior.data_vars]
    if missing:
        raise ValueError(
            f"the posterior has no draws of {', '.join(map(repr, missing))}; it holds "
            f"{', '.join(map(repr, map(str, posterior.data_vars)))}. Build the model with the "
            "architecture, prior and likelihood of the fit."
        )
    samples: Samples = {}
    priors: dict[str, Any] = dict(model.priors)  # torch distributions; Pyro's stubs lack event_shape
    for name, prior in priors.items():
        values = _draws(posterior[name])
        if values.shape[2:] != tuple(prior.event_shape):
            raise ValueError(
                f"the posterior's {name!r} has shape {values.shape[2:]} but the model expects "
                f"{tuple(prior.event_shape)}; build the model with the architecture of the fit."
            )
        samples[name] = torch.tensor(values, dtype=prior.mean.dtype)

    model = copy.deepcopy(model)
    state = model.state_dict()
    absent = [key for key in state if key not in constant.data_vars]
    if absent:
        raise ValueError(
            f"constant_data has no values for the deterministic parameter(s) {', '.join(map(repr, absent))}; "
            "build the model with the prior of the fit (its deterministic= paths)."
        )
    loaded = {key: torch.tensor(np.asarray(constant[key].values), dtype=value.dtype) for key, value in state.items()}
    for key, value in loaded.items():
        if value.shape != state[key].shape:
            raise ValueError(
                f"constant_data's {key!r} has shape {tuple(value.shape)} but the model's has "
                f"{tuple(state[key].shape)}; build the model with the architecture of the fit."
            )
    model.load_state_dict(loaded)
    x, y = model.check_data(np.asarray(constant[INPUTS].values), np.asarray(observed[OBS].values))
    assert y is not None  # check_data returns y when y is given

    attrs = dict(idata.attrs)
    common: dict[str, Any] = {
        "model": model,
        "samples": samples,
        "x": x,
        "y": y,
        "seed": int(attrs.get("seed", 0)),
        "wall_time": float(attrs.get("wall_time", math.nan)),
    }
    method = attrs.get("inference_method")
    if method == "nuts":
        stats = {}
        if "sample_stats" in idata.groups():
            stats = {str(k): torch.from_numpy(_draws(v).copy()) for k, v in idata.sample_stats.data_vars.items()}
        return MCMCResult(
            **common,
            sample_stats=stats,
            num_warmup=int(attrs.get("num_warmup", 0)),
            backend=str(attrs.get("backend", "pyro")),
            num_workers=int(attrs.get("num_workers", 1)),
        )
    if method == "svi":
        guide_name = attrs.get("guide")
        return SVIResult(
            **common,
            stopped_early=bool(attrs.get("stopped_early", 0)),
            guide_name=None if guide_name is None else str(guide_name),
        )
    return PosteriorResult(**common)
