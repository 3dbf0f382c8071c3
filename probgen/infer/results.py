"""Results of inference: one protocol for every method and every model.

SVI and MCMC results share one protocol, so downstream code never branches on the method:

* ``sample_dims``: ``("chain", "draw")``; every array from ``get_samples`` leads with them
  (SVI results have one chain of draws from the fitted guide);
* ``get_samples(group_by_chain=False)``: latent and deterministic sites;
* ``get_sample_stats()``: per-draw sampler statistics under ArviZ names (empty for SVI);
* ``predict(*args, model_kwargs=None)``: the posterior predictive at new data, vectorised over
  draws (a :class:`~probgen.infer.predictive.Prediction` for a BNN; for a Pyro program every
  site, as ``pyro.infer.Predictive`` gives them);
* ``log_likelihood(*args)``: pointwise log-likelihood per draw (the training data by default);
* ``to_arviz()``: an ``arviz.InferenceData`` (built in :mod:`probgen.infer.arviz`).

A result holds the model behind the inference seam (:class:`~probgen.infer._model.InferenceModel`),
the draws and the data they condition on; ``result.model`` is the model as fitted (a copy).

Diffusion models (:mod:`probgen.infer.diffusion`) have results of their own, in the last section:
:class:`DiffusionFitResult` and its resumable :class:`DiffusionTrainState`, :class:`BoundResult`,
and :class:`DiffusionSamples`, whose draws lead with the same ``(chain, draw)`` dims and which
converts to ArviZ like every posterior. Every result records its ``seed`` and ``wall_time``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, get_args

import torch
from torch import Tensor

from probgen._io import load_checkpoint, save_checkpoint
from probgen._types import SAMPLE_DIMS, Samples
from probgen._validate import check_both_or_neither, check_seed
from probgen.infer._model import InferenceModel, ModelData
from probgen.models.diffusion.chain import DiffusionChain


__all__ = [
    "PosteriorResult",
    "MCMCResult",
    "SVIResult",
    "SVIState",
    "BoundResult",
    "DiffusionFitResult",
    "DiffusionSamples",
    "DiffusionTrainState",
    "Sampler",
    "SAMPLERS",
]


#: The ``"format"`` of a file written by :meth:`SVIState.save`, and that format's version.
SVI_STATE_FORMAT = "probgen.svi_state"
SVI_STATE_VERSION = 1


class SVIState(NamedTuple):
    """Everything needed to resume an SVI run exactly where it stopped.

    :ivar int step: optimisation steps taken so far.
    :ivar dict guide_state: ``guide.state_dict()`` (variational parameters of an autoguide or a
        module guide); empty for a guide written as a function.
    :ivar dict model_state: ``model.state_dict()`` (a module model's own parameters).
    :ivar dict optim_state: the torch optimiser's ``state_dict()``.
    :ivar Tensor rng_state: torch's RNG state after the last step.
    :ivar Tensor losses: the loss (negative ELBO) of every step so far.
    :ivar str guide_name: which guide family produced ``guide_state`` (``"custom"`` for a guide
        passed as an object or a function).
    :ivar dict param_state: unconstrained values of global ``pyro.param`` statements, of the
        model (``"model"``) and of the guide (``"guide"``).
    :ivar int decay_steps: the learning-rate schedule's horizon, so that a resumed run keeps it.
    """

    step: int
    guide_state: dict[str, Any]
    model_state: dict[str, Any]
    optim_state: dict[str, Any]
    rng_state: Tensor
    losses: Tensor
    guide_name: str
    param_state: dict[str, dict[str, Tensor]] = {}
    decay_steps: int | None = None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state atomically (a kill during the write leaves the previous file), versioned."""
        save_checkpoint(self._asdict(), path, file_format=SVI_STATE_FORMAT, version=SVI_STATE_VERSION)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SVIState:
        """Read a state written by :meth:`save` (``torch.load(weights_only=True)``: no code from the file runs).

        :raises FileNotFoundError: if there is no file at ``path``.
        :raises probgen.CheckpointError: (a ValueError) for a truncated or foreign file, another kind
            of file, or one from a newer probgen.
        """
        raw = load_checkpoint(path, file_format=SVI_STATE_FORMAT, version=SVI_STATE_VERSION, what="an SVI state")
        return cls(**{name: raw[name] for name in cls._fields if name in raw})


@dataclass(frozen=True, repr=False)
class PosteriorResult:
    """Draws from a posterior over a model's latent sites, with the data they condition on.

    :ivar spec: the model behind the inference seam (holds the fitted copy of the model).
    :ivar samples: draws per site, each shaped ``(chain, draw, *site_shape)``: latent sites and
        the deterministic sites the model records.
    :ivar data: the data the fit conditioned on (``None`` for a result loaded from a file that
        could not store them).
    :ivar int seed: the seed the run used.
    :ivar float wall_time: seconds the fit took.
    """

    spec: InferenceModel
    samples: Samples
    data: ModelData | None
    seed: int
    wall_time: float

    sample_dims = SAMPLE_DIMS

    @property
    def model(self) -> Any:
        """The model as fitted: a copy of the user's BNN or Pyro program."""
        return self.spec.model

    def _training(self) -> ModelData:
        if self.data is None:
            raise ValueError(
                "this result holds no training data (its file could not store every model argument); "
                "pass the data explicitly."
            )
        return self.data

    @property
    def x(self) -> Tensor:
        """The training inputs of a BNN fit."""
        return self._bnn_data(0)

    @property
    def y(self) -> Tensor:
        """The training targets of a BNN fit."""
        return self._bnn_data(1)

    def _bnn_data(self, index: int) -> Tensor:
        if self.spec.kind != "bnn":
            raise AttributeError(
                "x and y are the data of a BNN fit; this result's model is a Pyro program, whose data "
                "are result.data.args and result.data.kwargs."
            )
        return self._training().args[index]

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

    def predict(self, *args: Any, model_kwargs: Mapping[str, Any] | None = None, seed: int | None = None) -> Any:
        """Posterior predictive at new data, vectorised over draws.

        For a BNN, ``predict(x)`` returns a :class:`~probgen.infer.predictive.Prediction`. For a Pyro
        program, ``predict(*args, model_kwargs=...)`` runs it with each draw's latent values and
        returns every sample site (latent, deterministic and those left unobserved by the data,
        typically ``y=None``), as ``pyro.infer.Predictive`` does, shaped ``(chain, draw, ...)``.

        :param int seed: seeds the draws; defaults to the fit's seed.
        """
        data = self.spec.bind(args, model_kwargs, fit=False)
        seed = self.seed if seed is None else check_seed(seed)
        return self.spec.predict(self.samples, data, seed=seed)

    def log_likelihood(self, *args: Any, model_kwargs: Mapping[str, Any] | None = None) -> Any:
        """Pointwise ``log p(obs_i | theta)`` per draw, on the training data when no data are given.

        A BNN returns a tensor ``(chain, draw, n)`` for its ``"obs"`` site (``log_likelihood(x, y)``);
        a Pyro program a dict ``{observed site: (chain, draw, *batch)}``.
        """
        if args or model_kwargs:
            if self.spec.kind == "bnn":
                check_both_or_neither(args[0] if args else None, args[1] if len(args) > 1 else None)
            data = self.spec.bind(args, model_kwargs, fit=True)
        else:
            data = self._training()
        values = self.spec.log_likelihood(self.samples, data)
        return next(iter(values.values())) if self.spec.kind == "bnn" else values

    def to_arviz(
        self,
        *,
        x_new: Any = None,
        new_kwargs: Mapping[str, Any] | None = None,
        seed: int | None = None,
        predictive: bool = True,
    ) -> Any:
        """This posterior as an ``arviz.InferenceData``; see :func:`probgen.infer.arviz.to_arviz`."""
        from probgen.infer.arviz import to_arviz  # the converter imports this module

        return to_arviz(self, x_new=x_new, new_kwargs=new_kwargs, seed=seed, predictive=predictive)

    def _summary(self) -> list[str]:
        sites = ", ".join(list(self.samples)[:6]) + (", ..." if len(self.samples) > 6 else "")
        name = type(self.model).__name__ if self.spec.kind == "bnn" else getattr(self.spec, "name", "model")
        return [f"model={name}", f"{self.num_chains} chain(s) x {self.num_draws} draws", f"sites: {sites}"]

    def __repr__(self) -> str:
        parts = self._summary() + [f"seed={self.seed}", f"wall_time={self.wall_time:.1f} s"]
        return f"{type(self).__name__}({'; '.join(parts)})"


@dataclass(frozen=True, repr=False)
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

    def _summary(self) -> list[str]:
        return super()._summary() + [f"backend={self.backend}", f"{self.num_divergences} divergences"]


@dataclass(frozen=True, repr=False)
class SVIResult(PosteriorResult):
    """A fitted variational posterior and draws from it (one chain).

    :ivar guide: the fitted guide (a Pyro autoguide, a module, or the guide function).
    :ivar losses: the loss (negative ELBO, in nats) of every step.
    :ivar state: an :class:`SVIState`; pass it as ``init_state=`` to resume.
    :ivar bool stopped_early: whether early stopping ended the run.
    :ivar str guide_name: the guide family (``"normal"``, ``"lowrank"``, ..., ``"custom"``); kept
        through NetCDF so that a reloaded result still says how it was fitted.
    """

    guide: Any = None
    losses: Tensor = field(default_factory=lambda: torch.zeros(0))
    state: SVIState | None = None
    stopped_early: bool = False
    guide_name: str | None = None

    def _summary(self) -> list[str]:
        steps = [f"guide={self.guide_name}", f"{self.losses.numel()} steps", f"final loss={_final_loss(self.losses)}"]
        return super()._summary() + steps


def _final_loss(losses: Tensor) -> str:
    return f"{float(losses[-1]):.4g}" if losses.numel() else "n/a"


# ---------------------------------------------------------------------------------------------- diffusion
#: The ``"format"`` of a file written by :meth:`DiffusionTrainState.save`.
TRAIN_STATE_FORMAT = "probgen.diffusion_train_state"
TRAIN_STATE_VERSION = 1


class DiffusionTrainState(NamedTuple):
    """Everything :func:`~probgen.infer.diffusion.fit_diffusion` needs to continue a run exactly.

    Pass it as ``init_state=``; :meth:`save` writes it and :meth:`load` reads it back (with
    ``torch.load(weights_only=True)``).

    :ivar int step: optimisation steps taken so far.
    :ivar dict net_state: the network's ``state_dict``.
    :ivar dict optimizer_state: Adam's ``state_dict``.
    :ivar ema_state: the ``state_dict`` of the ``torch.optim.swa_utils.AveragedModel`` that keeps the
        exponential moving average of the weights and buffers (with its ``n_averaged``), or ``None``
        without EMA.
    :ivar scheduler_state: the learning-rate scheduler's ``state_dict``, or ``None`` without decay.
    :ivar dict sampler_state: the :class:`~probgen.infer.diffusion.TimestepSampler`'s state.
    :ivar Tensor rng_state: the state of the torch generator that draws minibatches, steps and noise.
    :ivar dict config: the run's options (``seed``, ``objective``, ``timestep_sampling``, ``lr``,
        ``final_lr``, ``decay_steps``, ``batch_size``, ``ema_decay``, ``grad_clip``, ``num_timesteps``).
    """

    step: int
    net_state: dict[str, Tensor]
    optimizer_state: dict[str, Any]
    ema_state: dict[str, Tensor] | None
    scheduler_state: dict[str, Any] | None
    sampler_state: dict[str, Any]
    rng_state: Tensor
    config: dict[str, Any]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state to ``path`` (``torch.save``, atomically: a crash leaves the old file)."""
        save_checkpoint(self._asdict(), path, file_format=TRAIN_STATE_FORMAT, version=TRAIN_STATE_VERSION)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DiffusionTrainState:
        """Read a state written by :meth:`save` (or by ``fit_diffusion(checkpoint=...)``).

        :raises FileNotFoundError: if there is no file at ``path``.
        :raises ValueError: for a file that is not a training state (a saved chain, a foreign file,
            a checkpoint of an older or a newer probgen).
        """
        raw = load_checkpoint(
            path, file_format=TRAIN_STATE_FORMAT, version=TRAIN_STATE_VERSION, what="a diffusion training state"
        )
        return cls(**{name: raw[name] for name in cls._fields})


@dataclass(frozen=True, repr=False)
class DiffusionFitResult:
    """The result of :func:`~probgen.infer.diffusion.fit_diffusion`.

    :ivar DiffusionChain chain: a new chain holding the trained network (the EMA network when
        ``ema_decay`` is set); the chain passed in is left untouched.
    :ivar Tensor losses: the minibatch objective at every step of this call, in nats per data point
        for ``"elbo"`` (an unbiased estimate of the negative ELBO), mean squared error for ``"eps_mse"``.
    :ivar int seed: the seed of the run (the original seed when resumed).
    :ivar float wall_time: seconds this call took.
    :ivar DiffusionTrainState state: the state after the last step; pass it as ``init_state`` to resume.
    """

    chain: DiffusionChain
    losses: Tensor
    seed: int
    wall_time: float
    state: DiffusionTrainState

    def to_arviz(self, *, bound: BoundResult | None = None, samples: DiffusionSamples | None = None) -> Any:
        """The run as an ``arviz.InferenceData``: its losses and configuration, and the ``bound`` and
        ``samples`` of the trained chain if given; see :func:`probgen.infer.arviz.diffusion_to_arviz`."""
        from probgen.infer.arviz import diffusion_to_arviz  # the converter imports this module

        return diffusion_to_arviz(fit=self, bound=bound, samples=samples)

    @property
    def chain_config(self) -> dict[str, Any]:
        """The trained chain's configuration, ``chain.describe()``."""
        return self.chain.describe()

    def __repr__(self) -> str:
        return (
            f"DiffusionFitResult({self.state.step} steps, objective={self.state.config['objective']!r}, "
            f"final loss={_final_loss(self.losses)}; seed={self.seed}; wall_time={self.wall_time:.1f} s)"
        )


@dataclass(frozen=True, repr=False)
class BoundResult:
    """The full variational bound on a data set, from :func:`~probgen.infer.diffusion.evaluate_bound`.

    :ivar float nats: the mean over data points of ``-ELBO(x_0) = L_T + sum_t L_{t-1}``, in nats per
        data point (an upper bound on the negative log-likelihood in expectation).
    :ivar float nats_se: its standard error over data points.
    :ivar float bits_per_dim: ``nats / (D log 2)``, with ``D`` the number of dimensions.
    :ivar float bits_per_dim_se: its standard error.
    :ivar Tensor terms: the mean of each term, shape ``(T + 1,)``: ``terms[0]`` is ``L_0`` (the decoder),
        ``terms[k]`` is ``L_k`` for ``k = 1..T-1``, ``terms[T]`` is ``L_T`` (the prior KL).
    :ivar Tensor terms_se: the standard errors of ``terms``.
    :ivar Tensor per_example: ``-ELBO`` of each data point, shape ``(N,)``.
    :ivar Tensor per_example_terms: every term of every data point, shape ``(N, T + 1)``, columns as
        in ``terms``; ``per_example`` is their sum over columns.
    :ivar Tensor data: the data points scored, ``(N, *event_shape)``.
    :ivar int num_dims: ``D``.
    :ivar int seed: the seed of the noise draws.
    :ivar float wall_time: seconds the evaluation took.
    :ivar dict chain_config: the scored chain's configuration, ``DiffusionChain.describe()``.
    """

    nats: float
    nats_se: float
    bits_per_dim: float
    bits_per_dim_se: float
    terms: Tensor
    terms_se: Tensor
    per_example: Tensor
    per_example_terms: Tensor
    data: Tensor
    num_dims: int
    seed: int
    wall_time: float
    chain_config: dict[str, Any]

    def to_arviz(self) -> Any:
        """The bound as an ``arviz.InferenceData``; see :func:`probgen.infer.arviz.diffusion_to_arviz`."""
        from probgen.infer.arviz import diffusion_to_arviz  # the converter imports this module

        return diffusion_to_arviz(bound=self)

    def __repr__(self) -> str:
        return (
            f"BoundResult({self.nats:.4g} +- {self.nats_se:.2g} nats = {self.bits_per_dim:.4g} bits/dim on "
            f"{self.per_example.shape[0]} points; seed={self.seed}; wall_time={self.wall_time:.1f} s)"
        )


Sampler = Literal["ancestral", "ddim", "conditional"]
#: The samplers of :mod:`probgen.infer.diffusion`, as :attr:`DiffusionSamples.sampler` names them.
SAMPLERS: tuple[Sampler, ...] = get_args(Sampler)


@dataclass(frozen=True, repr=False)
class DiffusionSamples:
    """Draws of ``x_0`` from a diffusion chain's sampler, leading with the sample dims ``(chain, draw)``.

    :ivar Tensor samples: ``x_0``, shape ``(chain, draw, *event_shape)``; for
        :func:`~probgen.infer.diffusion.sample_conditional`, ``(chain, draw, N, *event_shape)``, one
        completion of each of the ``N`` observed rows per draw.
    :ivar Tensor steps: the steps ``t`` the sampler visited, from ``T`` down to ``0``.
    :ivar int seed: the seed of the draws.
    :ivar float wall_time: seconds the sampler took.
    :ivar str sampler: ``"ancestral"``, ``"ddim"`` or ``"conditional"``.
    :ivar trajectory: with ``return_chain=True``, the state at every visited step, shape
        ``(chain, draw, len(steps), *samples.shape[2:])``, where ``trajectory[:, :, i]`` is
        ``x_{steps[i]}``; otherwise ``None``.
    :ivar x_observed: the observed rows of a conditional sampler, ``(N, *event_shape)``; else ``None``.
    :ivar mask: where ``x_observed`` is observed (broadcast to its shape); else ``None``.
    :ivar eta: DDIM's ``eta``; ``None`` for the other samplers.
    :ivar dict chain_config: the sampled chain's configuration, ``DiffusionChain.describe()``.
    """

    samples: Tensor
    steps: Tensor
    seed: int
    wall_time: float
    sampler: Sampler
    chain_config: dict[str, Any]
    trajectory: Tensor | None = None
    x_observed: Tensor | None = None
    mask: Tensor | None = None
    eta: float | None = None

    sample_dims = SAMPLE_DIMS

    @property
    def num_chains(self) -> int:
        return int(self.samples.shape[0])

    @property
    def num_draws(self) -> int:
        """Draws per chain."""
        return int(self.samples.shape[1])

    def get_samples(self, group_by_chain: bool = False) -> Samples:
        """``{"x_0": ...}`` (and ``"trajectory"`` when kept), ``(chain, draw, ...)`` if ``group_by_chain``
        else ``(chain * draw, ...)``: rows, as :func:`probgen.metrics.energy_distance` takes them."""
        values = {"x_0": self.samples}
        if self.trajectory is not None:
            values["trajectory"] = self.trajectory
        if group_by_chain:
            return values
        return {k: v.reshape((-1,) + v.shape[2:]) for k, v in values.items()}

    def to_arviz(self) -> Any:
        """These draws as an ``arviz.InferenceData``; see :func:`probgen.infer.arviz.diffusion_to_arviz`."""
        from probgen.infer.arviz import diffusion_to_arviz  # the converter imports this module

        return diffusion_to_arviz(samples=self)

    def __repr__(self) -> str:
        return (
            f"DiffusionSamples({self.sampler}; {self.num_chains} chain(s) x {self.num_draws} draws of shape "
            f"{tuple(self.samples.shape[2:])}; seed={self.seed}; wall_time={self.wall_time:.1f} s)"
        )
