"""The training objectives of a diffusion chain: an unbiased one-step estimator of its ELBO, and eps-MSE.

Running all ``T`` sites of the Pyro program per training step is too slow, so training optimises an
unbiased estimator of the same ELBO (:func:`estimate_bound`): the prior term ``L_T`` exactly, plus one
step ``t`` per data point drawn uniformly, or by importance sampling (:class:`TimestepSampler`) with the
correct ``1 / (T p(t))`` weights, whose closed-form term is scaled up. Its expectation is the negative
ELBO that :class:`pyro.infer.TraceMeanField_ELBO` computes on ``chain.model`` and ``chain.guide``
(tested). The simplified ``epsilon``-MSE of Ho et al. (:func:`eps_mse`) is a *reweighted* objective
that trains good samplers but is not the ELBO.

References:

[1] J. Ho, A. Jain, P. Abbeel (2020), "Denoising Diffusion Probabilistic Models", NeurIPS.
[2] A. Nichol, P. Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models", ICML.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple, get_args

import torch
from torch import Tensor

from probgen._validate import check_choice, check_positive_int, check_probability
from probgen.infer.diffusion._util import check_chain, check_condition
from probgen.models.diffusion.chain import DiffusionChain

__all__ = [
    "OBJECTIVES",
    "TIMESTEP_SAMPLINGS",
    "BayesianLossEstimate",
    "BoundEstimate",
    "Objective",
    "TimestepSampler",
    "TimestepSampling",
    "eps_mse",
    "estimate_bayesian_loss",
    "estimate_bound",
]

Objective = Literal["elbo", "eps_mse"]
#: Training objectives of :func:`~probgen.infer.diffusion.fit_diffusion`, in the order of :data:`Objective`.
OBJECTIVES: tuple[Objective, ...] = get_args(Objective)
TimestepSampling = Literal["uniform", "importance"]
#: How the ELBO estimator draws steps, in the order of :data:`TimestepSampling`.
TIMESTEP_SAMPLINGS: tuple[TimestepSampling, ...] = get_args(TimestepSampling)


class TimestepSampler:
    """Draws steps ``t`` for the ELBO estimator, uniformly or by importance sampling ([2] Section 3.3).

    With ``"importance"`` the sampler keeps the last ``history`` values of each term ``L_{t-1}`` and,
    once every step has that many, draws ``t`` with ``p(t) ∝ sqrt(E[L_{t-1}^2])``, mixed with a
    ``uniform_prob`` share of the uniform distribution so that every ``p(t) > 0``. Before that (and
    always with ``"uniform"``) ``p(t) = 1/T``. The estimator weights each draw by ``1 / (T p(t))``, so
    it stays unbiased whatever ``p`` is.

    :param int num_timesteps: the chain's ``T``.
    :param str timestep_sampling: ``"uniform"`` or ``"importance"``.
    :param int history: terms remembered per step.
    :param float uniform_prob: the uniform share of the mixture.
    :param device: where its statistics and probabilities live (the data's); the CPU by default.

    Example::

        >>> sampler = TimestepSampler(4, "importance", history=1)
        >>> sampler.update(torch.tensor([1, 2, 3, 4]), torch.tensor([1.0, 1.0, 1.0, 3.0]))
        >>> [round(float(p), 3) for p in sampler.probs()]
        [0.167, 0.167, 0.167, 0.5]
    """

    def __init__(
        self,
        num_timesteps: int,
        timestep_sampling: TimestepSampling = "uniform",
        *,
        history: int = 10,
        uniform_prob: float = 0.001,
        device: torch.device | None = None,
    ) -> None:
        self.num_timesteps = check_positive_int("num_timesteps", num_timesteps)
        self.timestep_sampling: TimestepSampling = check_choice(
            "timestep_sampling", timestep_sampling, TIMESTEP_SAMPLINGS
        )
        self.history = check_positive_int("history", history)
        self.uniform_prob = check_probability("uniform_prob", uniform_prob)
        self.squares = torch.zeros(self.num_timesteps, self.history, dtype=torch.float64, device=device)
        self.counts = torch.zeros(self.num_timesteps, dtype=torch.long, device=device)

    def probs(self) -> Tensor:
        """The current ``p(t)`` for ``t = 1..T`` (float64, shape ``(T,)``)."""
        uniform = torch.full((self.num_timesteps,), 1.0 / self.num_timesteps, dtype=torch.float64, device=self.counts.device)
        if self.timestep_sampling == "uniform" or bool((self.counts < self.history).any()):
            return uniform
        # [2] Section 3.3: p_t ∝ sqrt(E[L_t^2]), estimated from the last `history` values of each term
        weights = self.squares.mean(dim=1).sqrt()
        probs = weights / weights.sum()
        return (1.0 - self.uniform_prob) * probs + self.uniform_prob * uniform

    def sample(self, size: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``size`` steps; return them (``torch.long``, in ``1..T``) and their weights ``1/(T p(t))``."""
        probs = self.probs()
        t = torch.multinomial(probs, size, replacement=True, generator=generator) + 1
        return t, 1.0 / (self.num_timesteps * probs[t - 1])

    def update(self, t: Tensor, terms: Tensor) -> None:
        """Record the (unweighted) terms ``L_{t-1}`` observed at steps ``t``."""
        if self.timestep_sampling == "uniform":
            return
        # vectorised ring buffer: the k-th occurrence of a step in this batch goes to slot (count + k) % history,
        # and only the last `history` occurrences of each step are kept, as a sequential loop would leave them
        index = t.detach().long() - 1
        order = torch.argsort(index, stable=True)
        index, values = index[order], terms.detach().double()[order]
        in_batch = torch.bincount(index, minlength=self.num_timesteps)
        rank = torch.arange(index.shape[0], device=index.device) - (torch.cumsum(in_batch, 0) - in_batch)[index]
        keep = rank >= in_batch[index] - self.history
        slot = (self.counts[index] + rank) % self.history
        self.squares[index[keep], slot[keep]] = values[keep] ** 2
        self.counts += in_batch

    def state_dict(self) -> dict[str, Any]:
        """The sampler's state, for checkpoints."""
        return {"squares": self.squares.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`."""
        self.squares = state["squares"].to(self.squares.device, copy=True)
        self.counts = state["counts"].to(self.counts.device, copy=True)


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
    timestep_probs: Tensor | None = None,
    generator: torch.Generator | None = None,
    condition: Tensor | None = None,
    weights: Mapping[str, Tensor] | None = None,
) -> BoundEstimate:
    """An unbiased one-step estimate of the negative ELBO of each data point ([1] eq. 5, [2] eq. 10-11).

    ``-ELBO(x_0) = L_T + sum_{t=1}^T L_{t-1}``. The estimator keeps ``L_T`` exact (it needs no network)
    and replaces the sum by ``L_{t-1} / p(t)`` for one ``t ~ p`` and one ``x_t ~ q(x_t | x_0)``: with the
    uniform ``p(t) = 1/T`` that is ``T L_{t-1}``. Differentiable in the network's parameters.

    :param DiffusionChain chain: the chain.
    :param Tensor x0: data ``(N, *event_shape)``.
    :param timestep_probs: ``p(t)`` for ``t = 1..T``; uniform if ``None``.
    :param generator: the torch generator for ``t`` and the noise; torch's global one if ``None``.
    :param condition: for a conditional chain, the condition of each row of ``x0`` (class labels
        ``(N,)`` or covariates ``(N, cond_dim)``); the estimate is then of ``-ELBO(x_0 | c)``.
    :param weights: one draw of a Bayesian chain's weights (see
        :meth:`~probgen.models.diffusion.DiffusionChain.p_mean_variance`); the estimate is then of the
        bound given ``w``, ``-ELBO(x_0 | w)``. ``None`` uses the net as it is.
    :returns: a :class:`BoundEstimate`.

    Example::

        >>> from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
        >>> chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("linear", 20), event_shape=(2,))
        >>> estimate_bound(chain, torch.randn(6, 2)).loss.shape
        torch.Size([6])
    """
    chain = check_chain(chain)
    x0 = chain._check_x("x0", x0)
    num_timesteps = chain.num_timesteps
    probs = (
        torch.full((num_timesteps,), 1.0 / num_timesteps, dtype=torch.float64, device=x0.device)
        if timestep_probs is None
        else timestep_probs
    )
    t = torch.multinomial(probs, x0.shape[0], replacement=True, generator=generator) + 1
    step_weights = (1.0 / probs[t - 1]).to(x0.dtype)
    noise = torch.randn(x0.shape, dtype=x0.dtype, generator=generator, device=x0.device)
    terms = chain.vlb_term(x0, t, noise, condition=condition, weights=weights)
    # L_T exactly plus the importance-weighted term: E_t[L_{t-1} / p(t)] = sum_t L_{t-1}
    return BoundEstimate(loss=chain.prior_kl(x0) + step_weights * terms, t=t, terms=terms)


class BayesianLossEstimate(NamedTuple):
    """One draw of the minibatch estimator of a Bayesian chain's negative ELBO, per data point.

    :ivar Tensor loss: ``mean_b loss_b(w) + KL(q(w) || p(w)) / N``, a scalar in nats per data point;
        its expectation over the minibatch, the weight draw, the steps and the noise is ``-ELBO / N``.
    :ivar BoundEstimate bound: the per-row estimate given the draw ``w`` (:func:`estimate_bound`).
    :ivar Tensor kl: ``KL(q(w) || p(w))`` in nats, for the whole data set (closed form for Normal priors).
    :ivar dict weights: the draw ``w``, by parameter path (differentiable in ``q``'s parameters).
    """

    loss: Tensor
    bound: BoundEstimate
    kl: Tensor
    weights: dict[str, Tensor]


def estimate_bayesian_loss(
    chain: DiffusionChain,
    x0: Tensor,
    *,
    num_data: int,
    timestep_probs: Tensor | None = None,
    generator: torch.Generator | None = None,
    condition: Tensor | None = None,
) -> BayesianLossEstimate:
    """An unbiased minibatch estimate of a Bayesian chain's negative ELBO, in nats per data point.

    The ELBO of the Bayesian model on ``N`` data points is
    ``sum_i E_q(w)[ELBO(x_0^i | w)] - KL(q(w) || p(w))`` ([1] eq. 1-2). For a minibatch of ``B`` rows
    drawn uniformly from the ``N`` (with or without replacement) and one reparameterised draw
    ``w ~ q(w)`` shared by the minibatch, ``(N / B) sum_b loss_b(w) + KL`` estimates ``-ELBO`` without
    bias, where ``loss_b(w)`` is :func:`estimate_bound`'s one-step estimate given ``w``; divided by ``N``
    it is :attr:`BayesianLossEstimate.loss`. The KL is in closed form for Normal priors, as in
    :class:`pyro.infer.TraceMeanField_ELBO` on ``chain.model`` and ``chain.guide`` with
    ``subsample_size=B``, whose loss this estimator matches in expectation (tested). The weights are
    drawn first, then the steps and the noise, all from ``generator``.

    :param DiffusionChain chain: a Bayesian chain (built with ``prior=``).
    :param Tensor x0: the minibatch ``(B, *event_shape)``.
    :param int num_data: the number ``N`` of data points the minibatch is drawn from.
    :param timestep_probs: ``p(t)`` for ``t = 1..T``; uniform if ``None``.
    :param generator: the torch generator; torch's global one if ``None``.
    :param condition: the condition of each row of ``x0``, for a conditional chain.
    :returns: a :class:`BayesianLossEstimate`.
    :raises ValueError: for a chain without a prior, or a bad ``num_data``.

    References: [1] C. Blundell et al. (2015), "Weight Uncertainty in Neural Networks", ICML, eq. 8-9.

    Example::

        >>> from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
        >>> from probgen.priors import GaussianPrior
        >>> chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("linear", 20), event_shape=(2,),
        ...                        prior=GaussianPrior(1.0, fan_in=True))
        >>> estimate = estimate_bayesian_loss(chain, torch.randn(6, 2), num_data=100)
        >>> estimate.loss.shape, estimate.bound.loss.shape
        (torch.Size([]), torch.Size([6]))
    """
    chain = check_chain(chain)
    posterior = chain.weight_posterior
    if posterior is None:
        raise ValueError(
            "estimate_bayesian_loss needs a Bayesian chain (DiffusionChain(..., prior=GaussianPrior(...))); "
            "for a point chain use estimate_bound."
        )
    num_data = check_positive_int("num_data", num_data)
    weights = posterior.rsample(generator)
    bound = estimate_bound(
        chain, x0, timestep_probs=timestep_probs, generator=generator, condition=condition, weights=weights
    )
    kl = posterior.kl(chain.weight_priors(), weights)
    # (N / B) sum_b loss_b(w) + KL, per data point: mean_b loss_b(w) + KL / N
    return BayesianLossEstimate(loss=bound.loss.mean() + kl / num_data, bound=bound, kl=kl, weights=weights)


def eps_mse(
    chain: DiffusionChain,
    x0: Tensor,
    generator: torch.Generator | None = None,
    *,
    condition: Tensor | None = None,
) -> Tensor:
    """The simplified loss ``||eps - eps_theta(x_t, t)||^2`` per data point, mean over dimensions ([1] eq. 14).

    ``t`` is uniform on ``1..T`` and ``x_t ~ q(x_t | x_0)``. A reweighting of the ELBO's terms, not the ELBO.
    A conditional chain takes ``condition``, one row per row of ``x0``, and predicts ``eps_theta(x_t, t, c)``.

    Example::

        >>> from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
        >>> chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("linear", 20), event_shape=(2,))
        >>> eps_mse(chain, torch.randn(6, 2)).shape
        torch.Size([6])
    """
    condition = check_condition(chain, condition, x0.shape[0], "x0")
    # [1] eq. 14, L_simple: E_{t, eps} ||eps - eps_theta(x_t, t)||^2, mean over dimensions
    t = torch.randint(1, chain.num_timesteps + 1, (x0.shape[0],), generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, dtype=x0.dtype, generator=generator, device=x0.device)
    out = chain.p_mean_variance(chain.q_sample(x0, t, noise), t, condition=condition)
    return (noise - out.pred_eps).pow(2).flatten(1).mean(1)
