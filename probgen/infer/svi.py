"""Stochastic variational inference for any static Pyro program, and probgen's BNN as a fast case.

Two levels, as in NumPyro:

* :func:`fit_svi` is the one-call path: it validates the data, fits a guide and returns an
  :class:`~probgen.infer.results.SVIResult` with draws from the fitted guide.
* :class:`SVI` is the step API for custom loops: ``init``, ``update``, ``evaluate`` and ``state``.

The guide is a name (:data:`GUIDES`: Pyro's ``AutoNormal``, ``AutoLowRankMultivariateNormal``,
``AutoMultivariateNormal``, ``AutoDelta``), an ``AutoGuide`` instance, or any Pyro guide written
as a callable. Parameters live with the fit, not in Pyro's global parameter store: autoguides and
module guides keep theirs (``pyro.settings.context(module_local_params=True)``), and global
``pyro.param`` statements of the model and of a guide function are served from stores that belong
to this fit (:class:`~probgen.infer._trace.LocalParams`). Two fits therefore never share parameters
by name, and a fit leaves Pyro's global state as it found it.

Minibatches: a BNN takes ``batch_size=`` (its likelihood's data plate subsamples); a Pyro program
writes ``pyro.plate(name, size, subsample_size=B)`` itself. Either way the plate scales the
likelihood by N / B, so the loss is always an estimate of the full-data negative ELBO in nats.

Data parallel: started by ``torchrun`` (see :mod:`probgen.infer._distributed`), every process (rank
``r`` of ``W``) runs the same fit on the same data. All ranks start from the same parameters (built
from ``seed``), then each draws its Monte Carlo noise from its own seed
(:func:`~probgen.infer._distributed.rank_seed`) and its minibatch from its own shard of the rows,
``r, r + W, r + 2W, ...`` (:class:`~probgen.infer._distributed.ShardPlates`): ``batch_size`` rows per
rank, or the whole shard for a full-batch fit, so a step sees ``W * batch_size`` distinct rows (all
of them, full-batch). The plate keeps the full size N and scales by N / B on each rank; between
``backward()`` and the optimiser's step the gradients are averaged over the ranks, each weighing
its shard's share ``n_r / N`` of the rows, so the step is the single-process step on the ranks'
combined minibatch (the full-batch gradient, full-batch) and the parameters stay equal everywhere.
The loss reported is averaged the same way. A Pyro program's own subsampled plate draws its
``subsample_size`` per rank from the rank's shard; a plate that takes all its rows is not split.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from functools import partial
from collections.abc import Callable, Mapping
from typing import Any, ContextManager, Literal, get_args

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import (
    AutoDelta,
    AutoGuide,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from pyro.infer.autoguide.initialization import init_to_feasible, init_to_sample, init_to_value
from torch import Tensor, nn

from probgen._device import check_device, device_of, get_rng_state, set_rng_state
from probgen._types import DeviceLike, Samples, SeedLike
from probgen._validate import (
    check_choice,
    check_positive_float,
    check_positive_int,
    check_seed,
    lookup,
    reject_unknown_options,
)
from probgen.infer import _distributed, _meanfield, _trace
from probgen.infer._dispatch import as_inference_model
from probgen.infer._model import InferenceModel, ModelData
from probgen.infer._progress import make_progress_bar, progress_enabled
from probgen.infer.results import SVIResult, SVIState

__all__ = [
    "SVI", "fit_svi", "GuideName", "GUIDES", "ElboName", "ELBOS", "BNN_INIT_SCALE", "PYRO_INIT_SCALE", "DEFAULT_NUM_STEPS", "LR_DECAY",
]  # fmt: skip

GuideName = Literal["normal", "lowrank", "mvn", "delta"]
ElboName = Literal["auto", "meanfield", "trace"]
#: What ``guide_name`` says of a guide passed as an object or a function.
CUSTOM_GUIDE = "custom"

#: The guide's initial standard deviation for a BNN's weights: small, so that training starts near a
#: point estimate and the network bends to the data before the KL term spreads the weights. At
#: Pyro's 0.1, the noise of the sampled weights swamps the signal of a 1-50-1 network and SVI settles
#: in the optimum where the noise explains the data (benchmarks/README.md, "Why these SVI defaults").
BNN_INIT_SCALE = 1e-3
#: The guide's initial standard deviation for a Pyro program: Pyro's own ``AutoNormal`` default.
PYRO_INIT_SCALE = 0.1
#: :func:`fit_svi`'s default number of steps.
DEFAULT_NUM_STEPS = 8000
#: :func:`fit_svi`'s learning rate decays to ``lr / LR_DECAY`` over the run unless ``final_lr`` is given.
LR_DECAY = 10.0

AutoGuideFactory = Callable[[Callable[..., Any], float, "int | None", Callable[..., Any]], AutoGuide]


def _auto_normal(model: Callable[..., Any], init_scale: float, rank: int | None, init_loc: Callable[..., Any]) -> AutoGuide:
    return AutoNormal(model, init_loc_fn=init_loc, init_scale=init_scale)


def _auto_lowrank(model: Callable[..., Any], init_scale: float, rank: int | None, init_loc: Callable[..., Any]) -> AutoGuide:
    return AutoLowRankMultivariateNormal(model, init_loc_fn=init_loc, init_scale=init_scale, rank=rank)


def _auto_mvn(model: Callable[..., Any], init_scale: float, rank: int | None, init_loc: Callable[..., Any]) -> AutoGuide:
    return AutoMultivariateNormal(model, init_loc_fn=init_loc, init_scale=init_scale)


def _auto_delta(model: Callable[..., Any], init_scale: float, rank: int | None, init_loc: Callable[..., Any]) -> AutoGuide:
    return AutoDelta(model, init_loc_fn=init_loc)


#: Guide families by name: mean-field Normal (default), low-rank plus diagonal covariance,
#: full covariance (small models only), and a point mass (MAP).
GUIDES: dict[str, AutoGuideFactory] = {
    "normal": _auto_normal,
    "lowrank": _auto_lowrank,
    "mvn": _auto_mvn,
    "delta": _auto_delta,
}
GUIDE_NAMES: tuple[str, ...] = get_args(GuideName)

#: ELBO estimators by name; ``"auto"`` takes ``"meanfield"`` (closed-form KL terms where they
#: exist) for guides given by name and ``"trace"`` for guides the user wrote, which may have
#: dependencies between sites that the mean-field estimator would ignore.
ELBOS: dict[str, type] = {"meanfield": TraceMeanField_ELBO, "trace": Trace_ELBO}
ELBO_NAMES: tuple[str, ...] = get_args(ElboName)


class _InitFromData:
    """An autoguide's init strategy whose starting values come from the data, set when the run starts.

    Autoguides build their parameters lazily, on the first call (in :meth:`SVI.init`), so the
    strategy can be handed to the guide before the data are known. Sites without a value fall
    back to ``fallback``.
    """

    def __init__(self, fallback: Callable[..., Any]) -> None:
        self.fallback = fallback
        self.values: dict[str, Tensor] = {}

    def __call__(self, site: dict[str, Any]) -> Tensor:
        return init_to_value(site, values=self.values, fallback=self.fallback)


def _local_params() -> ContextManager[None]:
    """Keep module parameters (autoguides, PyroModules) inside their modules, out of Pyro's global param store."""
    return pyro.settings.context(module_local_params=True)


