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

Diffusion models (:mod:`probgen.infer.diffusion`) have results of their own, defined in
:mod:`probgen.infer._diffusion_results` and importable from here:
:class:`DiffusionFitResult` and its resumable :class:`DiffusionTrainState`, :class:`BoundResult`,
and :class:`DiffusionSamples`, whose draws lead with the same ``(chain, draw)`` dims and which
converts to ArviZ like every posterior. A Bayesian denoiser or a deep ensemble (:class:`EnsembleFit`)
adds the read-outs under weight uncertainty: :class:`BayesianBoundResult`, :class:`SampleUncertainty`,
:class:`PredictiveUncertainty` and :class:`MutualInformation`. Every result records its ``seed`` and
``wall_time``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor

from probgen._device import device_of
from probgen._io import load_checkpoint, save_checkpoint
from probgen._types import SAMPLE_DIMS, Samples
from probgen._validate import check_both_or_neither, check_seed
from probgen.infer._diffusion_results import (
    SAMPLERS,
    BayesianBoundResult,
    BoundResult,
    DiffusionFitResult,
    DiffusionSamples,
    DiffusionTrainState,
    EnsembleFit,
    MutualInformation,
    PredictiveUncertainty,
    SampleUncertainty,
    Sampler,
    final_loss,
)
from probgen.infer._model import InferenceModel, ModelData


__all__ = [
    "PosteriorResult",
    "MCMCResult",
    "SVIResult",
    "SVIState",
    "BayesianBoundResult",
    "BoundResult",
    "DiffusionFitResult",
    "DiffusionSamples",
    "DiffusionTrainState",
    "EnsembleFit",
    "MutualInformation",
    "PredictiveUncertainty",
    "SampleUncertainty",
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
        data = self.spec.bind_on(device_of(self.samples), args, model_kwargs, fit=False)
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
            data = self.spec.bind_on(device_of(self.samples), args, model_kwargs, fit=True)
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
        steps = [f"guide={self.guide_name}", f"{self.losses.numel()} steps", f"final loss={final_loss(self.losses)}"]
        return super()._summary() + steps
