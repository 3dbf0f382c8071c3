"""Results of diffusion runs: training (and its resumable state), bounds, samples and the read-outs under weight uncertainty.

:func:`~probgen.infer.diffusion.fit_diffusion` returns a :class:`DiffusionFitResult` and its
resumable :class:`DiffusionTrainState`; :func:`~probgen.infer.diffusion.evaluate_bound` a
:class:`BoundResult`; the samplers :class:`DiffusionSamples`, whose draws lead with the same
``(chain, draw)`` dims as every posterior. A Bayesian denoiser or a deep ensemble
(:class:`EnsembleFit`) adds the read-outs under weight uncertainty: :class:`BayesianBoundResult`,
:class:`SampleUncertainty`, :class:`PredictiveUncertainty` and :class:`MutualInformation`. Every
result records its ``seed`` and ``wall_time`` and converts to ArviZ (:mod:`probgen.infer.arviz`).

Users import these from :mod:`probgen.infer.results`, which holds the posterior results of SVI and
NUTS and re-exports these; they live apart because they are a second family with a shape of its own.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, get_args

import torch
from torch import Tensor

from probgen._io import load_checkpoint, save_checkpoint
from probgen._types import SAMPLE_DIMS, Samples
from probgen.models.diffusion.chain import DiffusionChain

__all__ = [
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
    "final_loss",
]


def final_loss(losses: Tensor) -> str:
    """The last of a run's losses for a one-line summary (``"n/a"`` for a run without steps)."""
    return f"{float(losses[-1]):.4g}" if losses.numel() else "n/a"


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
        ``final_lr``, ``decay_steps``, ``batch_size``, ``ema_decay``, ``grad_clip``, ``num_timesteps``,
        ``num_classes``, ``cond_dim``; for a Bayesian chain also ``prior``, ``weight_sites``, ``num_data``).
    :ivar weight_state: a Bayesian chain's weight posterior, the ``state_dict`` of its
        :class:`~probgen.models.diffusion.MeanFieldWeights` (locations and unconstrained scales);
        ``None`` for a point-estimate chain.
    """

    step: int
    net_state: dict[str, Tensor]
    optimizer_state: dict[str, Any]
    ema_state: dict[str, Tensor] | None
    scheduler_state: dict[str, Any] | None
    sampler_state: dict[str, Any]
    rng_state: Tensor
    config: dict[str, Any]
    weight_state: dict[str, Tensor] | None = None

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
        return cls(**{name: raw[name] for name in cls._fields if name in raw})


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

    A Bayesian chain's fit keeps its weight posterior, :attr:`weight_posterior` (``chain.weight_posterior``).
    """

    chain: DiffusionChain
    losses: Tensor
    seed: int
    wall_time: float
    state: DiffusionTrainState

    @property
    def bayesian(self) -> bool:
        """Whether the trained chain has a Bayesian denoiser (a prior and a weight posterior)."""
        return self.chain.weight_posterior is not None

    @property
    def weight_posterior(self) -> Any:
        """The fitted ``q(w)``, a :class:`~probgen.models.diffusion.MeanFieldWeights`; ``None`` for a point chain.

        ``fit.weight_posterior.sample(S, generator)`` gives ``S`` draws of every Bayesian parameter,
        stacked; ``fit.chain.with_weights(...)`` turns one draw into a point chain.
        """
        return self.chain.weight_posterior

    def to_arviz(
        self,
        *,
        bound: BoundResult | BayesianBoundResult | None = None,
        samples: DiffusionSamples | None = None,
        uncertainty: SampleUncertainty | PredictiveUncertainty | MutualInformation | None = None,
        num_posterior_draws: int = 100,
        seed: int | None = None,
    ) -> Any:
        """The run as an ``arviz.InferenceData``: its losses and configuration, the ``bound``, ``samples``
        and ``uncertainty`` read-outs if given, and for a Bayesian chain ``num_posterior_draws`` draws of
        the weight posterior (seeded by ``seed``, the fit's seed by default) as the ``posterior`` group;
        see :func:`probgen.infer.arviz.diffusion_to_arviz`."""
        from probgen.infer.arviz import diffusion_to_arviz  # the converter imports this module

        return diffusion_to_arviz(
            fit=self, bound=bound, samples=samples, uncertainty=uncertainty,
            num_posterior_draws=num_posterior_draws, seed=seed,
        )  # fmt: skip

    @property
    def chain_config(self) -> dict[str, Any]:
        """The trained chain's configuration, ``chain.describe()``."""
        return self.chain.describe()

    def __repr__(self) -> str:
        bayes = f", Bayesian over {len(self.chain.weight_sites)} parameters" if self.bayesian else ""
        return (
            f"DiffusionFitResult({self.state.step} steps, objective={self.state.config['objective']!r}{bayes}, "
            f"final loss={final_loss(self.losses)}; seed={self.seed}; wall_time={self.wall_time:.1f} s)"
        )


