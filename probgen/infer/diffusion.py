"""Training, bound evaluation and sampling for :class:`~probgen.models.diffusion.DiffusionChain`.

Running all ``T`` sites of the Pyro program per training step is too slow, so :func:`fit_diffusion`
optimises an unbiased estimator of the same ELBO (:func:`estimate_bound`): the prior term ``L_T``
exactly, plus one step ``t`` per data point drawn uniformly, or by importance sampling with the
correct ``1 / (T p(t))`` weights, whose closed-form term is scaled up. Its expectation is the
negative ELBO that :class:`pyro.infer.TraceMeanField_ELBO` computes on ``chain.model`` and
``chain.guide`` (tested). The simplified ``epsilon``-MSE of Ho et al. is offered as
``objective="eps_mse"``: a *reweighted* objective that trains good samplers but is not the ELBO.

:func:`evaluate_bound` computes the full bound, every term for every test point, in nats and bits
per dimension with standard errors over examples and the per-``t`` breakdown. Samplers:
:func:`sample_ancestral` runs the Pyro model, :func:`sample_ddim` the DDIM update with ``eta`` and
fewer steps, and :func:`sample_conditional` conditions the model on known coordinates.

References:

[1] J. Ho, A. Jain, P. Abbeel (2020), "Denoising Diffusion Probabilistic Models", NeurIPS.
[2] A. Nichol, P. Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models", ICML.
[3] J. Song, C. Meng, S. Ermon (2021), "Denoising Diffusion Implicit Models", ICLR.
[4] D. P. Kingma, T. Salimans, B. Poole, J. Ho (2021), "Variational Diffusion Models", NeurIPS.
[5] G. J. Szekely, M. L. Rizzo (2013), "Energy statistics: A class of statistics based on distances",
    J. Statist. Plann. Inference 143(8).
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any, Literal, NamedTuple, cast, get_args

import pyro.poutine as poutine
import torch
from torch import Tensor

from probgen._validate import (
    as_tensor,
    check_choice,
    check_positive_float,
    check_positive_int,
    check_probability,
    check_seed,
)
from probgen.infer._progress import make_progress_bar, progress_enabled
from probgen.models.diffusion.chain import DiffusionChain, InpaintMessenger

__all__ = [
    "OBJECTIVES",
    "TIMESTEP_SAMPLINGS",
    "BoundEstimate",
    "BoundResult",
    "DiffusionFitResult",
    "DiffusionSamples",
    "DiffusionTrainState",
    "Objective",
    "TimestepSampler",
    "TimestepSampling",
    "ddim_step",
    "energy_distance",
    "estimate_bound",
    "evaluate_bound",
    "fit_diffusion",
    "gaussian_nll",
    "load_train_state",
    "sample_ancestral",
    "sample_conditional",
    "sample_ddim",
]

Objective = Literal["elbo", "eps_mse"]
#: Training objectives of :func:`fit_diffusion`, in the order of :data:`Objective`.
OBJECTIVES: tuple[Objective, ...] = get_args(Objective)
TimestepSampling = Literal["uniform", "importance"]
#: How :func:`fit_diffusion` draws steps for the ELBO estimator, in the order of :data:`TimestepSampling`.
TIMESTEP_SAMPLINGS: tuple[TimestepSampling, ...] = get_args(TimestepSampling)

_LN2 = math.log(2.0)


def _check_chain(chain: Any) -> DiffusionChain:
    if not isinstance(chain, DiffusionChain):
        raise TypeError(f"chain must be a DiffusionChain, got {type(chain).__name__}.")
    return chain


def _check_data(chain: DiffusionChain, data: Any, name: str = "data") -> Tensor:
    data = as_tensor(name, data, dtype=chain._dtype())
    if tuple(data.shape[1:]) != tuple(chain.event_shape):
        raise ValueError(
            f"{name} must have shape (N, {', '.join(map(str, chain.event_shape))}) to match the chain's "
            f"event_shape, got {tuple(data.shape)}."
        )
    return data


# ---------------------------------------------------------------------------------------------- estimator
class TimestepSampler:
    """Draws steps ``t`` for the ELBO estimator, uniformly or by importance sampling ([2] Section 3.3).

    With ``"importance"`` the sampler keeps the last ``history`` values of each term ``L_{t-1}`` and,
    once every step has that many, draws ``t`` with ``p(t) ∝ sqrt(E[L_{t-1}^2])``, mixed with a
    ``uniform_prob`` share of the uniform distribution so that every ``p(t) > 0``. Before that (and
    always with ``"uniform"``) ``p(t) = 1/T``. The estimator weights each draw by ``1 / (T p(t))``, so
    it stays unbiased whatever ``p`` is.

    :param int num_steps: the chain's ``T``.
    :param str method: ``"uniform"`` or ``"importance"``.
    :param int history: terms remembered per step.
    :param float uniform_prob: the uniform share of the mixture.

    Example::

        >>> sampler = TimestepSampler(4, "importance", history=1)
        >>> sampler.update(torch.tensor([1, 2, 3, 4]), torch.tensor([1.0, 1.0, 1.0, 3.0]))
        >>> [round(float(p), 3) for p in sampler.probs()]
        [0.167, 0.167, 0.167, 0.5]
    """

    def __init__(
        self, num_steps: int, method: TimestepSampling = "uniform", *, history: int = 10, uniform_prob: float = 0.001
    ) -> None:
        self.num_steps = check_positive_int("num_steps", num_steps)
        self.method: TimestepSampling = check_choice("timestep_sampling", method, TIMESTEP_SAMPLINGS)
        self.history = check_positive_int("history", history)
        self.uniform_prob = check_probability("uniform_prob", uniform_prob)
        self.squares = torch.zeros(self.num_steps, self.history, dtype=torch.float64)
        self.counts = torch.zeros(self.num_steps, dtype=torch.long)

    def probs(self) -> Tensor:
        """The current ``p(t)`` for ``t = 1..T`` (float64, shape ``(T,)``)."""
        uniform = torch.full((self.num_steps,), 1.0 / self.num_steps, dtype=torch.float64)
        if self.method == "uniform" or bool((self.counts < self.history).any()):
            return uniform
        # [2] Section 3.3: p_t ∝ sqrt(E[L_t^2]), estimated from the last `history` values of each term
        weights = self.squares.mean(dim=1).sqrt()
        probs = weights / weights.sum()
        return (1.0 - self.uniform_prob) * probs + self.uniform_prob * uniform

    def sample(self, size: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``size`` steps; return them (``torch.long``, in ``1..T``) and their weights ``1/(T p(t))``."""
        probs = self.probs()
        t = torch.multinomial(probs, size, replacement=True, generator=generator) + 1
        return t, 1.0 / (self.num_steps * probs[t - 1])

    def update(self, t: Tensor, terms: Tensor) -> None:
        """Record the (unweighted) terms ``L_{t-1}`` observed at steps ``t``."""
        if self.method == "uniform":
            return
        # vectorised ring buffer: the k-th occurrence of a step in this batch goes to slot (count + k) % history,
        # and only the last `history` occurrences of each step are kept, as a sequential loop would leave them
        index = t.detach().long() - 1
        order = torch.argsort(index, stable=True)
        index, values = index[order], terms.detach().double()[order]
        in_batch = torch.bincount(index, minlength=self.num_steps)
        rank = torch.arange(index.shape[0]) - (torch.cumsum(in_batch, 0) - in_batch)[index]
        keep = rank >= in_batch[index] - self.history
        slot = (self.counts[index] + rank) % self.history
        self.squares[index[keep], slot[keep]] = values[keep] ** 2
        self.counts += in_batch

    def state_dict(self) -> dict[str, Any]:
        """The sampler's state, for checkpoints."""
        return {"squares": self.squares.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`."""
        self.squares = state["squares"].clone()
        self.counts = state["counts"].clone()


class BoundEstimate(NamedTuple):
    """One draw of the unbiased estimator of the negative ELBO, per data point.

    :ivar Tensor loss: ``L_T + L_{t-1} / p(t)`` per data point, in nats; its mean over steps and noise
        is the negative ELBO.
    :ivar Tensor t: the step drawn for each data point.
    :ivar Tensor terms: the unweighted terms ``L_{t-1}`` at those steps.
    """

    loss: Tensor
    t: Tensor
    terms: Tensor


def estimate_bound(
    chain: DiffusionChain,
    x0: Tensor,
    *,
    step_probs: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> BoundEstimate:
    """An unbiased one-step estimate of the negative ELBO of each data point ([1] eq. 5, [2] eq. 10-11).

    ``-ELBO(x_0) = L_T + sum_{t=1}^T L_{t-1}``. The estimator keeps ``L_T`` exact (it needs no network)
    and replaces the sum by ``L_{t-1} / p(t)`` for one ``t ~ p`` and one ``x_t ~ q(x_t | x_0)``: with the
    uniform ``p(t) = 1/T`` that is ``T L_{t-1}``. Differentiable in the network's parameters.

    :param DiffusionChain chain: the chain.
    :param Tensor x0: data ``(N, *event_shape)``.
    :param step_probs: ``p(t)`` for ``t = 1..T``; uniform if ``None``.
    :param generator: the torch generator for ``t`` and the noise; torch's global one if ``None``.
    :returns: a :class:`BoundEstimate`.

    Example::

        >>> from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
        >>> chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("linear", 20), event_shape=(2,))
        >>> estimate_bound(chain, torch.randn(6, 2)).loss.shape
        torch.Size([6])
    """
    chain = _check_chain(chain)
    x0 = chain._check_x("x0", x0)
    num_steps = chain.num_steps
    probs = torch.full((num_steps,), 1.0 / num_steps, dtype=torch.float64) if step_probs is None else step_probs
    t = torch.multinomial(probs, x0.shape[0], replacement=True, generator=generator) + 1
    weights = (1.0 / probs[t - 1]).to(x0.dtype)
    noise = torch.randn(x0.shape, dtype=x0.dtype, generator=generator)
    terms = chain.vlb_term(x0, t, noise)
    # L_T exactly plus the importance-weighted term: E_t[L_{t-1} / p(t)] = sum_t L_{t-1}
    return BoundEstimate(loss=chain.prior_kl(x0) + weights * terms, t=t, terms=terms)


def _eps_mse(chain: DiffusionChain, x0: Tensor, generator: torch.Generator) -> Tensor:
    # [1] eq. 14, L_simple: E_{t, eps} ||eps - eps_theta(x_t, t)||^2, mean over dimensions
    t = torch.randint(1, chain.num_steps + 1, (x0.shape[0],), generator=generator)
    noise = torch.randn(x0.shape, dtype=x0.dtype, generator=generator)
    out = chain.p_mean_variance(chain.q_sample(x0, t, noise), t)
    return (noise - out.pred_eps).pow(2).flatten(1).mean(1)


# ---------------------------------------------------------------------------------------------- training
class DiffusionTrainState(NamedTuple):
    """Everything :func:`fit_diffusion` needs to continue a run exactly (saved by ``torch.save``).

    :ivar int step: the number of optimisation steps taken so far.
    :ivar dict net_state: the network's ``state_dict``.
    :ivar dict optimizer_state: Adam's ``state_dict``.
    :ivar ema_state: the EMA network's ``state_dict``, or ``None`` without EMA.
    :ivar dict sampler_state: the :class:`TimestepSampler`'s state.
    :ivar Tensor rng_state: the state of the torch generator that draws minibatches, steps and noise.
    :ivar dict config: the run's options (``seed``, ``objective``, ``timestep_sampling``, ``lr``,
        ``batch_size``, ``ema_decay``, ``grad_clip``).
    """

    step: int
    net_state: dict[str, Tensor]
    optimizer_state: dict[str, Any]
    ema_state: dict[str, Tensor] | None
    sampler_state: dict[str, Any]
    rng_state: Tensor
    config: dict[str, Any]


class DiffusionFitResult(NamedTuple):
    """The result of :func:`fit_diffusion`.

    :ivar DiffusionChain chain: a new chain holding the trained network (the EMA network when
        ``ema_decay`` is set); the chain passed in is left untouched.
    :ivar Tensor losses: the minibatch objective at every step of this call, in nats per data point
        for ``"elbo"`` (an unbiased estimate of the negative ELBO), mean squared error for ``"eps_mse"``.
    :ivar int seed: the seed of the run (the original seed when resumed).
    :ivar DiffusionTrainState state: the state after the last step; pass it as ``resume_from``.
    """

    chain: DiffusionChain
    losses: Tensor
    seed: int
    state: DiffusionTrainState


def load_train_state(path: str | os.PathLike[str]) -> DiffusionTrainState:
    """Load a :class:`DiffusionTrainState` written by :func:`fit_diffusion`'s ``checkpoint``."""
    raw = torch.load(Path(path), weights_only=True)
    return DiffusionTrainState(**raw)


def _save_state(state: DiffusionTrainState, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state._asdict(), tmp)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written checkpoint


def fit_diffusion(
    chain: DiffusionChain,
    data: Tensor,
    *,
    num_steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int | None = None,
    objective: Objective = "elbo",
    timestep_sampling: TimestepSampling = "uniform",
    ema_decay: float | None = None,
    grad_clip: float | None = 1.0,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume_from: DiffusionTrainState | str | os.PathLike[str] | None = None,
    progress_bar: bool = True,
) -> DiffusionFitResult:
    """Train a copy of ``chain``'s network by Adam on minibatches of ``data``.

    ``objective="elbo"`` minimises :func:`estimate_bound`, an unbiased estimate of the negative ELBO
    (the bound that :func:`evaluate_bound` reports); ``timestep_sampling="importance"`` draws steps
    with ``p(t) ∝ sqrt(E[L_{t-1}^2])`` ([2] Section 3.3) and weights them by ``1 / (T p(t))``.
    ``objective="eps_mse"`` minimises the simplified loss ``E ||eps - eps_theta||^2`` ([1] eq. 14), a
    reweighted objective, not the ELBO. All randomness (minibatches, steps, noise) comes from one
    torch generator seeded by ``seed``, whose state is checkpointed, so a resumed run continues
    exactly: ``N`` steps in one call give the same losses as ``k`` steps and ``N - k`` resumed ones.

    :param DiffusionChain chain: the chain to train; its network is copied, never changed.
    :param Tensor data: training data ``(N, *event_shape)``.
    :param int num_steps: optimisation steps to take in this call (after ``resume_from``'s).
    :param int batch_size: data points per minibatch (drawn with replacement).
    :param float lr: Adam's learning rate.
    :param seed: the run's seed; ``None`` picks one and records it. Ignored when resuming.
    :param str objective: ``"elbo"`` or ``"eps_mse"``.
    :param str timestep_sampling: ``"uniform"`` or ``"importance"`` (``"elbo"`` only).
    :param ema_decay: keep an exponential moving average of the weights with this decay (e.g.
        0.999) and return it as the trained network; ``None`` for none.
    :param grad_clip: clip the gradient's global norm at this value; ``None`` for no clipping.
    :param checkpoint: a file to write the :class:`DiffusionTrainState` to (at the end, and every
        ``checkpoint_every`` steps if given).
    :param int checkpoint_every: steps between checkpoints.
    :param resume_from: a :class:`DiffusionTrainState` or a checkpoint file to continue from.
    :param bool progress_bar: show a tqdm bar (never when the ``CI`` variable is set).
    :returns: a :class:`DiffusionFitResult`.
    :raises ValueError: for bad sizes or options, data of the wrong shape, or a resumed state whose
        objective or step sampling differs.

    Example::

        >>> from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
        >>> chain = DiffusionChain(MLPDenoiser(2, hidden_dim=16), get_schedule("linear", 20), event_shape=(2,))
        >>> result = fit_diffusion(chain, torch.randn(64, 2), num_steps=5, batch_size=16, seed=0, progress_bar=False)
        >>> result.losses.shape, result.seed, result.state.step
        (torch.Size([5]), 0, 5)
    """
    chain = _check_chain(chain)
    data = _check_data(chain, data)
    num_steps = check_positive_int("num_steps", num_steps)
    batch_size = check_positive_int("batch_size", batch_size)
    lr = check_positive_float("lr", lr)
    objective = check_choice("objective", objective, OBJECTIVES)
    timestep_sampling = check_choice("timestep_sampling", timestep_sampling, TIMESTEP_SAMPLINGS)
    if objective == "eps_mse" and timestep_sampling != "uniform":
        raise ValueError(
            f"timestep_sampling={timestep_sampling!r} weights the ELBO's terms and needs objective='elbo'; "
            "eps_mse draws steps uniformly."
        )
    if ema_decay is not None:
        ema_decay = check_probability("ema_decay", ema_decay)
    if grad_clip is not None:
        grad_clip = check_positive_float("grad_clip", grad_clip)
    if checkpoint_every is not None:
        checkpoint_every = check_positive_int("checkpoint_every", checkpoint_every)

    net = copy.deepcopy(chain.net)
    trained = chain.replace_net(net)
    ema = copy.deepcopy(net).requires_grad_(False) if ema_decay is not None else None
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    sampler = TimestepSampler(chain.num_steps, timestep_sampling)
    generator = torch.Generator()
    step = 0
    if resume_from is not None:
        state = resume_from if isinstance(resume_from, DiffusionTrainState) else load_train_state(resume_from)
        for key, value in (("objective", objective), ("timestep_sampling", timestep_sampling)):
            if state.config[key] != value:
                raise ValueError(
                    f"resume_from was trained with {key}={state.config[key]!r}, got {key}={value!r}; "
                    "resume with the same options."
                )
        if (state.ema_state is None) != (ema is None):
            raise ValueError("resume_from and this call disagree on ema_decay; resume with the same options.")
        seed = int(state.config["seed"])
        net.load_state_dict(state.net_state)
        optimizer.load_state_dict(state.optimizer_state)
        if ema is not None and state.ema_state is not None:
            ema.load_state_dict(state.ema_state)
        sampler.load_state_dict(state.sampler_state)
        generator.set_state(state.rng_state)
        step = int(state.step)
    else:
        seed = check_seed(seed)
        generator.manual_seed(seed)
    config = {
        "seed": seed,
        "objective": objective,
        "timestep_sampling": timestep_sampling,
        "lr": lr,
        "batch_size": batch_size,
        "ema_decay": ema_decay,
        "grad_clip": grad_clip,
    }

    def current_state() -> DiffusionTrainState:
        return DiffusionTrainState(
            step=step,
            net_state=copy.deepcopy(net.state_dict()),
            optimizer_state=copy.deepcopy(optimizer.state_dict()),
            ema_state=copy.deepcopy(ema.state_dict()) if ema is not None else None,
            sampler_state=sampler.state_dict(),
            rng_state=generator.get_state(),
            config=dict(config),
        )

    losses = torch.empty(num_steps, dtype=torch.float64)
    net.train()
    with make_progress_bar(num_steps, desc="fit_diffusion", enabled=progress_enabled(progress_bar)) as bar:
        for i in range(num_steps):
            index = torch.randint(data.shape[0], (batch_size,), generator=generator)
            x0 = data[index]
            if objective == "elbo":
                estimate = estimate_bound(trained, x0, step_probs=sampler.probs(), generator=generator)
                loss = estimate.loss.mean()
                sampler.update(estimate.t, estimate.terms)
            else:
                loss = _eps_mse(trained, x0, generator).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
            optimizer.step()
            if ema is not None and ema_decay is not None:
                with torch.no_grad():
                    for avg, param in zip(ema.parameters(), net.parameters(), strict=True):
                        avg.lerp_(param, 1.0 - ema_decay)
            step += 1
            losses[i] = loss.detach()
            bar.update(1)
            if i % 50 == 0:
                bar.set_postfix(loss=f"{float(losses[i]):.4g}")
            if checkpoint is not None and checkpoint_every is not None and step % checkpoint_every == 0:
                _save_state(current_state(), Path(checkpoint))
    net.eval()
    state = current_state()
    if checkpoint is not None:
        _save_state(state, Path(checkpoint))
    final = trained if ema is None else chain.replace_net(ema.eval())
    return DiffusionFitResult(chain=final, losses=losses, seed=seed, state=state)


# ---------------------------------------------------------------------------------------------- evaluation
class BoundResult(NamedTuple):
    """The full variational bound on a data set, from :func:`evaluate_bound`.

    :ivar float nats: the mean over data points of ``-ELBO(x_0) = L_T + sum_t L_{t-1}``, in nats per
        data point (an upper bound on the negative log-likelihood in expectation).
    :ivar float nats_se: its standard error over data points.
    :ivar float bits_per_dim: ``nats / (D log 2)``, with ``D`` the number of dimensions.
    :ivar float bits_per_dim_se: its standard error.
    :ivar Tensor terms: the mean of each term, shape ``(T + 1,)``: ``terms[0]`` is ``L_0`` (the decoder),
        ``terms[k]`` is ``L_k`` for ``k = 1..T-1``, ``terms[T]`` is ``L_T`` (the prior KL).
    :ivar Tensor terms_se: the standard errors of ``terms``.
    :ivar Tensor per_example: ``-ELBO`` of each data point, shape ``(N,)``.
    :ivar int num_dims: ``D``.
    :ivar int seed: the seed of the noise draws.
    """

    nats: float
    nats_se: float
    bits_per_dim: float
    bits_per_dim_se: float
    terms: Tensor
    terms_se: Tensor
    per_example: Tensor
    num_dims: int
    seed: int


def evaluate_bound(
    chain: DiffusionChain,
    data: Tensor,
    *,
    batch_size: int = 512,
    seed: int | None = None,
    progress_bar: bool = True,
) -> BoundResult:
    """The full bound ``L_T + sum_{t=2}^T L_{t-1} + L_0`` of every data point, all ``T`` terms ([1] eq. 5).

    Each ``L_{t-1}`` (``t >= 2``) is the closed-form KL at one draw ``x_t ~ q(x_t | x_0)``, so the
    per-example value is an unbiased estimate of that example's negative ELBO, and the standard
    error over examples covers both the spread of the data and that Monte Carlo noise. With a
    :class:`~probgen.models.diffusion.DiscretizedGaussianDecoder` the bound is on the *discrete*
    negative log-likelihood; with a Gaussian decoder it bounds a differential one (in nats per data
    point, comparable with a density's entropy). Bits per dimension divide by ``D log 2`` with
    ``D = chain.num_dims`` (64 for 8 x 8 digits).

    Works for any chain, whatever objective trained its network.

    :param DiffusionChain chain: the chain to score.
    :param Tensor data: data ``(N, *event_shape)``.
    :param int batch_size: data points per network call.
    :param seed: seed of the noise draws; ``None`` picks one and records it.
    :param bool progress_bar: show a tqdm bar (never when the ``CI`` variable is set).
    :returns: a :class:`BoundResult`.

    References: [1] eq. 5 and Section 4.2 (bits/dim); [4] Section 3 (the same bound in discrete time).

    Example::

        >>> from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
        >>> chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("linear", 10), event_shape=(2,))
        >>> bound = evaluate_bound(chain, torch.randn(30, 2), seed=0, progress_bar=False)
        >>> bound.terms.shape, bound.per_example.shape, bound.num_dims
        (torch.Size([11]), torch.Size([30]), 2)
    """
    chain = _check_chain(chain)
    data = _check_data(chain, data)
    batch_size = check_positive_int("batch_size", batch_size)
    seed = check_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    num_steps = chain.num_steps
    terms = torch.empty(data.shape[0], num_steps + 1, dtype=torch.float64)
    enabled = progress_enabled(progress_bar)
    with torch.no_grad(), make_progress_bar(num_steps, desc="evaluate_bound", enabled=enabled) as bar:
        for t in range(1, num_steps + 1):
            bar.update(1)
            for start in range(0, data.shape[0], batch_size):
                x0 = data[start : start + batch_size]
                noise = torch.randn(x0.shape, dtype=x0.dtype, generator=generator)
                # column t-1 holds L_{t-1}: the decoder term at t = 1, the closed-form KLs after
                terms[start : start + batch_size, t - 1] = chain.vlb_term(x0, t, noise).double()
        for start in range(0, data.shape[0], batch_size):
            terms[start : start + batch_size, num_steps] = chain.prior_kl(data[start : start + batch_size]).double()
    per_example = terms.sum(dim=1)
    n = data.shape[0]
    nats = float(per_example.mean())
    nats_se = float(per_example.std() / math.sqrt(n)) if n > 1 else float("nan")
    scale = 1.0 / (chain.num_dims * _LN2)
    return BoundResult(
        nats=nats,
        nats_se=nats_se,
        bits_per_dim=nats * scale,
        bits_per_dim_se=nats_se * scale,
        terms=terms.mean(dim=0),
        terms_se=terms.std(dim=0) / math.sqrt(n) if n > 1 else torch.full((num_steps + 1,), float("nan")),
        per_example=per_example,
        num_dims=chain.num_dims,
        seed=seed,
    )


# ---------------------------------------------------------------------------------------------- sampling
class DiffusionSamples(NamedTuple):
    """Draws from a sampler.

    :ivar Tensor samples: ``x_0``, shape ``(num_samples, *event_shape)``.
    :ivar trajectory: with ``return_chain=True``, the states along the chain, shape
        ``(len(steps), num_samples, *event_shape)``, where ``trajectory[i]`` is ``x_{steps[i]}``;
        otherwise ``None``.
    :ivar Tensor steps: the steps ``t`` the sampler visited, from ``T`` down to ``0``.
    :ivar int seed: the seed of the draws.
    """

    samples: Tensor
    trajectory: Tensor | None
    steps: Tensor
    seed: int


def _run_model(
    chain: DiffusionChain, num_samples: int, seed: int, return_chain: bool, messenger: InpaintMessenger | None = None
) -> DiffusionSamples:
    with torch.random.fork_rng(devices=[]), torch.no_grad(), poutine.block():
        torch.manual_seed(seed)
        model = chain.model if messenger is None else messenger(chain.model)
        trace = poutine.trace(model).get_trace(num_samples=num_samples)
    steps = torch.arange(chain.num_steps, -1, -1)
    values: dict[str, Tensor] = {
        name: cast(Tensor, site["value"]) for name, site in trace.nodes.items() if site["type"] == "sample"
    }
    samples = values["x_0"]
    trajectory = None
    if return_chain:
        trajectory = torch.stack([values[f"x_{t}"] for t in steps.tolist()])
    return DiffusionSamples(samples=samples, trajectory=trajectory, steps=steps, seed=seed)


def sample_ancestral(
    chain: DiffusionChain, num_samples: int, *, seed: int | None = None, return_chain: bool = False
) -> DiffusionSamples:
    """Ancestral sampling: run the Pyro model ``chain.model`` with nothing observed ([1] Algorithm 2).

    The sampler's sites are blocked from any enclosing Pyro handlers, and torch's global RNG is
    restored afterwards, so the call has no side effects.

    :param DiffusionChain chain: the chain.
    :param int num_samples: the number of draws.
    :param seed: the seed; ``None`` picks one and records it.
    :param bool return_chain: also return every ``x_t``, ``t = T..0``.
    :returns: :class:`DiffusionSamples`.

    Example::

        >>> from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
        >>> chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("linear", 10), event_shape=(2,))
        >>> draws = sample_ancestral(chain, 7, seed=1, return_chain=True)
        >>> draws.samples.shape, draws.trajectory.shape
        (torch.Size([7, 2]), torch.Size([11, 7, 2]))
    """
    chain = _check_chain(chain)
    num_samples = check_positive_int("num_samples", num_samples)
    return _run_model(chain, num_samples, check_seed(seed), return_chain)


def sample_conditional(
    chain: DiffusionChain,
    x_observed: Tensor,
    mask: Tensor,
    *,
    seed: int | None = None,
    return_chain: bool = False,
) -> DiffusionSamples:
    """Generate the unknown coordinates of ``x_0`` given the known ones (``mask`` true), approximately.

    Runs ``chain.model`` under :class:`~probgen.models.diffusion.InpaintMessenger`, which conditions
    each latent site's known coordinates on forward-noised copies of the observation (the
    replacement method). The result agrees with ``x_observed`` where ``mask`` is true. It is an
    approximation of the model's conditional ``p_theta(x_0^unk | x_0^obs)``, exact only when the known
    and unknown coordinates are independent under the model; see the messenger for details.

    :param DiffusionChain chain: the chain.
    :param Tensor x_observed: ``(N, *event_shape)``; one draw per row. Entries outside ``mask`` are ignored.
    :param Tensor mask: boolean, broadcastable to ``x_observed``, true where a coordinate is known.
    :param seed: the seed; ``None`` picks one and records it.
    :param bool return_chain: also return every ``x_t``.
    :returns: :class:`DiffusionSamples`.

    Example::

        >>> from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
        >>> chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("linear", 10), event_shape=(2,))
        >>> x_obs = torch.tensor([[1.5, 0.0]]).expand(5, 2)
        >>> draws = sample_conditional(chain, x_obs, torch.tensor([True, False]), seed=0)
        >>> draws.samples[:, 0].tolist()
        [1.5, 1.5, 1.5, 1.5, 1.5]
    """
    chain = _check_chain(chain)
    x_observed = _check_data(chain, x_observed, "x_observed")
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a boolean tensor, got dtype {mask.dtype}.")
    try:
        mask = mask.expand_as(x_observed)
    except RuntimeError as error:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to x_observed's shape {tuple(x_observed.shape)}."
        ) from error
    messenger = InpaintMessenger(chain, x_observed, mask)
    return _run_model(chain, x_observed.shape[0], check_seed(seed), return_chain, messenger)


def _ddim_steps(num_steps: int, total: int) -> list[int]:
    steps = torch.linspace(1, total, num_steps, dtype=torch.float64).round().long().unique().tolist()
    return [int(s) for s in steps]


def ddim_step(
    chain: DiffusionChain, x_t: Tensor, t: int, t_prev: int, *, eta: float, noise: Tensor | None = None
) -> Tensor:
    """One DDIM update from step ``t`` to an earlier step ``t_prev >= 1`` ([3] eq. 12 and 16).

    ``x_prev = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev - sigma^2) eps_hat + sigma z`` with
    ``sigma^2 = eta^2 (1 - alpha_bar_prev) / (1 - alpha_bar_t) (1 - alpha_bar_t / alpha_bar_prev)``. With
    ``eta = 1`` and ``t_prev = t - 1``, ``sigma^2 = beta~_t`` and the step is the ancestral step of a
    ``"fixed_small"`` chain.
    """
    out = chain.p_mean_variance(x_t, t)
    ab_t = float(chain.schedule.alphas_cumprod[t - 1])
    ab_prev = float(chain.schedule.alphas_cumprod[t_prev - 1])
    # [3] eq. 16: sigma_t(eta)
    sigma2 = eta**2 * (1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev)
    # [3] eq. 12: predicted x_0, direction pointing to x_t, random noise
    x_prev = math.sqrt(ab_prev) * out.pred_x0 + math.sqrt(max(1.0 - ab_prev - sigma2, 0.0)) * out.pred_eps
    if sigma2 > 0:
        x_prev = x_prev + math.sqrt(sigma2) * (torch.randn_like(x_t) if noise is None else noise)
    return x_prev


def sample_ddim(
    chain: DiffusionChain,
    num_samples: int,
    *,
    num_steps: int | None = None,
    eta: float = 0.0,
    seed: int | None = None,
    return_chain: bool = False,
) -> DiffusionSamples:
    """DDIM sampling with ``num_steps`` of the chain's ``T`` steps and stochasticity ``eta`` ([3] Section 4).

    The visited steps are ``round(linspace(1, T, num_steps))`` (``T`` and ``1`` included). Each update is
    :func:`ddim_step`. The last step, from ``x_1`` to ``x_0``, draws from the decoder with mean
    ``x0_hat`` and scale ``eta * sigma_1`` for ``eta > 0`` and returns the decoder's mode at ``eta = 0``.
    So ``eta = 0`` is deterministic DDIM, and ``eta = 1`` with all ``T`` steps is the ancestral
    sampler of a ``"fixed_small"`` chain, in distribution.

    :param DiffusionChain chain: a chain (any objective; the update uses its ``eps`` and ``x_0`` predictions).
    :param int num_samples: the number of draws.
    :param num_steps: steps to visit, ``2 <= num_steps <= T``; ``None`` for all ``T``.
    :param float eta: ``0`` (deterministic) to ``1`` (DDPM-like noise).
    :param seed: the seed; ``None`` picks one and records it.
    :param bool return_chain: also return the visited states.
    :returns: :class:`DiffusionSamples` with ``steps`` the visited steps and ``0``.

    Example::

        >>> from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
        >>> chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("linear", 100), event_shape=(2,))
        >>> draws = sample_ddim(chain, 4, num_steps=10, seed=0)
        >>> draws.samples.shape, draws.steps.tolist()[:3]
        (torch.Size([4, 2]), [100, 89, 78])
    """
    chain = _check_chain(chain)
    num_samples = check_positive_int("num_samples", num_samples)
    total = chain.num_steps
    num_steps = total if num_steps is None else check_positive_int("num_steps", num_steps)
    if not 2 <= num_steps <= total:
        raise ValueError(f"num_steps must lie in [2, {total}] (the chain's T), got {num_steps}.")
    eta = check_positive_float("eta", eta, allow_zero=True)
    seed = check_seed(seed)
    steps = _ddim_steps(num_steps, total)
    states = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        x = torch.randn((num_samples, *chain.event_shape), dtype=chain._dtype())
        states.append(x)
        for t, t_prev in zip(steps[:0:-1], steps[-2::-1], strict=True):
            x = ddim_step(chain, x, t, t_prev, eta=eta)
            states.append(x)
        # the last step x_1 -> x_0 goes through the decoder (mean x0_hat; scale eta * sigma_1)
        out = chain.p_mean_variance(x, 1)
        if eta > 0:
            scale = (eta * (0.5 * out.log_variance).exp()).expand_as(out.mean)
            x = chain.decoder.distribution(out.mean, scale).sample()
        else:
            x = chain.decoder.mode(out.mean)
        states.append(x)
    visited = torch.tensor(steps[::-1] + [0])
    trajectory = torch.stack(states) if return_chain else None
    return DiffusionSamples(samples=x, trajectory=trajectory, steps=visited, seed=seed)


# ---------------------------------------------------------------------------------------------- scores
def energy_distance(x: Tensor, y: Tensor) -> float:
    """The energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` between two samples ([5] eq. 2).

    Uses the unbiased (U-statistic) within-sample means; rows are flattened to vectors. It is zero
    in expectation when the two samples come from the same distribution and positive otherwise.

    :param Tensor x: draws ``(N, ...)``.
    :param Tensor y: draws ``(M, ...)``, the same trailing shape.
    :returns: the estimate (it may be slightly negative for identical distributions).

    Example::

        >>> g = torch.Generator().manual_seed(0)
        >>> a, b = torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g)
        >>> energy_distance(a, b) < 0.02 < energy_distance(a, b + 1.0)
        True
    """
    x = as_tensor("x", x, dtype=torch.float64).flatten(1)
    y = as_tensor("y", y, dtype=torch.float64).flatten(1)
    if x.shape[1] != y.shape[1] or x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(
            "x and y need at least 2 rows each and the same number of columns, "
            f"got {tuple(x.shape)} and {tuple(y.shape)}."
        )
    n, m = x.shape[0], y.shape[0]
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).sum() / (n * (n - 1))
    yy = torch.cdist(y, y).sum() / (m * (m - 1))
    return float(2.0 * xy - xx - yy)


def gaussian_nll(train: Tensor, test: Tensor) -> float:
    """Mean negative log-density (nats per data point) of ``test`` under one Gaussian fitted to ``train``.

    The Gaussian has the training mean and (maximum-likelihood) full covariance. It is the baseline
    a density model of the data should beat.

    :param Tensor train: ``(N, ...)``, flattened to vectors.
    :param Tensor test: ``(M, ...)``, the same trailing shape.

    Example::

        >>> g = torch.Generator().manual_seed(0)
        >>> round(gaussian_nll(torch.randn(20000, 1, generator=g), torch.randn(20000, 1, generator=g)), 2)
        1.42
    """
    train = as_tensor("train", train, dtype=torch.float64).flatten(1)
    test = as_tensor("test", test, dtype=torch.float64).flatten(1)
    mean = train.mean(0)
    cov = torch.atleast_2d(torch.cov(train.T, correction=0))
    normal = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
    return float(-normal.log_prob(test).mean())
