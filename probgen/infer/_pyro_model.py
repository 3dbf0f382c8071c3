"""Any static Pyro program behind the inference seam: the general case of :class:`InferenceModel`.

A :class:`PyroModel` wraps a callable that calls ``pyro.sample`` (a function, a ``PyroModule``,
anything). Binding data traces it (twice, with different random draws) to learn its structure:

* latent sites: sampled and unobserved, with their shapes, supports and plates; a discrete one
  can only be enumerated by Pyro's own NUTS;
* deterministic sites (``pyro.deterministic``), recorded with every draw;
* observed sites (``obs=``), the data of ``observed_data`` and ``log_likelihood``;
* factor sites (``pyro.factor``), which count in the log joint but are no data;
* plates that subsample (SVI's minibatches; NUTS refuses them, since it needs the whole data).

A program whose latent sites change between the two traces is rejected: inference needs a
static model. Prediction follows ``pyro.infer.Predictive``: the program runs with each draw's
latent values fixed and samples every unobserved site; it is vectorised over draws with
``torch.func.vmap``.

In ArviZ, every site keeps its Pyro name, batch dims take the name of their plate (``"J"``), other
dims are ``"<site>_dim_<i>"``; the program's array arguments go into ``constant_data`` under their
parameter names, and the attribute ``model_arguments`` records how to rebuild the call.
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from pyro.nn import PyroModule
from torch import Tensor, nn

from probgen._types import SAMPLE_DIMS, Samples
from probgen._validate import as_tensor
from probgen.infer import _trace
from probgen.infer._flat import FlatLogDensity
from probgen.infer._flat_trace import TraceLogDensity
from probgen.infer._model import (
    InferenceModel,
    ModelData,
    check_draw_shapes,
    check_model_kwargs,
    check_no_extra_latents,
    resolve_dim_clashes,
)

__all__ = ["PyroModel", "SiteInfo", "Structure", "PyroData"]

_ND = len(SAMPLE_DIMS)


class SiteInfo(NamedTuple):
    """One sample site of a traced program.

    :ivar str name: the site's name.
    :ivar tuple shape: its value's shape.
    :ivar int event_dim: how many rightmost dims are event dims.
    :ivar tuple plates: the plates it sits in.
    :ivar bool discrete: whether its support is discrete.
    """

    name: str
    shape: tuple[int, ...]
    event_dim: int
    plates: tuple[_trace.Plate, ...]
    discrete: bool = False


class Structure(NamedTuple):
    """What one trace of a program with its data shows (see the module docstring)."""

    latent: dict[str, SiteInfo]
    deterministic: dict[str, SiteInfo]
    observed: dict[str, SiteInfo]
    observed_values: dict[str, Tensor]
    factors: tuple[str, ...]
    subsampled: dict[str, tuple[int, int]]
    values: dict[str, Tensor]
    supports: dict[str, Any]


@dataclass(frozen=True)
class PyroData(ModelData):
    """Data bound to a Pyro program, with the structure its trace showed."""

    structure: Structure | None = None


def _plates(site: Mapping[str, Any]) -> tuple[_trace.Plate, ...]:
    return tuple(
        _trace.Plate(frame.name, frame.dim, frame.size)
        for frame in site["cond_indep_stack"]
        if frame.vectorized and frame.dim is not None
    )


def _structure(trace: Any) -> Structure:
    latent: dict[str, SiteInfo] = {}
    deterministic: dict[str, SiteInfo] = {}
    observed: dict[str, SiteInfo] = {}
    observed_values: dict[str, Tensor] = {}
    factors: list[str] = []
    subsampled: dict[str, tuple[int, int]] = {}
    values: dict[str, Tensor] = {}
    supports: dict[str, Any] = {}
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        if _trace.is_subsample(site):
            fn = site["fn"]
            if fn.subsample_size is not None and fn.subsample_size < fn.size:
                subsampled[name] = (int(fn.subsample_size), int(fn.size))
            continue
        value = site["value"]
        shape = tuple(value.shape)
        if _trace.is_deterministic(site):
            deterministic[name] = SiteInfo(name, shape, 0, _plates(site))
        elif _trace.is_factor(site):
            factors.append(name)
        elif _trace.is_observed(site):
            observed[name] = SiteInfo(name, shape, len(site["fn"].event_shape), _plates(site))
            observed_values[name] = value
        elif _trace.is_latent(site):
            support = site["fn"].support
            latent[name] = SiteInfo(name, shape, len(site["fn"].event_shape), _plates(site), bool(support.is_discrete))
            values[name] = value
            supports[name] = support
    return Structure(latent, deterministic, observed, observed_values, tuple(factors), subsampled, values, supports)


def _describe(sites: Mapping[str, SiteInfo]) -> str:
    return ", ".join(f"{name} {tuple(info.shape)}" for name, info in sites.items()) or "none"


def _site_dims(info: SiteInfo) -> list[str]:
    """Batch dims named after their plates, everything else ``"<site>_dim_<i>"``."""
    ndim = len(info.shape)
    batch_ndim = ndim - info.event_dim
    names = [f"{info.name}_dim_{i}" for i in range(ndim)]
    for plate in info.plates:
        position = batch_ndim + plate.dim
        if 0 <= position < batch_ndim and info.shape[position] == plate.size:
            names[position] = plate.name
    return names


#: JSON-storable argument values (recorded in the attributes rather than as arrays).
_LITERALS = (type(None), bool, int, float, str)


class PyroModel(InferenceModel):
    """Any callable Pyro program behind the inference seam.

    :param model: the program, called as ``model(*args, **kwargs)``; an ``nn.Module`` is copied.

    Its ``pyro.param`` statements (outside ``PyroModule`` s) are served from :attr:`params`, a store
    of this object's own: NUTS holds them at their initial values, SVI fits them.
    """

    kind = "pyro"

    def __init__(self, model: Callable[..., Any]) -> None:
        if not callable(model):
            raise TypeError(f"model must be a callable Pyro program, got {type(model).__name__}.")
        self.model = copy.deepcopy(model) if isinstance(model, nn.Module) else model
        self.name = getattr(model, "__name__", type(model).__name__)
        try:
            target = model.forward if isinstance(model, nn.Module) else model
            self.signature: inspect.Signature | None = inspect.signature(target)
        except (TypeError, ValueError):  # builtins and some C callables have none
            self.signature = None
        #: Unconstrained values of the program's global ``pyro.param`` statements, and their constraints.
        self.params: dict[str, Tensor] = {}
        self.param_constraints: dict[str, Any] = {}
        self._use_vmap = True

    # -- data -----------------------------------------------------------------------------------

    def _convert(self, name: str, value: Any) -> Any:
        """Arrays to tensors (floats in torch's default dtype, integers as long), checked for NaN."""
        if hasattr(value, "to_numpy") or isinstance(value, np.ndarray):
            array = np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value)
            if array.dtype.kind == "b":
                return torch.from_numpy(array.copy())
            dtype = torch.long if array.dtype.kind in "iu" else None
            return as_tensor(name, array, dtype=dtype)
        if isinstance(value, Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            bad = int((~torch.isfinite(value)).sum())
            raise ValueError(f"{name} contains {bad} NaN or infinite value(s); drop or impute them first.")
        return value

    def _names(self, args: tuple[Any, ...]) -> list[str]:
        """Names for the positional arguments: the signature's, ``arg<i>`` beyond them."""
        names = []
        params = [] if self.signature is None else list(self.signature.parameters.values())
        positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        for index in range(len(args)):
            names.append(positional[index] if index < len(positional) else f"arg{index}")
        return names

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None, *, fit: bool) -> PyroData:
        kwargs = dict(check_model_kwargs(kwargs))
        if self.signature is not None:
            try:
                self.signature.bind(*args, **kwargs)
            except TypeError as error:
                hint = ""
                if isinstance(self.model, nn.Module) and not isinstance(self.model, PyroModule):
                    hint = " To make a torch network Bayesian, wrap it: probgen.BNN(net)."
                raise TypeError(
                    f"{self.name}{self.signature} cannot be called with {len(args)} positional argument(s)"
                    f"{' and keyword(s) ' + ', '.join(sorted(kwargs)) if kwargs else ''}: {error}. Pass the "
                    "model's data positionally, in the order of its signature, and keyword data as "
                    f"model_kwargs={{...}}.{hint}"
                ) from None
        names = self._names(args)
        args = tuple(self._convert(name, value) for name, value in zip(names, args))
        kwargs = {key: self._convert(key, value) for key, value in kwargs.items()}
        structure = self._trace_structure(args, kwargs)
        if not structure.latent and not structure.observed and not structure.factors:
            raise ValueError(
                f"{self.name} samples nothing: it has no pyro.sample statements. To make a torch network "
                "Bayesian, wrap it: probgen.BNN(net)."
            )
        if fit and not structure.observed and not structure.factors:
            raise ValueError(
                f"{self.name} observes nothing with these data: no sample site has a value through obs=. "
                f"Pass the data positionally in the order of its signature {self.signature or ''} "
                "(fit_nuts(model, x, y)) or as model_kwargs={'y': y}, and give the observed site obs=."
            )
        return PyroData(args, kwargs, structure)

    def _trace_structure(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Structure:
        """Trace the program twice, with different draws, and check that its latent sites stay the same."""
        runs = []
        with torch.random.fork_rng(), torch.no_grad():
            for seed in (0, 1):
                torch.manual_seed(seed)
                trace = _trace.run_traced(self.model, args, kwargs, *self._handlers())
                runs.append(_structure(trace))
        first, second = runs
        same = {n: i.shape for n, i in first.latent.items()} == {n: i.shape for n, i in second.latent.items()}
        if not same:
            raise ValueError(
                f"{self.name}'s latent sites change between runs (one run sampled {_describe(first.latent)}; "
                f"another {_describe(second.latent)}); probgen needs a static model, which samples the same "
                "latent sites with the same shapes on every run."
            )
        return first

    def _handlers(self) -> list[Any]:
        return [_trace.LocalParams(self.params, self.param_constraints, trainable=False)]

    def program(self, *, trainable: bool = False) -> Callable[..., Any]:
        """The program with its ``pyro.param`` statements served from :attr:`params`."""
        store = _trace.LocalParams(self.params, self.param_constraints, trainable=trainable)
        return store(self.model)

    @staticmethod
    def _structure_of(data: ModelData) -> Structure:
        structure = getattr(data, "structure", None)
        if structure is None:
            raise TypeError("data for a Pyro model must come from PyroModel.bind.")
        return structure

    # -- structure ------------------------------------------------------------------------------

    def latent_shapes(self, data: ModelData) -> dict[str, tuple[int, ...]]:
        latent = self._structure_of(data).latent
        return {name: info.shape for name, info in latent.items() if not info.discrete}

    def discrete_latents(self, data: ModelData) -> tuple[str, ...]:
        return tuple(name for name, info in self._structure_of(data).latent.items() if info.discrete)

    def subsampled_plates(self, data: ModelData) -> dict[str, tuple[int, int]]:
        return dict(self._structure_of(data).subsampled)

    def plate_nesting(self, data: ModelData) -> int:
        structure = self._structure_of(data)
        sites = (*structure.latent.values(), *structure.deterministic.values(), *structure.observed.values())
        return max((-plate.dim for info in sites for plate in info.plates), default=0)

    def _dtype(self, data: ModelData) -> torch.dtype:
        for value in self._structure_of(data).values.values():
            if value.is_floating_point():
                return value.dtype
        return torch.get_default_dtype()

    # -- inference ------------------------------------------------------------------------------

    def flat_density(self, data: ModelData) -> FlatLogDensity:
        structure = self._structure_of(data)
        discrete = self.discrete_latents(data)
        if discrete:
            raise ValueError(
                f"latent site(s) {', '.join(map(repr, discrete))} of {self.name} are discrete; probgen's NUTS "
                "samples continuous sites only. Use backend='pyro', whose NUTS enumerates discrete sites, "
                "or marginalise them in the model."
            )
        shapes = self.latent_shapes(data)
        if not shapes:
            raise ValueError(f"{self.name} has no latent sites to infer with these data.")
        return TraceLogDensity(
            self.model, data.args, data.kwargs, shapes, self._dtype(data),
            params=self.params, param_constraints=self.param_constraints,
            values=structure.values, supports=structure.supports,
        )  # fmt: skip

    def unpack(self, density: FlatLogDensity, draws: Tensor) -> Samples:
        return density.unpack(draws)

    def _run_per_draw(
        self,
        samples: Samples,
        data: ModelData,
        read: Callable[[Any], dict[str, Tensor]],
        *,
        unobserve: set[str] | None = None,
        seed: int | None = None,
    ) -> dict[str, Tensor]:
        """``read(trace)`` of the program run once per draw with the draw's latent values, vectorised.

        Returns the outputs shaped ``(chain, draw, ...)``.
        """
        lead = next(iter(samples.values())).shape[:_ND] if samples else (1, 1)
        num = int(np.prod(lead))
        latent = {name: samples[name].reshape((num,) + samples[name].shape[_ND:]) for name in self.latent_shapes(data) if name in samples}

        def one(values: dict[str, Tensor]) -> dict[str, Tensor]:
            handlers = [*self._handlers(), _trace.SetLatent(values)]
            if unobserve:
                handlers.append(_trace.Unobserve(unobserve))
            return read(_trace.run_traced(self.model, data.args, data.kwargs, *handlers))

        with torch.random.fork_rng(), torch.no_grad(), _trace.quiet_validation():
            if seed is not None:
                torch.manual_seed(seed)
            out, used_vmap = _trace.vectorise(one, latent, num, try_vmap=self._use_vmap)
        self._use_vmap = self._use_vmap and used_vmap
        return {name: value.reshape(tuple(lead) + value.shape[1:]) for name, value in out.items()}

    def complete(self, samples: Samples, data: ModelData) -> Samples:
        structure = self._structure_of(data)
        if not structure.deterministic:
            return dict(samples)
        names = set(structure.deterministic)
        extra = self._run_per_draw(samples, data, lambda tr: {n: s["value"] for n, s in tr.nodes.items() if n in names})
        return {**samples, **extra}

    # -- predictions ----------------------------------------------------------------------------

    def predict(self, samples: Samples, data: ModelData, *, seed: int) -> dict[str, Tensor]:
        """Every sample site (latent, deterministic and unobserved) per draw, as ``pyro.infer.Predictive``."""

        def read(trace: Any) -> dict[str, Tensor]:
            return {
                name: site["value"]
                for name, site in trace.nodes.items()
                if site["type"] == "sample" and not _trace.is_subsample(site) and not _trace.is_factor(site)
            }

        return self._run_per_draw(samples, data, read, seed=seed)

    def log_likelihood(self, samples: Samples, data: ModelData) -> dict[str, Tensor]:
        names = set(self._structure_of(data).observed)

        def read(trace: Any) -> dict[str, Tensor]:
            return {name: _trace.pointwise_log_prob(site) for name, site in trace.nodes.items() if name in names}

        return self._run_per_draw(samples, data, read)

    def posterior_predictive(self, samples: Samples, data: ModelData, *, seed: int) -> dict[str, Tensor]:
        names = set(self._structure_of(data).observed)

        def read(trace: Any) -> dict[str, Tensor]:
            return {name: site["value"] for name, site in trace.nodes.items() if name in names}

        return self._run_per_draw(samples, data, read, unobserve=names, seed=seed)

    # -- ArviZ ----------------------------------------------------------------------------------

    def observed(self, data: ModelData) -> dict[str, Tensor]:
        return dict(self._structure_of(data).observed_values)

    def _arguments(self, data: ModelData) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Tensor]]:
        """How to rebuild the call: a description per argument, and the arrays for ``constant_data``."""
        observed = self._structure_of(data).observed_values
        arrays: dict[str, Tensor] = {}

        def describe(name: str, value: Any) -> dict[str, Any]:
            if isinstance(value, Tensor):
                for site, obs in observed.items():
                    if value is obs:
                        return {"name": name, "kind": "observed", "site": site}
                arrays[name] = value
                return {"name": name, "kind": "array"}
            if isinstance(value, _LITERALS):
                return {"name": name, "kind": "value", "value": value}
            return {"name": name, "kind": "unsaved", "type": type(value).__name__}

        positional = [describe(name, value) for name, value in zip(self._names(data.args), data.args)]
        keyword = [describe(name, value) for name, value in data.kwargs.items()]
        return positional, keyword, arrays

    def constant(self, data: ModelData) -> dict[str, Tensor]:
        return self._arguments(data)[2]

    def dims(self, samples: Samples, data: ModelData | None) -> dict[str, list[str]]:
        shapes: dict[str, tuple[int, ...]] = {name: tuple(v.shape[_ND:]) for name, v in samples.items()}
        proposed: dict[str, list[str]] = {name: [f"{name}_dim_{i}" for i in range(len(s))] for name, s in shapes.items()}
        if data is not None:
            structure = self._structure_of(data)
            for info in (*structure.latent.values(), *structure.deterministic.values(), *structure.observed.values()):
                if info.name in proposed and tuple(info.shape) == shapes[info.name] or info.name not in proposed:
                    shapes[info.name] = tuple(info.shape)
                    proposed[info.name] = _site_dims(info)
            for name, value in self.constant(data).items():
                key = name if name not in proposed else f"{name}"
                shapes[key] = tuple(value.shape)
                proposed[key] = [f"{name}_dim_{i}" for i in range(value.dim())]
        return resolve_dim_clashes(proposed, shapes)

    def attrs(self, samples: Samples, data: ModelData) -> dict[str, Any]:
        structure = self._structure_of(data)
        positional, keyword, _ = self._arguments(data)
        return {
            "model_name": self.name,
            "model_arguments": json.dumps({"positional": positional, "keyword": keyword}),
            "latent_sites": json.dumps([n for n, i in structure.latent.items() if not i.discrete]),
            "deterministic_sites": json.dumps(list(structure.deterministic)),
        }

    def restore(
        self, observed: Mapping[str, np.ndarray], constant: Mapping[str, np.ndarray], attrs: Mapping[str, Any]
    ) -> ModelData | None:
        raw = attrs.get("model_arguments")
        if raw is None:
            return None
        description = json.loads(raw)

        def value_of(entry: dict[str, Any]) -> Any:
            kind = entry["kind"]
            if kind == "array":
                return torch.as_tensor(np.asarray(constant[entry["name"]]))
            if kind == "observed":
                return torch.as_tensor(np.asarray(observed[entry["site"]]))
            if kind == "value":
                return entry["value"]
            raise LookupError(entry["name"])

        try:
            args = tuple(value_of(entry) for entry in description["positional"])
            kwargs = {entry["name"]: value_of(entry) for entry in description["keyword"]}
        except (LookupError, KeyError):
            return None  # an argument the file could not store: predictions need the data passed again
        return self.bind(args, kwargs, fit=True)

    def check_sites(
        self, posterior: Mapping[str, np.ndarray], attrs: Mapping[str, Any], data: ModelData | None
    ) -> Samples:
        saved = attrs.get("latent_sites")
        saved_latents = json.loads(saved) if saved else None
        if data is None:
            if saved_latents is None:
                raise ValueError("the file does not say which sites are latent (attribute 'latent_sites').")
            dtype = torch.get_default_dtype()
            return {name: torch.as_tensor(posterior[name]).to(dtype) for name in saved_latents if name in posterior}
        shapes = self.latent_shapes(data)
        samples = check_draw_shapes(posterior, shapes, self._dtype(data))
        if saved_latents is not None:
            check_no_extra_latents(saved_latents, shapes)
        return samples