@dataclass(frozen=True, repr=False)
class EnsembleFit:
    """A deep ensemble of diffusion chains, from :func:`~probgen.infer.diffusion.fit_ensemble`.

    ``M`` point-estimate chains of one architecture, each initialised and trained from its own seed;
    the read-outs under weight uncertainty (:func:`~probgen.infer.diffusion.evaluate_bound` with
    draws, :func:`~probgen.infer.diffusion.sample_uncertainty`, ...) take it where they take a Bayesian
    fit, with the members as the weight draws ([1]).

    :ivar tuple members: the :class:`DiffusionFitResult` of every member.
    :ivar tuple seeds: each member's seed (derived from :attr:`seed`; it seeds the member's
        initialisation and its training run).
    :ivar int seed: the ensemble's seed.
    :ivar float wall_time: seconds the whole ensemble took.

    References: [1] B. Lakshminarayanan, A. Pritzel, C. Blundell (2017), "Simple and Scalable Predictive
    Uncertainty Estimation using Deep Ensembles", NeurIPS.
    """

    members: tuple[DiffusionFitResult, ...]
    seeds: tuple[int, ...]
    seed: int
    wall_time: float

    @property
    def num_members(self) -> int:
        """``M``."""
        return len(self.members)

    @property
    def chains(self) -> tuple[DiffusionChain, ...]:
        """The members' trained chains."""
        return tuple(member.chain for member in self.members)

    @property
    def losses(self) -> Tensor:
        """Every member's training losses, ``(M, num_steps)``."""
        return torch.stack([member.losses for member in self.members])

    @property
    def chain_config(self) -> dict[str, Any]:
        """The members' chain configuration (they share it)."""
        return self.members[0].chain.describe()

    def stacked_parameters(self) -> dict[str, Tensor]:
        """Every parameter and buffer of the members' nets, by path, stacked ``(M, *shape)`` (detached)."""
        nets = [chain.net for chain in self.chains]
        out = {}
        for name, _ in nets[0].named_parameters():
            out[name] = torch.stack([net.get_parameter(name).detach() for net in nets])
        for name, _ in nets[0].named_buffers():
            out[name] = torch.stack([net.get_buffer(name).detach() for net in nets])
        return out

    def to_arviz(
        self,
        *,
        bound: BayesianBoundResult | None = None,
        uncertainty: SampleUncertainty | PredictiveUncertainty | MutualInformation | None = None,
    ) -> Any:
        """The ensemble as an ``arviz.InferenceData``: the members' parameters as one chain of ``M`` draws
        (``posterior``), their losses, and the read-outs if given; see
        :func:`probgen.infer.arviz.diffusion_to_arviz`."""
        from probgen.infer.arviz import diffusion_to_arviz  # the converter imports this module

        return diffusion_to_arviz(fit=self, bound=bound, uncertainty=uncertainty)

    def __repr__(self) -> str:
        return (
            f"EnsembleFit({self.num_members} members x {self.members[0].state.step} steps; seed={self.seed}; "
            f"wall_time={self.wall_time:.1f} s)"
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
    :ivar condition: a conditional chain's condition of each data point (labels ``(N,)`` or
        covariates ``(N, cond_dim)``); ``None`` for an unconditional chain.
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
    condition: Tensor | None = None

    def to_arviz(self) -> Any:
        """The bound as an ``arviz.InferenceData``; see :func:`probgen.infer.arviz.diffusion_to_arviz`."""
        from probgen.infer.arviz import diffusion_to_arviz  # the converter imports this module

        return diffusion_to_arviz(bound=self)

    def __repr__(self) -> str:
        return (
            f"BoundResult({self.nats:.4g} +- {self.nats_se:.2g} nats = {self.bits_per_dim:.4g} bits/dim on "
            f"{self.per_example.shape[0]} points; seed={self.seed}; wall_time={self.wall_time:.1f} s)"
        )