def _build_guide(
    guide: Any, spec: InferenceModel, program: Callable[..., Any], init_scale: float, rank: int | None
) -> tuple[Any, str]:
    """The guide object (or function) to fit, and its name."""
    if isinstance(guide, str):
        check_choice("guide", guide, GUIDE_NAMES)
        init_loc = _InitFromData(init_to_sample if spec.kind == "bnn" else init_to_feasible)
        with _local_params():
            return lookup("guide", guide, GUIDES)(program, init_scale, rank, init_loc), guide
    if isinstance(guide, AutoGuide):
        # AutoGuide.__getstate__ drops its model reference (the copy's and, in passing, the original's):
        # keep the user's guide intact, and point the copy at this fit's program
        saved = guide._model, guide.master
        try:
            clone = copy.deepcopy(guide)
        finally:
            guide._model, guide.master = saved
        clone._model = (program,)
        return _module_local(clone), CUSTOM_GUIDE
    if isinstance(guide, nn.Module):
        return _module_local(copy.deepcopy(guide)), CUSTOM_GUIDE
    if callable(guide):
        return guide, CUSTOM_GUIDE
    raise TypeError(
        f"guide must be one of {', '.join(map(repr, GUIDE_NAMES))}, a Pyro AutoGuide or a callable guide, "
        f"got {type(guide).__name__}."
    )


def _module_local(guide: nn.Module) -> nn.Module:
    """A guide module built outside ``module_local_params`` mode, made to keep its parameters locally.

    A ``PyroModule`` decides at construction whether its parameters live in itself or in Pyro's global
    store (its call context gets a local parameter state only in the first case). An ``AutoGuide`` the
    user built is set up lazily, on its first call, which is here; giving its modules the empty local
    state they would have had makes it the same as one built in that mode.
    """
    for module in guide.modules():
        context = getattr(module, "_pyro_context", None)
        if context is not None and not hasattr(context, "param_state"):
            context.param_state = {"params": {}, "constraints": {}}
    return guide


