"""Every probgen result as ArviZ ``InferenceData``, and back: the only place that builds one.

:func:`to_arviz` builds one dict per group with one small function each, then calls ArviZ 0.23's
``az.from_dict``; a group with no source is simply absent. What goes into each group comes from the
model's side of the inference seam (:class:`~probgen.infer._model.InferenceModel`), so a BNN and a
user's own Pyro program give the same groups:

==============================  ================================================================
``posterior``                   every latent site and every deterministic site, ``(chain, draw, *dims)``
``sample_stats``                NUTS only: ``diverging``, ``lp``, ``energy``, ``step_size``,
                                ``tree_depth``, ``n_steps``, ``acceptance_rate``
``log_likelihood``              every observed site, pointwise, ``(chain, draw, *batch)``
``posterior_predictive``        one draw of every observed site per posterior draw
``observed_data``               the observed values
``constant_data``               the other inputs (a BNN's ``"x"`` and its deterministic parameters;
                                a Pyro program's array arguments under their parameter names)
``predictions``                 the observed sites predicted at new data (``x_new``)
``predictions_constant_data``   the new inputs
==============================  ================================================================

:func:`load_result` reads such an InferenceData (or its NetCDF file) back into a result that
predicts exactly as the original, without refitting.

A diffusion run converts in the last section, :func:`diffusion_to_arviz` (what the diffusion results'
``to_arviz()`` call): its samples as ``posterior_predictive``, its bound per data point and per term
as the ``log_likelihood``-like groups ``bound`` and ``bound_terms`` (named for what they are, and
saying so in their attributes), the scored data as ``observed_data``, the training ``losses``, and the
configuration as attributes. A Bayesian denoiser adds its weight posterior (one chain of draws) as
``posterior``, its bound under each weight draw as the draws of ``bound``, and its samples'
uncertainty as the group ``uncertainty``; a deep ensemble's members are the draws.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import Tensor

from probgen._compat import import_arviz
from probgen._validate import check_positive_int
from probgen._types import SAMPLE_DIMS
from probgen.infer._dispatch import as_inference_model
from probgen.infer._model import ModelData
from probgen.infer.results import (
    BayesianBoundResult,
    BoundResult,
    DiffusionFitResult,
    DiffusionSamples,
    EnsembleFit,
    MCMCResult,
    MutualInformation,
    PosteriorResult,
    PredictiveUncertainty,
    SampleUncertainty,
    SVIResult,
)

__all__ = ["to_arviz", "load_result", "as_inference_data", "diffusion_to_arviz"]


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _numpy_dict(values: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    return {name: _numpy(value) for name, value in values.items()}


def _probgen_version() -> str:
    try:
        return importlib.metadata.version("probgen")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "unknown"


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
        "model_kind": result.spec.kind,
        "seed": int(result.seed),
        "num_chains": result.num_chains,
        "num_draws": result.num_draws,
        "wall_time": float(result.wall_time),
    }
    if result.data is not None:
        attrs.update(result.spec.attrs(result.samples, result.data))
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
    return _numpy_dict(result.samples)


def _sample_stats_group(result: PosteriorResult) -> dict[str, np.ndarray]:
    return _numpy_dict(result.get_sample_stats())


def _log_likelihood_group(result: PosteriorResult, data: ModelData) -> dict[str, np.ndarray]:
    return _numpy_dict(result.spec.log_likelihood(result.samples, data))


def _posterior_predictive_group(result: PosteriorResult, data: ModelData, seed: int) -> dict[str, np.ndarray]:
    return _numpy_dict(result.spec.posterior_predictive(result.samples, data, seed=seed))


def _observed_data_group(result: PosteriorResult, data: ModelData) -> dict[str, np.ndarray]:
    return _numpy_dict(result.spec.observed(data))


def _constant_data_group(result: PosteriorResult, data: ModelData) -> dict[str, np.ndarray]:
    return _numpy_dict(result.spec.constant(data))


def _prediction_groups(
    result: PosteriorResult, x_new: Any, new_kwargs: Mapping[str, Any] | None, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, list[str]]]:
    """``predictions`` (the sites observed in the fit, predicted at the new data),
    ``predictions_constant_data`` and their dims."""
    spec = result.spec
    args = x_new if isinstance(x_new, tuple) else (x_new,)
    new = spec.bind(args, new_kwargs, fit=False)
    predicted = spec.posterior_predictive(result.samples, new, seed=seed) if spec.kind == "bnn" else None
    if predicted is None:
        everything = spec.predict(result.samples, new, seed=seed)
        fitted = spec.observed(result.data) if result.data is not None else {}
        predicted = {name: value for name, value in everything.items() if name in fitted}
    constant = spec.constant(new)
    dims = spec.dims({**predicted}, new)
    return _numpy_dict(predicted), _numpy_dict(constant), dims


def to_arviz(
    result: PosteriorResult,
    *,
    x_new: Any = None,
    new_kwargs: Mapping[str, Any] | None = None,
    seed: int | None = None,
    predictive: bool = True,
) -> Any:
    """Convert a NUTS or SVI result, for a BNN or any Pyro program, to ``arviz.InferenceData``.

    Groups are those of the module docstring; a group with no source is absent. NUTS gives one chain
    per sampler chain; SVI gives its draws from the fitted guide as one chain (``fit_svi(num_samples=...)``
    of them, independent), so R-hat is undefined for them and their ESS measures only the Monte
    Carlo error of the draws, not the fit.

    Dims: a BNN's Linear or convolution layer at module path ``"0"`` gives ``"0.weight"`` the dims
    ``("0.out", "0.in")`` and ``"0.bias"`` the dim ``("0.out",)``; its data use ``obs_id``,
    ``feature`` and ``target``. A Pyro program's batch dims are named after their plates (``"J"``);
    every other dim is ``"<variable>_dim_<i>"``. Every coordinate is an integer index from 0.

    Attributes record the provenance: ``inference_library`` (``"probgen"``),
    ``inference_library_version``, ``inference_method`` (``"nuts"`` or ``"svi"``), ``model_kind``
    (``"bnn"`` or ``"pyro"``), ``seed``, ``num_chains``, ``num_draws``, ``wall_time``, the sites
    (``latent_sites``, and ``deterministic_sites``, ``model_name`` and ``model_arguments`` for a
    Pyro program, ``likelihood`` for a BNN); for NUTS ``backend``, ``num_warmup`` and
    ``num_workers``; for SVI ``guide``, ``num_steps``, ``stopped_early`` and ``final_loss``.

    :param PosteriorResult result: a fitted result.
    :param x_new: new data for the ``predictions`` groups: a BNN's inputs, or a tuple of a Pyro
        program's positional arguments.
    :param dict new_kwargs: a Pyro program's keyword arguments for the predictions.
    :param int seed: seeds the predictive draws; defaults to the fit's seed.
    :param bool predictive: compute ``log_likelihood``, ``posterior_predictive`` and the
        ``predictions`` groups (one model pass per draw); ``False`` gives only the posterior,
        the sampler statistics and the data, which is all that diagnostics need.
    :returns: an ``arviz.InferenceData``.
    :raises TypeError: if ``result`` is not a probgen result.

    Example:

    >>> import torch
    >>> from torch import nn
    >>> from probgen.infer.svi import fit_svi
    >>> from probgen.models.bnn import BNN
    >>> x = torch.linspace(-1, 1, 20).unsqueeze(-1)
    >>> result = fit_svi(BNN(nn.Linear(1, 1)), x, 2 * x[:, 0], num_steps=20, num_samples=50,
    ...                  seed=0, progress_bar=False)
    >>> idata = to_arviz(result)
    >>> idata.posterior["weight"].dims
    ('chain', 'draw', 'out', 'in')
    >>> idata.log_likelihood["obs"].shape
    (1, 50, 20)
    """
    if isinstance(result, DiffusionSamples):
        return diffusion_to_arviz(samples=result)
    if isinstance(result, (BoundResult, BayesianBoundResult)):
        return diffusion_to_arviz(bound=result)
    if isinstance(result, (DiffusionFitResult, EnsembleFit)):
        return diffusion_to_arviz(fit=result)
    if isinstance(result, _UNCERTAINTY):
        return diffusion_to_arviz(uncertainty=result)
    if not isinstance(result, PosteriorResult):
        raise TypeError(
            "result must be a probgen result (from fit_nuts, fit_svi, fit_diffusion, evaluate_bound or a "
            "diffusion sampler), "
            f"got {type(result).__name__}."
        )
    az = import_arviz()
    seed = result.seed if seed is None else seed
    data = result.data
    groups: dict[str, Any] = {"posterior": _posterior_group(result)}
    stats = _sample_stats_group(result)
    if stats:
        groups["sample_stats"] = stats
    if data is not None:
        groups["observed_data"] = _observed_data_group(result, data)
        groups["constant_data"] = _constant_data_group(result, data)
        if predictive:
            groups["log_likelihood"] = _log_likelihood_group(result, data)
            groups["posterior_predictive"] = _posterior_predictive_group(result, data, seed)
    pred_dims = None
    if predictive and x_new is not None:
        groups["predictions"], groups["predictions_constant_data"], pred_dims = _prediction_groups(
            result, x_new, new_kwargs, seed
        )
    dims = result.spec.dims(result.samples, data)
    return az.from_dict(**groups, dims=dims, pred_dims=pred_dims, attrs=_attrs(result))


def as_inference_data(source: Any, *, predictive: bool = True) -> Any:
    """An ``arviz.InferenceData`` from a result, an InferenceData, or the path of a NetCDF file.

    Diagnostics and plots accept any of the three through this function.

    :param source: a :class:`PosteriorResult` or :class:`~probgen.infer.results.DiffusionSamples`, an
        ``arviz.InferenceData`` (returned as is), or a ``str`` / ``os.PathLike`` naming a file written
        by ``InferenceData.to_netcdf``.
    :param bool predictive: passed to :func:`to_arviz` for results.
    :raises TypeError: for anything else.
    :raises FileNotFoundError: for a path that does not exist.
    :raises ValueError: for a file that is not a readable NetCDF file (truncated, foreign).
    """
    az = import_arviz()
    if isinstance(source, PosteriorResult):
        return to_arviz(source, predictive=predictive)
    if isinstance(source, (DiffusionFitResult, BoundResult, DiffusionSamples, BayesianBoundResult, EnsembleFit)):
        return source.to_arviz()
    if isinstance(source, _UNCERTAINTY):
        return source.to_arviz()
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"no such file: {os.fspath(source)!r}; pass the path of a posterior.nc file.")
        source = os.fspath(source)
    if isinstance(source, str):
        try:
            return az.convert_to_inference_data(source)  # a path through from_netcdf
        except (OSError, ValueError, KeyError, TypeError) as error:  # h5py, netCDF4 and xarray raise these
            first = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
            raise ValueError(
                f"{source!r} is not a readable ArviZ NetCDF file ({type(error).__name__}: {first}); it may be "
                "truncated or of another format. Pass a file written by InferenceData.to_netcdf."
            ) from error
    if isinstance(source, az.InferenceData):
        return source
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


def _values(idata: Any, name: str) -> dict[str, np.ndarray]:
    """Every variable of group ``name`` as an array (draw groups with ``chain``, ``draw`` leading)."""
    if name not in idata.groups():
        return {}
    group = getattr(idata, name)
    out = {}
    for key, array in group.data_vars.items():
        if all(d in array.dims for d in SAMPLE_DIMS):
            array = array.transpose(*SAMPLE_DIMS, ...)
        out[str(key)] = np.asarray(array.values)
    return out


def load_result(source: Any, model: Any) -> PosteriorResult:
    """Rebuild a result from an InferenceData (or a NetCDF file) and the model that was fitted.

    The posterior group gives ``samples`` ``(chain, draw, ...)``; ``observed_data``,
    ``constant_data`` and the attributes give the data (for a BNN also its deterministic
    parameters), so the result predicts exactly as the original did, without refitting:
    ``load_result(path, model).predict(x_new)`` equals ``result.predict(x_new)``.

    :param source: an ``arviz.InferenceData`` from :func:`to_arviz`, or the path of a file
        written by its ``to_netcdf``.
    :param model: the model that was fitted: a BNN built with the same architecture, prior and
        likelihood (its parameter values do not matter; it is copied, never changed), or the Pyro
        program itself.
    :returns: an :class:`~probgen.infer.results.MCMCResult` (with its sampler statistics) for NUTS
        files, an :class:`~probgen.infer.results.SVIResult` without guide or optimiser state for
        SVI files, otherwise a :class:`~probgen.infer.results.PosteriorResult`.
    :raises ValueError: if the file lacks the posterior, or the model's latent sites or their shapes
        differ from the file's (a site missing, or one the model does not sample).
    :raises TypeError: if ``model`` is neither a BNN nor callable.

    Example:

    >>> import torch
    >>> from torch import nn
    >>> from probgen.infer.svi import fit_svi
    >>> from probgen.models.bnn import BNN
    >>> x = torch.linspace(-1, 1, 20).unsqueeze(-1)
    >>> model = BNN(nn.Linear(1, 1))
    >>> result = fit_svi(model, x, 2 * x[:, 0], num_steps=20, num_samples=50, seed=0, progress_bar=False)
    >>> again = load_result(result.to_arviz(), model)
    >>> bool((again.predict(x).y == result.predict(x).y).all())
    True
    """
    spec = as_inference_model(model)
    idata = as_inference_data(source)
    _group(idata, "posterior")
    attrs = dict(idata.attrs)
    kind = str(attrs.get("model_kind", "bnn"))  # files from before generic models hold BNN posteriors
    if kind != spec.kind:
        wanted = "the probgen.BNN that was fitted" if kind == "bnn" else "the Pyro program that was fitted"
        raise TypeError(f"this file holds the posterior of a {kind!r} model; pass {wanted}, got {type(model).__name__}.")
    if kind == "bnn":  # a BNN's file always holds its data and its deterministic parameters
        _group(idata, "constant_data")
        _group(idata, "observed_data")
    posterior = _values(idata, "posterior")
    data = spec.restore(_values(idata, "observed_data"), _values(idata, "constant_data"), attrs)
    samples = spec.check_sites(posterior, attrs, data)
    for name, values in posterior.items():  # deterministic sites, as recorded
        if name not in samples:
            samples[name] = _as_tensor_like(values, next(iter(samples.values()), None))
    common: dict[str, Any] = {
        "spec": spec,
        "samples": samples,
        "data": data,
        "seed": int(attrs.get("seed", 0)),
        "wall_time": float(attrs.get("wall_time", math.nan)),
    }
    method = attrs.get("inference_method")
    if method == "nuts":
        stats = {}
        if "sample_stats" in idata.groups():
            stats = {k: _as_tensor_like(v, None) for k, v in _values(idata, "sample_stats").items()}
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


def _as_tensor_like(values: np.ndarray, like: Tensor | None) -> Tensor:
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(values).copy())
    if like is not None and tensor.is_floating_point():
        tensor = tensor.to(like.dtype)
    return tensor


# ---------------------------------------------------------------------------------------------- diffusion
#: The read-outs under weight uncertainty, which convert through ``diffusion_to_arviz(uncertainty=...)``.
_UNCERTAINTY = (SampleUncertainty, PredictiveUncertainty, MutualInformation)

#: What the ``bound`` groups hold, stated in their attributes: a bound, not a log-likelihood.
BOUND_QUANTITY = (
    "negative ELBO in nats per data point: an upper bound on -log p(x_0) (on the discrete NLL with a "
    "discretised decoder); it is a variational bound, not a log-likelihood"
)


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes NetCDF can hold: no ``None`` (dropped), bools as ints, sequences as lists."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = int(value)
        elif isinstance(value, (list, tuple)):
            value = list(value)
        out[key] = value
    return out


def _dataset(values: Mapping[str, Tensor], dims: Mapping[str, list[str]], coords: Any, attrs: Any, *, draws: bool) -> Any:
    """One xarray group; ``draws=False`` for a group without the ``(chain, draw)`` dims."""
    az = import_arviz()
    return az.dict_to_dataset(
        _numpy_dict(values), dims=dict(dims), coords=coords, attrs=attrs, default_dims=None if draws else []
    )


def _event_dims(count: int) -> list[str]:
    return [f"x_0_dim_{i}" for i in range(count)]


def _condition_dims(condition: Tensor) -> list[str]:
    """The dims of a condition after its rows: none for labels, one for covariates."""
    return [f"condition_dim_{i}" for i in range(condition.dim() - 1)]


def _with_condition(groups: dict[str, Any], condition: Tensor | None) -> dict[str, Any]:
    """``groups`` with a ``constant_data`` group holding the condition of each data point, if there is one."""
    if condition is not None:
        dims = {"condition": ["obs_id", *_condition_dims(condition)]}
        groups["constant_data"] = _dataset({"condition": condition}, dims, None, None, draws=False)
    return groups


def _samples_groups(draws: DiffusionSamples) -> tuple[dict[str, Any], dict[str, Any]]:
    """``posterior_predictive`` (and ``constant_data`` for a conditional sampler), and their attrs."""
    rows = ["obs_id"] if draws.x_observed is not None else []
    event = _event_dims(draws.samples.dim() - 2 - len(rows))
    values = draws.get_samples(group_by_chain=True)
    dims = {"x_0": rows + event, "trajectory": ["step", *rows, *event]}
    coords = None if draws.trajectory is None else {"step": _numpy(draws.steps)}
    attrs = _plain(
        {
            "sampler": draws.sampler,
            "seed": int(draws.seed),
            "wall_time": float(draws.wall_time),
            "steps": [int(t) for t in draws.steps],
            "eta": draws.eta,
        }
    )
    groups = {"posterior_predictive": _dataset(values, dims, coords, attrs, draws=True)}
    constant: dict[str, Tensor] = {}
    constant_dims: dict[str, list[str]] = {}
    if draws.x_observed is not None and draws.mask is not None:
        constant = {"x_observed": draws.x_observed, "mask": draws.mask}
        constant_dims = {"x_observed": rows + event, "mask": rows + event}
    if draws.condition is not None:  # one per draw (shared by the chains), or one per observed row
        constant["sample_condition"] = draws.condition
        constant_dims["sample_condition"] = (rows or ["draw"]) + _condition_dims(draws.condition)
    if constant:
        groups["constant_data"] = _dataset(constant, constant_dims, None, None, draws=False)
    summary = {"sampler": draws.sampler, "sampler_seed": int(draws.seed), "num_chains": draws.num_chains}
    return groups, {**summary, "num_draws": draws.num_draws}


def _bound_groups(bound: BoundResult) -> tuple[dict[str, Any], dict[str, Any]]:
    """``bound`` and ``bound_terms`` (log_likelihood-like: one chain, one draw, per data point) and
    ``observed_data`` (the data scored), and the summary as attrs."""
    summary = {
        "nats": bound.nats,
        "nats_se": bound.nats_se,
        "bits_per_dim": bound.bits_per_dim,
        "bits_per_dim_se": bound.bits_per_dim_se,
        "num_dims": bound.num_dims,
        "seed": int(bound.seed),
        "wall_time": float(bound.wall_time),
    }
    attrs = {"quantity": BOUND_QUANTITY, **summary}
    terms_attrs = {"quantity": "the terms L_0 (decoder), L_1, ..., L_{T-1} (KLs), L_T (prior KL) of the bound, in nats"}
    event = _event_dims(bound.data.dim() - 1)
    groups = {
        "bound": _dataset({"x_0": bound.per_example[None, None]}, {"x_0": ["obs_id"]}, None, attrs, draws=True),
        "bound_terms": _dataset(
            {"x_0": bound.per_example_terms[None, None]},
            {"x_0": ["obs_id", "term"]},
            {"term": np.arange(bound.per_example_terms.shape[1])},
            terms_attrs,
            draws=True,
        ),
        "observed_data": _dataset({"x_0": bound.data}, {"x_0": ["obs_id", *event]}, None, None, draws=False),
    }
    return _with_condition(groups, bound.condition), {f"bound_{key}": value for key, value in summary.items()}


def _bayesian_bound_groups(bound: BayesianBoundResult) -> tuple[dict[str, Any], dict[str, Any]]:
    """``bound`` with one draw per weight draw, ``(1, S, obs_id)``; ``bound_terms`` per draw, ``(1, S, term)``;
    ``observed_data``; the summary as attrs."""
    summary = {
        "nats": bound.nats,
        "nats_se": bound.nats_se,
        "bits_per_dim": bound.bits_per_dim,
        "bits_per_dim_se": bound.bits_per_dim_se,
        "num_dims": bound.num_dims,
        "num_posterior_draws": bound.num_posterior_draws,
        "draws": bound.source,
        "weight_kl": bound.weight_kl,
        "seed": int(bound.seed),
        "wall_time": float(bound.wall_time),
    }
    attrs = _plain(
        {"quantity": BOUND_QUANTITY + "; one draw per weight draw (a posterior draw or an ensemble member)", **summary}
    )
    terms_attrs = {"quantity": "the mean over data points of each term L_0, ..., L_T of the bound under each weight draw"}
    event = _event_dims(bound.data.dim() - 1)
    groups = {
        "bound": _dataset({"x_0": bound.per_example[None]}, {"x_0": ["obs_id"]}, None, attrs, draws=True),
        "bound_terms": _dataset(
            {"x_0": bound.per_draw_terms[None]},
            {"x_0": ["term"]},
            {"term": np.arange(bound.per_draw_terms.shape[1])},
            terms_attrs,
            draws=True,
        ),
        "observed_data": _dataset({"x_0": bound.data}, {"x_0": ["obs_id", *event]}, None, None, draws=False),
    }
    return _with_condition(groups, bound.condition), _plain({f"bound_{key}": value for key, value in summary.items()})


def _weight_dims(values: Mapping[str, Tensor]) -> dict[str, list[str]]:
    """Dims of weight draws ``(1, S, *shape)``: ``"<path>_dim_<i>"`` for each dimension of the parameter."""
    return {name: [f"{name}_dim_{i}" for i in range(value.dim() - 2)] for name, value in values.items()}


def _fit_groups(
    fit: DiffusionFitResult | EnsembleFit, num_posterior_draws: int, seed: int | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``losses`` (the training objective per optimisation step; per member for an ensemble), the weight
    posterior (a Bayesian chain's draws, an ensemble's members) as ``posterior``, and the options as attrs."""
    if isinstance(fit, EnsembleFit):
        first = fit.members[0]
        last = int(first.state.step)
        steps = np.arange(last - first.losses.shape[0] + 1, last + 1)
        losses = _dataset({"loss": fit.losses}, {"loss": ["member", "step"]}, {"step": steps}, None, draws=False)
        stacked = {name: value[None] for name, value in fit.stacked_parameters().items()}
        posterior = _dataset(stacked, _weight_dims(stacked), None, {"draws": "ensemble members"}, draws=True)
        config = {
            **first.state.config,
            "seed": int(fit.seed),
            "member_seeds": [int(s) for s in fit.seeds],
            "num_members": fit.num_members,
            "num_steps": last,
            "wall_time": float(fit.wall_time),
        }
        return {"losses": losses, "posterior": posterior}, config
    last = int(fit.state.step)
    steps = np.arange(last - fit.losses.shape[0] + 1, last + 1)
    config = {**fit.state.config, "num_steps": last, "wall_time": float(fit.wall_time)}
    groups = {"losses": _dataset({"loss": fit.losses}, {"loss": ["step"]}, {"step": steps}, None, draws=False)}
    if fit.weight_posterior is not None:
        import torch

        posterior_seed = fit.seed if seed is None else seed
        generator = torch.Generator().manual_seed(posterior_seed)
        sampled = fit.weight_posterior.sample(num_posterior_draws, generator)
        draws = {name: value[None] for name, value in sampled.items()}
        attrs = {"draws": "the weight posterior q(w), a mean-field Normal", "posterior_seed": posterior_seed}
        groups["posterior"] = _dataset(draws, _weight_dims(draws), None, attrs, draws=True)
    return groups, config