@dataclass(frozen=True, repr=False)
class BayesianBoundResult:
    """The bound under weight uncertainty, from :func:`~probgen.infer.diffusion.evaluate_bound` with draws.

    Every data point is scored by the full bound (all ``T`` terms) under each of ``S`` weight draws
    (posterior draws of a Bayesian chain, or an ensemble's members), with the same noise draws ``x_t``
    for every weight draw (common random numbers), so that the spread over draws is the weights' own.

    :ivar Tensor per_example: ``-ELBO(x_0^i | w_s)``, in nats, shape ``(S, N)``.
    :ivar Tensor per_example_mean: its mean over the draws, ``(N,)``: the bound's expectation under ``q(w)``.
    :ivar Tensor epistemic_std: the standard deviation over the draws of each data point's bound, ``(N,)``
        (``ddof=1``; ``nan`` when ``S = 1``): how much the weights' uncertainty moves it.
    :ivar float nats: the mean of ``per_example`` over draws and data points, in nats per data point,
        ``E_q(w)[-ELBO(x_0 | w)]`` (without the KL of the weights, see :attr:`weight_kl`).
    :ivar float nats_se: its standard error: ``sqrt(se_points^2 + se_draws^2)``, the spread of
        ``per_example_mean`` over data points and of the per-draw means over draws, each over the root of
        its count (the draws are shared by every data point, so both count).
    :ivar float bits_per_dim: ``nats / (D log 2)``.
    :ivar float bits_per_dim_se: its standard error.
    :ivar Tensor per_draw_terms: the mean over data points of every term under each draw, ``(S, T + 1)``,
        columns as in :attr:`BoundResult.terms`.
    :ivar weight_kl: ``KL(q(w) || p(w))`` in nats for a Bayesian chain (the whole data set's share; the
        training ELBO per point adds ``weight_kl / N_train``); ``None`` for an ensemble.
    :ivar str source: ``"posterior"`` or ``"ensemble"``.
    :ivar Tensor data: the data points scored, ``(N, *event_shape)``.
    :ivar int num_dims: ``D``.
    :ivar int seed: the seed of the weight and noise draws.
    :ivar float wall_time: seconds the evaluation took.
    :ivar dict chain_config: the scored chain's configuration, ``DiffusionChain.describe()``.
    :ivar condition: a conditional chain's condition of each data point; ``None`` for an unconditional chain.
    """

    per_example: Tensor
    per_example_mean: Tensor
    epistemic_std: Tensor
    nats: float
    nats_se: float
    bits_per_dim: float
    bits_per_dim_se: float
    per_draw_terms: Tensor
    weight_kl: float | None
    source: str
    data: Tensor
    num_dims: int
    seed: int
    wall_time: float
    chain_config: dict[str, Any]
    condition: Tensor | None = None

    @property
    def num_posterior_draws(self) -> int:
        """``S``."""
        return int(self.per_example.shape[0])

    @property
    def per_example_bits_per_dim(self) -> Tensor:
        """:attr:`per_example` in bits per dimension, ``(S, N)``."""
        return self.per_example / (self.num_dims * math.log(2.0))

    @property
    def epistemic_std_bits_per_dim(self) -> Tensor:
        """:attr:`epistemic_std` in bits per dimension, ``(N,)``."""
        return self.epistemic_std / (self.num_dims * math.log(2.0))

    def to_arviz(self) -> Any:
        """The bound draws as an ``arviz.InferenceData``; see :func:`probgen.infer.arviz.diffusion_to_arviz`."""
        from probgen.infer.arviz import diffusion_to_arviz  # the converter imports this module

        return diffusion_to_arviz(bound=self)

    def __repr__(self) -> str:
        return (
            f"BayesianBoundResult({self.nats:.4g} +- {self.nats_se:.2g} nats = {self.bits_per_dim:.4g} bits/dim on "
            f"{self.per_example.shape[1]} points x {self.num_posterior_draws} {self.source} draws; "
            f"mean epistemic sd {float(self.epistemic_std.mean()):.3g} nats; seed={self.seed})"
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
    :ivar condition: a conditional chain's condition of each draw (labels ``(draw,)`` or covariates
        ``(draw, cond_dim)``, the same in every chain); for the conditional sampler, of each observed
        row ``(N, ...)``; ``None`` for an unconditional chain.
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
    condition: Tensor | None = None

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