class SVI:
    """One SVI run as a step API: configure, ``init``, then ``update`` per step.

    :param model: a :class:`~probgen.models.bnn.BNN` or any callable Pyro program (copied).
    :param guide: a name from :data:`GUIDES`, an ``AutoGuide`` instance, or a callable Pyro guide.
    :param float lr: Adam's learning rate.
    :param float final_lr: if given, the learning rate decays exponentially from ``lr`` to
        ``final_lr`` over ``decay_steps`` steps (then stays there).
    :param int decay_steps: the length of that decay.
    :param str elbo: ``"auto"`` (default; see :data:`ELBOS`), ``"meanfield"`` (closed-form KL
        between guide and prior sites where available) or ``"trace"`` (Monte Carlo KL).
    :param int num_particles: ELBO particles per step.
    :param int batch_size: minibatch size of a BNN; ``None`` uses all rows each step. A Pyro program
        minibatches through its own ``pyro.plate(..., subsample_size=...)``.
    :param float init_scale: the guide's initial standard deviation; ``None`` (default) takes
        :data:`BNN_INIT_SCALE` for a BNN and Pyro's 0.1 (:data:`PYRO_INIT_SCALE`) for a Pyro program.
    :param int rank: covariance rank of the ``"lowrank"`` guide.
    :param bool fast_path: for a BNN with the mean-field guide, ``elbo="meanfield"`` and Normal weight
        priors, evaluate that same ELBO estimator directly in torch (:mod:`probgen.infer._meanfield`)
        instead of through Pyro's traces; ``False`` forces ``TraceMeanField_ELBO``. In a
        torch.distributed job steps go through Pyro's traces, whose plates take the rank's shard.
    :param device: where :meth:`init` moves the data and this run's copy of the model (the guide's
        parameters are then made there); ``None`` keeps them where they are.

    In a torch.distributed job (see the module docstring) :meth:`init` joins it, :meth:`update`
    averages the gradients and the loss over the ranks, and reading :attr:`state` gathers every
    rank's random state: each is a collective, so every rank must call it. :meth:`evaluate` and
    :meth:`draws` stay this rank's own.

    >>> import torch
    >>> from torch import nn
    >>> from probgen.models.bnn import BNN
    >>> x, y = torch.randn(20, 1), torch.randn(20)
    >>> svi = SVI(BNN(nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1))), lr=0.01)
    >>> svi.init(x, y, seed=0)
    >>> loss = svi.update(x, y)
    >>> svi.state.step
    1
    """

    def __init__(
        self,
        model: Any,
        *,
        guide: Any = "normal",
        lr: float = 1e-2,
        final_lr: float | None = None,
        decay_steps: int = 1000,
        elbo: ElboName = "auto",
        num_particles: int = 1,
        batch_size: int | None = None,
        init_scale: float | None = None,
        rank: int | None = None,
        fast_path: bool = True,
        device: DeviceLike | None = None,
    ) -> None:
        self.spec = as_inference_model(model)
        #: Where :meth:`init` puts the data and the model (``None``: where the data already are).
        self.device = check_device(device)
        if self.device is not None and isinstance(self.spec.model, nn.Module):
            self.spec.model.to(self.device)  # the run's own copy of the model
        self.final_lr = None if final_lr is None else check_positive_float("final_lr", final_lr)
        self.decay_steps = check_positive_int("decay_steps", decay_steps)
        self.lr = check_positive_float("lr", lr)
        elbo_name: str = check_choice("elbo", str(elbo), ELBO_NAMES)
        self.num_particles = check_positive_int("num_particles", num_particles)
        self.batch_size = None if batch_size is None else check_positive_int("batch_size", batch_size)
        if init_scale is None:
            init_scale = BNN_INIT_SCALE if self.spec.kind == "bnn" else PYRO_INIT_SCALE
        self.init_scale = check_positive_float("init_scale", init_scale)
        self.rank = None if rank is None else check_positive_int("rank", rank)
        self.spec.call_kwargs(batch_size=self.batch_size)  # a Pyro program rejects batch_size here
        #: Unconstrained values of the guide function's global ``pyro.param`` statements.
        self.guide_params: dict[str, Tensor] = {}
        self._guide_constraints: dict[str, Any] = {}
        self.program = self.spec.program(trainable=True)
        self.guide, self.guide_name = _build_guide(guide, self.spec, self.program, self.init_scale, self.rank)
        if self.device is not None and isinstance(self.guide, nn.Module):
            self.guide.to(self.device)  # a guide module of the user's, with parameters of its own
        self._guide_fn = _trace.LocalParams(self.guide_params, self._guide_constraints)(self.guide)
        if elbo_name == "auto":
            elbo_name = "meanfield" if self.guide_name != CUSTOM_GUIDE else "trace"
        self.elbo_name = elbo_name
        self.elbo = lookup("elbo", elbo_name, ELBOS)(num_particles=self.num_particles, vectorize_particles=False)
        #: True when steps use probgen's direct evaluation of the mean-field ELBO.
        self.fast_path = (
            bool(fast_path)
            and _meanfield.applies(self.spec.model, self.guide, self.elbo_name)
            and _distributed.current() is None  # its minibatch cannot be confined to a rank's shard
        )
        self._optim: torch.optim.Optimizer | None = None
        self._step = 0
        self._losses: list[float] = []
        self._data: ModelData | None = None
        self._rng_state = torch.get_rng_state()
        self._device = torch.device("cpu")  # the data's, set by init
        #: This process's place in a torch.distributed job (``None``: a single process), set by :meth:`init`.
        self._job: _distributed.Job | None = None
        self._shards: _distributed.ShardPlates | None = None

    @property
    def model(self) -> Any:
        """The model being fitted (this run's copy)."""
        return self.spec.model

    def _call_kwargs(self, data: ModelData, subsample_size: int | None) -> dict[str, Any]:
        return {**data.kwargs, **self.spec.call_kwargs(batch_size=subsample_size)}

    def _subsample(self, data: ModelData) -> int | None:
        if self.spec.kind != "bnn":
            return None
        if self._job is not None:  # this rank's rows: batch_size of its shard, or all of it
            share = _distributed.shard_size(data.args[0].shape[0], self._job.rank, self._job.world_size)
            return share if self.batch_size is None else min(self.batch_size, share)
        if self.batch_size is None:
            return None
        return None if self.batch_size >= data.args[0].shape[0] else self.batch_size

    def _parameters(self) -> list[Tensor]:
        modules = [m for m in (self.guide, self.model) if isinstance(m, nn.Module)]
        tensors: list[Tensor] = [p for m in modules for p in m.parameters()]
        tensors += list(self.spec_params().values()) + list(self.guide_params.values())
        unique: dict[int, Tensor] = {}
        for p in tensors:
            if p.requires_grad:
                unique.setdefault(id(p), p)
        return list(unique.values())

    def spec_params(self) -> dict[str, Tensor]:
        """The model's own global ``pyro.param`` values (unconstrained), if it has any."""
        return getattr(self.spec, "params", {})

    def _bind(self, args: tuple[Any, ...], model_kwargs: Mapping[str, Any] | None) -> ModelData:
        if len(args) == 1 and isinstance(args[0], ModelData):
            return args[0]
        return self.spec.bind(args, model_kwargs, fit=True)

    def init(
        self,
        *args: Any,
        seed: int,
        init_state: SVIState | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        """Validate the data, seed the run, build the parameters and the optimiser; restore ``init_state`` if given."""
        data = self._bind(args, model_kwargs)
        if self.device is not None and device_of(*data.args, *data.kwargs.values()) != self.device:
            data = self.spec.bind_on(self.device, data.args, data.kwargs, fit=True)
        self._data = data
        self._device = self.device or device_of(*data.args, *data.kwargs.values())
        self._job = _distributed.join(self._device)
        if self._job is not None and self.spec.kind == "bnn" and data.args[0].shape[0] < self._job.world_size:
            raise ValueError(
                f"{data.args[0].shape[0]} rows cannot be shared by {self._job.world_size} processes; "
                "run fewer processes than there are rows."
            )
        init_loc = getattr(self.guide, "init_loc_fn", None)
        if isinstance(init_loc, _InitFromData):
            init_loc.values = self.spec.initial_values(data)
        pyro.set_rng_seed(seed)
        self._rng_state = get_rng_state(self._device)
        with torch.no_grad(), _local_params():
            kwargs = self._call_kwargs(data, self._subsample(data))
            self._guide_fn(*data.args, **kwargs)  # builds an autoguide's parameters
            if not self.fast_path:
                self.elbo.differentiable_loss(self.program, self._guide_fn, *data.args, **kwargs)  # global params
        # fused Adam: one kernel for all parameters, ~0.3 ms a step cheaper than the default
        # per-tensor loop on a 1-50-1 net (benchmarks/bnn_svi.py shows both).
        self._optim = torch.optim.Adam(self._parameters(), lr=self.lr, fused=True)
        if self._job is not None:
            # the same parameters on every rank (built from the same seed; a guide module the user
            # built may differ), then each rank's own random stream
            _distributed.broadcast_parameters(self._optim.param_groups[0]["params"])
            pyro.set_rng_seed(_distributed.rank_seed(seed, self._job.rank))
            self._rng_state = get_rng_state(self._device)
            self._shards = _distributed.ShardPlates(self._job)
        if init_state is not None:
            self._restore(init_state)

    def _restore(self, state: SVIState) -> None:
        if not isinstance(state, SVIState):
            raise TypeError(f"init_state must be an SVIState (result.state or SVIState.load(path)), got {type(state).__name__}.")
        if state.guide_name != self.guide_name:
            raise ValueError(
                f"init_state comes from a {state.guide_name!r} guide but this run uses "
                f"{self.guide_name!r}; pass guide={state.guide_name!r}."
            )
        rng_state = _distributed.own_rng_state(state.rng_state, self._job)
        if isinstance(self.guide, nn.Module):
            _check_compatible("the guide", self.guide.state_dict(), state.guide_state)
            self.guide.load_state_dict(state.guide_state)
        if isinstance(self.model, nn.Module):
            _check_compatible("the model", self.model.state_dict(), state.model_state)
            self.model.load_state_dict(state.model_state)
        for store, saved in ((self.spec_params(), state.param_state.get("model", {})), (self.guide_params, state.param_state.get("guide", {}))):
            with torch.no_grad():
                for name, value in saved.items():
                    if name in store:
                        store[name].copy_(value)
        assert self._optim is not None
        self._optim.load_state_dict(state.optim_state)
        set_rng_state(rng_state, self._device)
        self._rng_state = rng_state.clone()
        self._step = state.step
        self._losses = state.losses.tolist()

    def _learning_rate(self, step: int) -> float:
        """``lr * (final_lr / lr) ** min(step / decay_steps, 1)``: exponential decay, then flat."""
        if self.final_lr is None:
            return self.lr
        return self.lr * (self.final_lr / self.lr) ** min(step / self.decay_steps, 1.0)

    def update(self, *args: Any, model_kwargs: Mapping[str, Any] | None = None) -> float:
        """Take one gradient step on the negative ELBO; returns the loss before the step.

        :param args: the data (already validated by :meth:`init`: the same arrays, or new ones of
            the same kinds); none reuses the data of :meth:`init`.
        """
        if self._optim is None or self._data is None:
            raise RuntimeError("call init(*data, seed=...) before update().")
        data = self._data if not args and model_kwargs is None else ModelData(args, model_kwargs or {})
        lr = self._learning_rate(self._step)
        try:
            with self._shards or contextlib.nullcontext():
                loss = self.loss(data, subsample_size=self._subsample(data), num_particles=self.num_particles)
        except ValueError as error:
            # torch's distributions refuse invalid parameters (NaN, or a scale that underflowed to 0).
            # Parameters that were valid at the first step and are invalid now were driven there by
            # the optimiser: the fit diverged. At the first step it is the model's own mistake.
            drifted = self._step > 0 and str(error).startswith("Expected parameter")
            if drifted or not all(torch.isfinite(p).all() for p in self._parameters()):
                raise self._diverged("invalid (a distribution's parameter left its support)", lr) from error
            raise
        value = float(loss.detach())
        if self._shards is None and not math.isfinite(value):
            raise self._diverged(value, lr)
        for group in self._optim.param_groups:
            group["lr"] = lr
        self._optim.zero_grad(set_to_none=True)
        loss.backward()
        if self._shards is not None:  # every rank's gradient, weighted by its shard's share; a NaN reaches all
            params = self._optim.param_groups[0]["params"]
            value = _distributed.average_gradients(params, weight=self._shards.weight, value=value)
            if not math.isfinite(value):
                raise self._diverged(value, lr)
        self._optim.step()
        self._step += 1
        self._losses.append(value)
        self._rng_state = get_rng_state(self._device)  # after the step: whatever runs next cannot shift it
        return value

    def _diverged(self, value: float | str, lr: float) -> FloatingPointError:
        return FloatingPointError(
            f"the loss (negative ELBO) became {value} at step {self._step + 1}, so the fit diverged; lower lr "
            f"(it was {lr:.3g}), standardise the data, or shrink init_scale. The state before this step is "
            "svi.state (fit_svi's checkpoint= keeps it on disk)."
        )

    def loss(self, *args: Any, subsample_size: int | None = None, num_particles: int = 1) -> Tensor:
        """A differentiable estimate of the negative ELBO (nats) under the current guide.

        :param args: the data, or one :class:`~probgen.infer._model.ModelData`.
        """
        data = args[0] if len(args) == 1 and isinstance(args[0], ModelData) else ModelData(args)
        with _local_params():
            if self.fast_path:
                x, y = data.args
                return _meanfield.meanfield_loss(
                    self.model, self.guide, x, y, subsample_size=subsample_size, num_particles=num_particles,
                )  # fmt: skip
            elbo = self.elbo
            if num_particles != self.num_particles:
                elbo = type(self.elbo)(num_particles=num_particles, vectorize_particles=False)
            kwargs = self._call_kwargs(data, subsample_size)
            return elbo.differentiable_loss(self.program, self._guide_fn, *data.args, **kwargs)

    def evaluate(self, *args: Any, num_particles: int = 10) -> float:
        """A low-variance estimate of the full-data negative ELBO, without a gradient step."""
        num_particles = check_positive_int("num_particles", num_particles)
        with torch.no_grad():
            return float(self.loss(*args, num_particles=num_particles))

    @property
    def state(self) -> SVIState:
        """A snapshot of everything needed to resume (copies, safe to keep)."""
        if self._optim is None:
            raise RuntimeError("call init(*data, seed=...) before reading the state.")
        rng_state = self._rng_state.clone()
        if self._job is not None:  # every rank's stream, in rank order: (world_size, ...)
            rng_state = torch.stack(_distributed.gather(rng_state))
        return SVIState(
            step=self._step,
            guide_state=copy.deepcopy(self.guide.state_dict()) if isinstance(self.guide, nn.Module) else {},
            model_state=copy.deepcopy(self.model.state_dict()) if isinstance(self.model, nn.Module) else {},
            optim_state=copy.deepcopy(self._optim.state_dict()),
            rng_state=rng_state,
            losses=torch.tensor(self._losses, device="cpu"),
            guide_name=self.guide_name,
            param_state={
                "model": {k: v.detach().clone() for k, v in self.spec_params().items()},
                "guide": {k: v.detach().clone() for k, v in self.guide_params.items()},
            },
            decay_steps=self.decay_steps,
        )

    def draws(self, num_samples: int) -> Samples:
        """``num_samples`` joint draws of every latent site from the guide (and the model's
        deterministic sites), as one chain ``(1, num_samples, ...)``."""
        if self._data is None:
            raise RuntimeError("call init(*data, seed=...) before drawing from the guide.")
        with torch.no_grad():
            if self.spec.kind == "bnn":
                return _bnn_guide_draws(self, num_samples)
            return _guide_draws(self, self._data, num_samples)


def _bnn_guide_draws(svi: SVI, num_samples: int) -> Samples:
    """Vectorised by an outer plate: every latent site of a BNN has an empty batch shape (priors are
    whole-parameter events), so the plate's dim -1 is free."""
    with pyro.plate("_draws", num_samples, dim=-1), _local_params():
        draws = svi.guide()
    priors = svi.model.priors
    return {name: draws[name].reshape((1, num_samples) + tuple(priors[name].event_shape)) for name in priors}


def _guide_draws(svi: SVI, data: ModelData, num_samples: int) -> Samples:
    """Draws of a Pyro program's latent sites from the guide, as one chain.

    Vectorised by an outer plate to the left of the model's own plates, as ``pyro.infer.Predictive``
    does with ``parallel=True`` (autoguides and guides written with broadcasting in mind support it);
    otherwise the guide runs once per draw (``vmap``, or a loop for guides that ``vmap`` cannot batch:
    its in-place random draws on unbatched tensors, as every ``rsample`` makes, are one such case).
    """
    latent = svi.spec.latent_shapes(data)
    guide = _trace.LocalParams(svi.guide_params, svi._guide_constraints, trainable=False)(svi.guide)
    nesting = svi.spec.plate_nesting(data)

    def run(*handlers: Any) -> Any:
        with _local_params():
            return _trace.run_traced(guide, data.args, data.kwargs, *handlers)

    with torch.no_grad(), _trace.quiet_validation():
        out = _plate_draws(run, latent, num_samples, nesting)
        if out is None:
            out, _ = _trace.vectorise(lambda _: {n: _node_value(run(), n) for n in latent}, {}, num_samples)
    samples = {name: value.reshape((1, num_samples) + tuple(latent[name])) for name, value in out.items()}
    return svi.spec.complete(samples, data)


def _node_value(trace: Any, name: str) -> Tensor:
    nodes: Any = trace.nodes
    return nodes[name]["value"]


def _plate_draws(
    run: Callable[..., Any], latent: Mapping[str, tuple[int, ...]], num: int, nesting: int
) -> dict[str, Tensor] | None:
    """``num`` draws of every latent site at once, under a plate at dim ``-(nesting + 1)``; ``None``
    if the guide does not broadcast over it (a draw of the wrong size, or an error)."""
    try:
        trace = run(pyro.plate("_probgen_draws", num, dim=-(nesting + 1)))
        out = {}
        for name, shape in latent.items():
            value = _node_value(trace, name)
            if value.numel() != num * math.prod(shape) or value.shape[-len(shape) :] != shape and shape:
                return None
            out[name] = value.reshape((num,) + tuple(shape))
        return out
    except (RuntimeError, ValueError, TypeError, IndexError, NotImplementedError):
        return None


def _check_compatible(what: str, current: Mapping[str, Tensor], saved: Mapping[str, Any]) -> None:
    """Raise a ValueError naming the parameters whose names or shapes differ between a state and this run."""
    missing = sorted(set(current) - set(saved))
    extra = sorted(set(saved) - set(current))
    shapes = [
        f"{key} {tuple(saved[key].shape)} vs {tuple(value.shape)}"
        for key, value in current.items()
        if key in saved and isinstance(saved[key], Tensor) and saved[key].shape != value.shape
    ]
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}")
        if extra:
            parts.append(f"unknown {', '.join(extra[:5])}")
        if shapes:
            parts.append(f"other shapes: {'; '.join(shapes[:5])}")
        raise ValueError(
            f"init_state does not fit {what} of this run ({'; '.join(parts)}); resume with the model, "
            "architecture and guide the state was fitted with."
        )