def _uncertainty_groups(
    result: SampleUncertainty | PredictiveUncertainty | MutualInformation,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The read-out's samples as ``posterior_predictive`` (weight draws as the draws) and its variances or
    scores as the group ``uncertainty`` (no sample dims); its condition as ``constant_data``."""
    event = _event_dims(len(result.chain_config["event_shape"]))
    rows = ["sample_id", *event]
    common = {"draws": result.source, "seed": int(result.seed), "wall_time": float(result.wall_time)}
    if isinstance(result, SampleUncertainty):
        predictive = {"x_0": result.ddim_samples[None], "x_0_ancestral": result.ancestral_samples[None]}
        predictive_dims = {"x_0": rows, "x_0_ancestral": ["run", *rows]}
        spread = {
            "epistemic_var": result.epistemic_var,
            "aleatoric_var": result.aleatoric_var,
            "total_var": result.total_var,
            "x_T": result.x_T,
        }
        spread_dims = {name: rows for name in spread}
        attrs = {
            "readout": "sample_uncertainty",
            "epistemic_var": "variance over weight draws of deterministic DDIM from a shared x_T (ddof=1)",
            "aleatoric_var": "mean over weight draws of the variance of ancestral runs from the same x_T (ddof=1)",
            "total_var": "epistemic_var + aleatoric_var",
            **common,
        }
    elif isinstance(result, PredictiveUncertainty):
        rows = ["obs_id", *event]
        predictive = {"x_0": result.samples[None]}
        predictive_dims = {"x_0": ["sample", *rows]}
        spread = {
            "mean": result.mean,
            "epistemic_var": result.epistemic_var,
            "aleatoric_var": result.aleatoric_var,
            "total_var": result.total_var,
        }
        spread_dims = {name: rows for name in spread}
        attrs = {
            "readout": "predictive_uncertainty",
            "aleatoric_var": "mean over weight draws of the variance over samples (ddof=1)",
            "epistemic_var": "variance over weight draws of the mean over samples (ddof=1)",
            "total_var": "variance over all samples of all weight draws (ddof=1)",
            **common,
        }
    else:
        predictive = {"x_0": result.samples[None, None]}
        predictive_dims = {"x_0": rows}
        spread = {"mutual_information": result.score, "mutual_information_per_step": result.per_step}
        spread_dims = {"mutual_information": ["sample_id"], "mutual_information_per_step": ["step", "sample_id"]}
        attrs = {
            "readout": "mutual_information",
            "mutual_information": "mean over the steps of 0.5 sum_d log(1 + Var_s mu_sd / sigma_t^2), in nats",
            "num_posterior_draws": result.num_posterior_draws,
            **common,
        }
    coords = {"step": _numpy(result.steps)} if isinstance(result, MutualInformation) else None
    groups = {
        "posterior_predictive": _dataset(predictive, predictive_dims, None, _plain(common), draws=True),
        "uncertainty": _dataset(spread, spread_dims, coords, _plain(attrs), draws=False),
    }
    if result.condition is not None:
        cond = result.condition
        cond_rows = "obs_id" if isinstance(result, PredictiveUncertainty) else "sample_id"
        dims = {"sample_condition": [cond_rows, *_condition_dims(cond)]}
        groups["constant_data"] = _dataset({"sample_condition": cond}, dims, None, None, draws=False)
    return groups, {"readout": attrs["readout"], "readout_seed": int(result.seed)}


def diffusion_to_arviz(
    *,
    fit: DiffusionFitResult | EnsembleFit | None = None,
    bound: BoundResult | BayesianBoundResult | None = None,
    samples: DiffusionSamples | None = None,
    uncertainty: SampleUncertainty | PredictiveUncertainty | MutualInformation | None = None,
    num_posterior_draws: int = 100,
    seed: int | None = None,
) -> Any:
    """A diffusion run as one ``arviz.InferenceData``: any of its fit, bound evaluation and samples.

    Groups, each present when its source is given:

    ==========================  ====================================================================
    ``posterior_predictive``    ``samples``: ``x_0`` ``(chain, draw, *event)`` (a conditional sampler:
                                ``(chain, draw, obs_id, *event)``); with ``return_chain=True`` also
                                ``trajectory``, with ``step`` coordinates (the visited steps, ``T..0``)
    ``constant_data``           a conditional sampler's ``x_observed`` and ``mask``; a conditional
                                chain's ``sample_condition`` (each draw's, or each observed row's)
                                and ``condition`` (each scored data point's)
    ``bound``                   ``bound``: ``x_0``, the negative ELBO of each data point, ``(chain=1,
                                draw=1, obs_id)``, laid out like ``log_likelihood`` but named for what
                                it is, a bound (its ``quantity`` attribute says so)
    ``bound_terms``             ``x_0``, every term ``L_k`` of every data point, ``(1, 1, obs_id, term)``
    ``observed_data``           ``x_0``, the data the bound scored
    ``losses``                  ``fit``: ``loss``, the training objective at every optimisation ``step``
                                (``(member, step)`` for an ensemble)
    ==========================  ====================================================================

    Under weight uncertainty (a Bayesian chain's fit, an :class:`~probgen.infer.results.EnsembleFit`
    and their read-outs) the groups are:

    ==========================  ====================================================================
    ``posterior``               the weight posterior as one chain of draws, ``(1, S, *shape)`` per
                                Bayesian parameter (``num_posterior_draws`` draws of ``q(w)``, seeded
                                by ``seed`` or the fit's seed); an ensemble's members, every parameter
    ``bound``                   a :class:`~probgen.infer.results.BayesianBoundResult`: ``x_0``, the bound
                                of each data point under each weight draw, ``(1, S, obs_id)``
    ``bound_terms``             ``x_0``, the mean of each term under each weight draw, ``(1, S, term)``
    ``posterior_predictive``    ``uncertainty``'s samples: DDIM's ``x_0`` ``(1, S, sample_id, *event)``
                                and ``x_0_ancestral`` ``(1, S, run, sample_id, *event)``; a predictive
                                read-out's ``x_0`` ``(1, S, sample, obs_id, *event)``; a mutual
                                information read-out's ``x_0`` ``(1, 1, sample_id, *event)``
    ``uncertainty``             the read-out's variances (``epistemic_var``, ``aleatoric_var``,
                                ``total_var``, ...) or scores (``mutual_information``), with the
                                definitions in the group's attributes
    ``constant_data``           the read-out's ``sample_condition``; a bound's ``condition``
    ==========================  ====================================================================

    Attributes record the configuration: ``inference_library``, ``inference_library_version``,
    ``inference_method`` (``"diffusion"``), the chain's (``net``, ``schedule``, ``num_timesteps``,
    ``event_shape``, ``decoder``, ``variance``, ``prediction``), the fit's options (``seed``,
    ``objective``, ``timestep_sampling``, ``lr``, ``final_lr``, ``decay_steps``, ``batch_size``,
    ``ema_decay``, ``grad_clip``, ``num_steps``, ``wall_time``), the bound's summary (``bound_nats``,
    ``bound_nats_se``, ``bound_bits_per_dim``, ...) and the sampler's (``sampler``, ``sampler_seed``,
    ``num_chains``, ``num_draws``); each group's attributes repeat what belongs to it. Options that
    are ``None`` are left out (NetCDF stores no ``None``).

    :param fit: from :func:`~probgen.infer.diffusion.fit_diffusion`.
    :param bound: from :func:`~probgen.infer.diffusion.evaluate_bound`.
    :param samples: from a sampler of :mod:`probgen.infer.diffusion`.
    :param uncertainty: from :func:`~probgen.infer.diffusion.sample_uncertainty`,
        :func:`~probgen.infer.diffusion.predictive_uncertainty` or
        :func:`~probgen.infer.diffusion.mutual_information`.
    :param int num_posterior_draws: draws of a Bayesian fit's weight posterior for ``posterior``.
    :param seed: seeds those draws; the fit's seed if ``None``.
    :returns: an ``arviz.InferenceData``; ``to_netcdf`` saves it and ``az.from_netcdf`` reads it back.
    :raises ValueError: if nothing is given.
    :raises TypeError: for a source of the wrong type.

    Example:

    >>> from probgen.infer.diffusion import sample_ancestral
    >>> from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
    >>> chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("linear", 5), event_shape=(2,))
    >>> idata = diffusion_to_arviz(samples=sample_ancestral(chain, num_samples=10, num_chains=2, seed=0))
    >>> idata.posterior_predictive["x_0"].dims, idata.posterior_predictive["x_0"].shape
    (('chain', 'draw', 'x_0_dim_0'), (2, 10, 2))
    >>> idata.attrs["schedule"], int(idata.attrs["num_timesteps"])
    ('linear', 5)
    """
    num_posterior_draws = check_positive_int("num_posterior_draws", num_posterior_draws)

    def fit_groups(source: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        return _fit_groups(source, num_posterior_draws, seed)

    def bound_groups(source: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        return _bayesian_bound_groups(source) if isinstance(source, BayesianBoundResult) else _bound_groups(source)

    parts: list[tuple[Any, Any, Any]] = [
        (fit, (DiffusionFitResult, EnsembleFit), fit_groups),
        (bound, (BoundResult, BayesianBoundResult), bound_groups),
        (samples, DiffusionSamples, _samples_groups),
        (uncertainty, _UNCERTAINTY, _uncertainty_groups),
    ]
    given = [(source, kind, build) for source, kind, build in parts if source is not None]
    if not given:
        raise ValueError("diffusion_to_arviz needs a fit, a bound or samples (or an uncertainty read-out).")
    az = import_arviz()
    groups: dict[str, Any] = {}
    attrs: dict[str, Any] = {
        "inference_library": "probgen",
        "inference_library_version": _probgen_version(),
        "inference_method": "diffusion",
    }
    for source, kind, build in given:
        if not isinstance(source, kind):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise TypeError(f"expected a {names}, got {type(source).__name__}.")
        built, part_attrs = build(source)
        if "posterior_predictive" in built and "posterior_predictive" in groups:
            raise ValueError("samples and uncertainty both fill posterior_predictive; convert them separately.")
        if "constant_data" in built and "constant_data" in groups:
            mine, theirs = built.pop("constant_data"), groups["constant_data"]
            if set(mine.data_vars) & set(theirs.data_vars):
                raise ValueError("samples and uncertainty both fill constant_data; convert them separately.")
            groups["constant_data"] = theirs.merge(mine)
        groups.update(built)
        attrs.update(part_attrs)
    first = next(source for source in (fit, bound, samples, uncertainty) if source is not None)
    chain_config = first.chain_config  # the fit's chain, else the scored or sampled one
    return az.InferenceData(attrs=_plain({**attrs, **chain_config}), **groups)