# ------------------------------------------------------------------------------ uncertainty read-outs
@dataclass(frozen=True, repr=False)
class SampleUncertainty:
    """Generated samples under ``S`` weight draws from one shared starting noise, and their variances.

    From :func:`~probgen.infer.diffusion.sample_uncertainty`. Each of the ``M`` samples starts from its
    own ``x_T``, shared by every weight draw. Deterministic DDIM (``eta = 0``) maps ``(w, x_T)`` to one
    ``x_0``, so its spread over the draws is the weights' alone; the ancestral sampler, run ``K`` times
    per draw from the same ``x_T``, adds the sampler's own noise.

    :ivar Tensor x_T: the starting noise, ``(M, *event_shape)``.
    :ivar Tensor ddim_samples: DDIM's ``x_0`` under each draw, ``(S, M, *event_shape)``.
    :ivar Tensor ancestral_samples: ancestral ``x_0``, ``(S, K, M, *event_shape)``.
    :ivar Tensor epistemic_var: ``Var_s`` of ``ddim_samples`` (``ddof=1``), ``(M, *event_shape)``.
    :ivar Tensor aleatoric_var: ``mean_s Var_k`` of ``ancestral_samples`` (``ddof=1``), ``(M, *event_shape)``:
        the sampler's spread given the weights and ``x_T``.
    :ivar Tensor total_var: ``epistemic_var + aleatoric_var``. The two come from different samplers, so
        this is their sum, not a variance of one set of samples (for that, see :class:`PredictiveUncertainty`).
    :ivar condition: the condition of each sample of a conditional chain, else ``None``.
    :ivar str source: ``"posterior"`` or ``"ensemble"``.
    :ivar Tensor steps: the steps DDIM visited, ``T`` down to ``0``.
    :ivar int seed: the seed of the weight draws, ``x_T`` and the sampler noise.
    :ivar float wall_time: seconds it took.
    :ivar dict chain_config: the chain's configuration.
    """

    x_T: Tensor
    ddim_samples: Tensor
    ancestral_samples: Tensor
    epistemic_var: Tensor
    aleatoric_var: Tensor
    total_var: Tensor
    condition: Tensor | None
    source: str
    steps: Tensor
    seed: int
    wall_time: float
    chain_config: dict[str, Any]

    @property
    def num_posterior_draws(self) -> int:
        """``S``."""
        return int(self.ddim_samples.shape[0])

    @property
    def epistemic_score(self) -> Tensor:
        """One number per sample, ``epistemic_var`` summed over the data dimensions, ``(M,)``: what
        :func:`~probgen.infer.diffusion.filter_by_uncertainty` ranks by."""
        return self.epistemic_var.reshape(self.epistemic_var.shape[0], -1).sum(dim=1)

    def to_arviz(self) -> Any:
        """These samples and variances as an ``arviz.InferenceData``; see
        :func:`probgen.infer.arviz.diffusion_to_arviz`."""
        from probgen.infer.arviz import diffusion_to_arviz  # the converter imports this module

        return diffusion_to_arviz(uncertainty=self)

    def __repr__(self) -> str:
        return (
            f"SampleUncertainty({self.x_T.shape[0]} samples x {self.num_posterior_draws} {self.source} draws x "
            f"{self.ancestral_samples.shape[1]} ancestral runs; mean epistemic var "
            f"{float(self.epistemic_var.mean()):.3g}, aleatoric {float(self.aleatoric_var.mean()):.3g}; seed={self.seed})"
        )