class _EarlyStopping:
    """Stop when the monitored loss has not improved by ``min_delta`` for ``patience`` checks."""

    def __init__(self, patience: int, min_delta: float) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best = math.inf
        self.bad_checks = 0

    def should_stop(self, value: float) -> bool:
        if value < self.best - self.min_delta:
            self.best = value
            self.bad_checks = 0
        else:
            self.bad_checks += 1
        return self.bad_checks >= self.patience


_OPTIONS = (
    "model_kwargs", "guide", "num_steps", "lr", "final_lr", "decay_steps", "batch_size", "num_samples", "num_particles",
    "elbo", "init_scale", "rank", "fast_path", "patience", "min_delta", "eval_every", "validation",
    "init_state", "checkpoint", "seed", "device", "progress_bar",
)  # fmt: skip


def fit_svi(
    model: Any,
    *args: Any,
    model_kwargs: Mapping[str, Any] | None = None,
    guide: Any = "normal",
    num_steps: int = DEFAULT_NUM_STEPS,
    lr: float = 1e-2,
    final_lr: float | None = None,
    decay_steps: int | None = None,
    batch_size: int | None = None,
    num_samples: int = 1000,
    num_particles: int = 1,
    elbo: ElboName = "auto",
    init_scale: float | None = None,
    rank: int | None = None,
    fast_path: bool = True,
    patience: int | None = None,
    min_delta: float = 0.0,
    eval_every: int = 50,
    validation: tuple[Any, ...] | None = None,
    init_state: SVIState | None = None,
    checkpoint: str | None = None,
    seed: SeedLike = None,
    device: DeviceLike | None = None,
    progress_bar: bool = True,
    **unknown: Any,
) -> SVIResult:
    """Fit a variational posterior to a model by maximising the ELBO with Adam.

    The model is any static Pyro program or a :class:`~probgen.models.bnn.BNN`; its data are passed
    as its signature takes them (``fit_svi(model, x, y)``), keyword data through ``model_kwargs``.

    Started by ``torchrun``, every process runs the same call and the ranks share the data (see
    the module docstring). Rank 0's ``seed`` is the run's, rank 0 alone shows progress and writes
    ``checkpoint``, whose state holds every rank's random stream, and the monitored loss of early
    stopping is averaged over the ranks, so all stop together. Every rank returns a result with the
    same fitted guide, losses and state; its ``num_samples`` draws from the guide come from the
    rank's own random stream, so they differ between ranks.

    :param model: a BNN or a callable Pyro program; it is copied, so the caller's model keeps no fitted state.
    :param args: the model's positional data (a BNN's ``x`` and ``y``).
    :param dict model_kwargs: the model's keyword data.
    :param guide: ``"normal"`` (mean-field, default), ``"lowrank"``, ``"mvn"``, ``"delta"`` (MAP), an
        ``AutoGuide`` instance, or a callable Pyro guide (its ``pyro.param`` statements are fitted).
    :param int num_steps: optimisation steps, :data:`DEFAULT_NUM_STEPS` by default (more are added to
        ``init_state.step`` when resuming).
    :param float lr: Adam's (initial) learning rate.
    :param float final_lr: the learning rate decays exponentially from ``lr`` to ``final_lr`` over
        ``decay_steps``, so the guide settles instead of jittering about the optimum; by default to
        ``lr / 10`` (:data:`LR_DECAY`). Pass ``final_lr=lr`` for a constant rate.
    :param int decay_steps: the steps over which the learning rate decays to ``final_lr``, counted
        from the run's first step: by default ``num_steps`` for a new run and the resumed state's
        for ``init_state``, so a run split over several calls (give the first call the total) follows
        the same schedule as one call.
    :param int batch_size: a BNN's minibatch size; the likelihood rescales by N / batch_size.
    :param int num_samples: draws from the fitted guide kept on the result (one chain).
    :param float init_scale: the guide's initial standard deviation: :data:`BNN_INIT_SCALE` for a
        BNN and Pyro's 0.1 for a Pyro program by default.
    :param str elbo: ``"auto"``, ``"meanfield"`` or ``"trace"`` (see :data:`ELBOS`).
    :param bool fast_path: evaluate a BNN's mean-field ELBO directly in torch where it applies
        (see :class:`SVI`); the estimator is the same as ``TraceMeanField_ELBO``'s.
    :param int patience: enable early stopping: stop after this many checks (every ``eval_every``
        steps) without improvement of the monitored loss, which is the held-out negative ELBO
        when ``validation`` (a tuple of the model's positional data) is given and an exponential
        moving average of the training loss otherwise.
    :param float min_delta: the improvement (in nats) that counts.
    :param SVIState init_state: resume from ``result.state`` of an earlier run (on as many processes as it ran on).
    :param str checkpoint: a path; the state is saved there every ``eval_every`` steps and at the end.
    :param int seed: seeds the run (recorded on the result); ``None`` draws one.
    :param device: where the fit runs (``"cpu"``, ``"cuda"``, a ``torch.device``): the data and the
        model's copy move there and the guide's parameters are made there; ``None`` (the default)
        runs where the data are. The result's draws and predictions stay on that device.
    :returns: an :class:`~probgen.infer.results.SVIResult`.
    :raises ValueError: for inconsistent data or options, or an ``init_state`` saved by a run on
        another number of processes.
    :raises TypeError: for data the model does not take, an unknown option, or a guide that is
        neither a name, an autoguide nor callable.

    Example:

    >>> import torch
    >>> from torch import nn
    >>> from probgen.models.bnn import BNN
    >>> x = torch.linspace(-1, 1, 50).unsqueeze(-1)
    >>> y = 2 * x[:, 0] + 0.1 * torch.randn(50)
    >>> result = fit_svi(BNN(nn.Linear(1, 1)), x, y, num_steps=300, num_samples=100, seed=0, progress_bar=False)
    >>> result.get_samples(group_by_chain=True)["weight"].shape
    torch.Size([1, 100, 1, 1])
    """
    reject_unknown_options("fit_svi", unknown, _OPTIONS)
    num_steps = check_positive_int("num_steps", num_steps)
    num_samples = check_positive_int("num_samples", num_samples)
    eval_every = check_positive_int("eval_every", eval_every)
    min_delta = check_positive_float("min_delta", min_delta, allow_zero=True)
    stopper = None if patience is None else _EarlyStopping(check_positive_int("patience", patience), min_delta)
    seed = check_seed(seed)
    if init_state is not None and not isinstance(init_state, SVIState):
        raise TypeError(f"init_state must be an SVIState (result.state or SVIState.load(path)), got {type(init_state).__name__}.")

    if decay_steps is None:
        resumed = None if init_state is None else getattr(init_state, "decay_steps", None)
        decay_steps = resumed if resumed is not None else num_steps + (0 if init_state is None else init_state.step)
    if final_lr is None:
        final_lr = check_positive_float("lr", lr) / LR_DECAY
    start = time.perf_counter()
    svi = SVI(
        model,
        guide=guide,
        lr=lr,
        final_lr=final_lr,
        decay_steps=decay_steps,
        elbo=elbo,
        num_particles=num_particles,
        batch_size=batch_size,
        init_scale=init_scale,
        rank=rank,
        fast_path=fast_path,
        device=device,
    )
    data = svi.spec.bind_on(svi.device, args, model_kwargs, fit=True)
    val = None if validation is None else svi.spec.bind_on(svi.device, tuple(validation), None, fit=True)
    job = _distributed.join(device_of(*data.args, *data.kwargs.values()))
    if job is not None:
        seed = _distributed.agree(seed)  # a seed drawn at random differs between ranks
    svi.init(data, seed=seed, init_state=init_state)
    smoothed = math.nan
    stopped_early = False
    main = job is None or job.rank == 0
    with make_progress_bar(num_steps, desc="SVI", enabled=progress_enabled(progress_bar) and main) as bar:
        for i in range(num_steps):
            loss = svi.update()
            smoothed = loss if math.isnan(smoothed) else 0.98 * smoothed + 0.02 * loss
            bar.update()
            if (i + 1) % eval_every == 0 or i + 1 == num_steps:
                bar.set_postfix(elbo=f"{-smoothed:.4g}")
                if checkpoint is not None:
                    _distributed.write_on_main(partial(svi.state.save, checkpoint), job)
                if stopper is not None:
                    monitored = smoothed if val is None else svi.evaluate(val)
                    if job is not None and val is not None:
                        monitored = _distributed.average(monitored)  # one decision for every rank
                    if stopper.should_stop(monitored):
                        stopped_early = True
                        break
    state = svi.state
    if checkpoint is not None:
        _distributed.write_on_main(partial(state.save, checkpoint), job)
    samples = svi.draws(num_samples)
    return SVIResult(
        spec=svi.spec,
        samples=samples,
        data=data,
        seed=seed,
        wall_time=time.perf_counter() - start,
        guide=svi.guide,
        losses=state.losses,
        state=state,
        stopped_early=stopped_early,
        guide_name=svi.guide_name,
    )