@dataclass(frozen=True, repr=False)
class PredictiveUncertainty:
    """The predictive ``p(x_0 | c)`` under weight uncertainty at given conditions, by the law of total variance.

    From :func:`~probgen.infer.diffusion.predictive_uncertainty`: ``K`` independent ancestral samples
    (each from its own ``x_T``) under each of ``S`` weight draws, at each of ``N`` conditions. With
    ``y_sk`` the samples at one condition, all variances with ``ddof=1``:

    * ``aleatoric_var = mean_s Var_k y_sk``, whose expectation is ``E_w Var(y | w, c)``;
    * ``epistemic_var = Var_s mean_k y_sk``, whose expectation is ``Var_w E[y | w, c] + E_w Var(y | w, c) / K``
      (the means over ``K`` samples keep some of the aleatoric noise);
    * ``total_var = Var_{s,k} y_sk``, over all ``S K`` samples.

    ``Var(y | c) = E_w Var(y | w, c) + Var_w E[y | w, c]``, and for these estimators exactly
    ``(S K - 1) total_var = S (K - 1) aleatoric_var + K (S - 1) epistemic_var``, so ``epistemic_var +
    aleatoric_var`` equals ``total_var`` up to factors ``1 + O(1/S + 1/K)``.

    :ivar Tensor samples: ``(S, K, N, *event_shape)``.
    :ivar Tensor mean: the predictive mean at each condition, ``(N, *event_shape)``.
    :ivar Tensor aleatoric_var: ``(N, *event_shape)``, as above.
    :ivar Tensor epistemic_var: ``(N, *event_shape)``, as above.
    :ivar Tensor total_var: ``(N, *event_shape)``, as above.
    :ivar condition: the ``N`` conditions (``None`` for an unconditional chain, ``N = 1``).
    :ivar str source: ``"posterior"`` or ``"ensemble"``.
    :ivar int seed: the seed.
    :ivar float wall_time: seconds it took.
    :ivar dict chain_config: the chain's configuration.
    """

    samples: Tensor
    mean: Tensor
    aleatoric_var: Tensor
    epistemic_var: Tensor
    total_var: Tensor
    condition: Tensor | None
    source: str
    seed: int
    wall_time: float
    chain_config: dict[str, Any]

    @property
    def num_posterior_draws(self) -> int:
        """``S``."""
        return int(self.samples.shape[0])

    def to_arviz(self) -> Any:
        """These samples and variances as an ``arviz.InferenceData``; see
        :func:`probgen.infer.arviz.diffusion_to_arviz`."""
        from probgen.infer.arviz import diffusion_to_arviz  # the converter imports this module

        return diffusion_to_arviz(uncertainty=self)

    def __repr__(self) -> str:
        S, K, N = self.samples.shape[:3]
        return (
            f"PredictiveUncertainty({N} conditions x {S} {self.source} draws x {K} samples; mean total var "
            f"{float(self.total_var.mean()):.3g} = aleatoric {float(self.aleatoric_var.mean()):.3g} + epistemic "
            f"{float(self.epistemic_var.mean()):.3g}; seed={self.seed})"
        )


@dataclass(frozen=True, repr=False)
class MutualInformation:
    """Samples and the weights' disagreement on their reverse steps, from
    :func:`~probgen.infer.diffusion.mutual_information` (the epistemic score of DECU, [1]).

    At each step ``t`` of a sample's path every weight draw ``w_s`` proposes
    ``p_s(x_{t-1} | x_t) = N(mu_s, sigma_t^2 I)`` at the shared ``x_t``. The information the next state
    carries about the weights, ``I(x_{t-1}; w | x_t)``, is the entropy of the equal mixture of the ``S``
    Gaussians less ``D/2 log(2 pi e sigma_t^2)``; bounding the mixture's entropy by that of a Gaussian with
    its covariance (diagonal part) gives the closed form
    ``0.5 sum_d log(1 + Var_s mu_{s,d} / sigma_t^2)`` (``ddof=0``: the mixture's own variance), an upper
    bound on the mutual information that is exact as the means agree. The path follows the same mixture:
    each step moves with the proposal of a draw picked at random.

    :ivar Tensor samples: the generated ``x_0``, ``(M, *event_shape)``.
    :ivar Tensor per_step: the estimate at each step, ``(T, M)``, rows for ``steps``; in nats.
    :ivar Tensor score: ``per_step`` averaged over the steps, ``(M,)``, in nats per step.
    :ivar Tensor steps: the steps ``t``, ``T`` down to ``1``.
    :ivar condition: the condition of each sample of a conditional chain, else ``None``.
    :ivar str source: ``"posterior"`` or ``"ensemble"``.
    :ivar int num_posterior_draws: ``S``.
    :ivar int seed: the seed.
    :ivar float wall_time: seconds it took.
    :ivar dict chain_config: the chain's configuration.

    References: [1] L. Berry, A. Brando, D. Meger (2024), "Shedding Light on Large Generative Networks:
    Estimating Epistemic Uncertainty in Diffusion Models", UAI.
    """

    samples: Tensor
    per_step: Tensor
    score: Tensor
    steps: Tensor
    condition: Tensor | None
    source: str
    num_posterior_draws: int
    seed: int
    wall_time: float
    chain_config: dict[str, Any]

    def to_arviz(self) -> Any:
        """These samples and scores as an ``arviz.InferenceData``; see
        :func:`probgen.infer.arviz.diffusion_to_arviz`."""
        from probgen.infer.arviz import diffusion_to_arviz  # the converter imports this module

        return diffusion_to_arviz(uncertainty=self)

    def __repr__(self) -> str:
        return (
            f"MutualInformation({self.samples.shape[0]} samples x {self.num_posterior_draws} {self.source} draws; "
            f"mean score {float(self.score.mean()):.3g} nats per step; seed={self.seed})"
        )
