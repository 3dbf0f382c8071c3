"""The full variational bound of a diffusion chain on a data set: every term for every data point.

Under weight uncertainty (a Bayesian chain, or a deep ensemble) the same bound is computed under each
of ``S`` weight draws, with shared noise, and returned as a
:class:`~probgen.infer.results.BayesianBoundResult`.

References:

[1] J. Ho, A. Jain, P. Abbeel (2020), "Denoising Diffusion Probabilistic Models", NeurIPS.
[2] D. P. Kingma, T. Salimans, B. Poole, J. Ho (2021), "Variational Diffusion Models", NeurIPS.
"""

from __future__ import annotations

import math
import time
from typing import Any, overload

import torch
from torch import Tensor

from probgen._validate import check_positive_int, check_seed
from probgen.infer._progress import make_progress_bar, progress_enabled
from probgen.infer.diffusion._util import check_chain, check_condition, check_data, weight_draws
from probgen.infer.results import BayesianBoundResult, BoundResult, DiffusionFitResult, EnsembleFit
from probgen.models.diffusion.chain import DiffusionChain

__all__ = ["evaluate_bound"]

_LN2 = math.log(2.0)


@overload
def evaluate_bound(
    chain: DiffusionChain | DiffusionFitResult,
    data: Tensor,
    *,
    batch_size: int = ...,
    seed: int | None = ...,
    progress_bar: bool = ...,
    condition: Tensor | None = ...,
    num_posterior_draws: None = ...,
) -> BoundResult: ...


@overload
def evaluate_bound(
    chain: DiffusionChain | DiffusionFitResult,
    data: Tensor,
    *,
    batch_size: int = ...,
    seed: int | None = ...,
    progress_bar: bool = ...,
    condition: Tensor | None = ...,
    num_posterior_draws: int,
) -> BayesianBoundResult: ...


@overload
def evaluate_bound(
    chain: EnsembleFit,
    data: Tensor,
    *,
    batch_size: int = ...,
    seed: int | None = ...,
    progress_bar: bool = ...,
    condition: Tensor | None = ...,
    num_posterior_draws: int | None = ...,
) -> BayesianBoundResult: ...


def evaluate_bound(
    chain: DiffusionChain | DiffusionFitResult | EnsembleFit,
    data: Tensor,
    *,
    batch_size: int = 512,
    seed: int | None = None,
    progress_bar: bool = True,
    condition: Tensor | None = None,
    num_posterior_draws: int | None = None,
) -> BoundResult | BayesianBoundResult:
    """The full bound ``L_T + sum_{t=2}^T L_{t-1} + L_0`` of every data point, all ``T`` terms ([1] eq. 5).

    Each ``L_{t-1}`` (``t >= 2``) is the closed-form KL at one draw ``x_t ~ q(x_t | x_0)``, so the
    per-example value is an unbiased estimate of that example's negative ELBO, and the standard
    error over examples covers both the spread of the data and that Monte Carlo noise. With a
    :class:`~probgen.models.diffusion.DiscretizedGaussianDecoder` the bound is on the *discrete*
    negative log-likelihood; with a Gaussian decoder it bounds a differential one (in nats per data
    point, comparable with a density's entropy). Bits per dimension divide by ``D log 2`` with
    ``D = chain.num_dims`` (64 for 8 x 8 digits).

    Works for any chain, whatever objective trained its network. For a conditional chain the bound is
    on ``-log p_theta(x_0 | c)`` with each data point's own condition, so a condition that carries
    information about the data scores better than a shuffled one.

    **Under weight uncertainty.** For a Bayesian chain (or its fit) with ``num_posterior_draws=S``, or
    an :class:`~probgen.infer.results.EnsembleFit` (its ``M`` members are the draws), every data point
    is scored under each weight draw with the *same* noise draws (common random numbers), and the
    result is a :class:`~probgen.infer.results.BayesianBoundResult`: ``per_example`` ``(S, N)``, its mean
    over draws, the per-example ``epistemic_std`` over draws, in nats and bits per dimension, and for a
    Bayesian chain ``KL(q(w) || p(w))``. The weight draws come from a stream derived from ``seed`` (the
    same draws as the other read-outs with that seed) and the noise is that of the point evaluation, so
    draw ``s`` scores exactly as ``evaluate_bound(chain.with_weights(w_s), data, seed=seed)``.

    :param chain: the chain to score, or a :class:`~probgen.infer.results.DiffusionFitResult` (its
        chain), or an :class:`~probgen.infer.results.EnsembleFit`.
    :param Tensor data: data ``(N, *event_shape)``.
    :param int batch_size: data points per network call (per weight draw).
    :param seed: seed of the noise (and weight) draws; ``None`` picks one and records it.
    :param bool progress_bar: show a tqdm bar (never when the ``CI`` variable is set).
    :param condition: for a conditional chain (required there, refused otherwise), the condition of
        each data point: class labels ``(N,)`` or covariates ``(N, cond_dim)``; a single row serves all.
    :param num_posterior_draws: the number ``S`` of weight draws for a Bayesian chain (required there);
        for an ensemble ``None`` or its number of members; refused for a point-estimate chain.
    :returns: a :class:`~probgen.infer.results.BoundResult` for a point-estimate chain, a
        :class:`~probgen.infer.results.BayesianBoundResult` under weight uncertainty.
    :raises ValueError: for bad sizes, data of the wrong shape, a condition that is missing,
        unexpected or does not match the data, a Bayesian chain without ``num_posterior_draws`` or a
        point-estimate chain with it.

    References: [1] eq. 5 and Section 4.2 (bits/dim); [2] Section 3 (the same bound in discrete time).

    Example::

        >>> from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
        >>> chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("linear", 10), event_shape=(2,))
        >>> bound = evaluate_bound(chain, torch.randn(30, 2), seed=0, progress_bar=False)
        >>> bound.terms.shape, bound.per_example.shape, bound.num_dims
        (torch.Size([11]), torch.Size([30]), 2)

    A Bayesian chain is scored under ``S`` weight draws::

        >>> from probgen.priors import GaussianPrior
        >>> bayes = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("linear", 10), event_shape=(2,),
        ...                        prior=GaussianPrior(1.0, fan_in=True), init_scale=0.05)
        >>> draws = evaluate_bound(bayes, torch.randn(30, 2), num_posterior_draws=4, seed=0, progress_bar=False)
        >>> draws.per_example.shape, draws.epistemic_std.shape
        (torch.Size([4, 30]), torch.Size([30]))
    """
    inner = chain.chain if isinstance(chain, DiffusionFitResult) else chain
    if isinstance(chain, EnsembleFit) or (isinstance(inner, DiffusionChain) and inner.weight_posterior is not None):
        return _evaluate_draws(chain, data, batch_size, seed, progress_bar, condition, num_posterior_draws)
    chain = check_chain(inner)
    if num_posterior_draws is not None:
        raise ValueError(
            "num_posterior_draws asks for the bound under weight uncertainty, but this is a point-estimate chain "
            "(no prior), which has none; drop num_posterior_draws, or build the chain with prior= (or use fit_ensemble)."
        )
    data = check_data(chain, data)
    cond = check_condition(chain, condition, data.shape[0], "data")
    batch_size = check_positive_int("batch_size", batch_size)
    seed = check_seed(seed)
    start = time.perf_counter()
    generator = torch.Generator(chain.device).manual_seed(seed)
    num_timesteps = chain.num_timesteps
    terms = torch.empty(data.shape[0], num_timesteps + 1, dtype=torch.float64, device=chain.device)
    enabled = progress_enabled(progress_bar)
    with torch.no_grad(), make_progress_bar(num_timesteps, desc="evaluate_bound", enabled=enabled) as bar:
        for t in range(1, num_timesteps + 1):
            bar.update(1)
            for first in range(0, data.shape[0], batch_size):
                x0 = data[first : first + batch_size]
                c = None if cond is None else cond[first : first + batch_size]
                noise = torch.randn(x0.shape, dtype=x0.dtype, generator=generator, device=x0.device)
                # column t-1 holds L_{t-1}: the decoder term at t = 1, the closed-form KLs after
                terms[first : first + batch_size, t - 1] = chain.vlb_term(x0, t, noise, condition=c).double()
        for first in range(0, data.shape[0], batch_size):
            terms[first : first + batch_size, num_timesteps] = chain.prior_kl(data[first : first + batch_size]).double()
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
        terms_se=terms.std(dim=0) / math.sqrt(n) if n > 1 else torch.full((num_timesteps + 1,), float("nan"), device=chain.device),
        per_example=per_example,
        per_example_terms=terms,
        data=data,
        num_dims=chain.num_dims,
        seed=seed,
        wall_time=time.perf_counter() - start,
        chain_config=chain.describe(),
        condition=cond,
    )


def _evaluate_draws(
    source: Any,
    data: Tensor,
    batch_size: int,
    seed: int | None,
    progress_bar: bool,
    condition: Tensor | None,
    num_posterior_draws: int | None,
) -> BayesianBoundResult:
    """:func:`evaluate_bound` under ``S`` weight draws, with common noise."""
    batch_size = check_positive_int("batch_size", batch_size)
    seed = check_seed(seed)
    draws = weight_draws(source, num_posterior_draws, seed, what="evaluate_bound")
    generator = torch.Generator(draws.chain.device).manual_seed(seed)  # the point-estimate evaluation's noise
    chain, weights, num_draws = draws.chain, draws.weights, draws.num_draws
    data = check_data(chain, data)
    cond = check_condition(chain, condition, data.shape[0], "data")
    start = time.perf_counter()
    num_timesteps = chain.num_timesteps
    n = data.shape[0]
    terms = torch.empty(num_draws, n, num_timesteps + 1, dtype=torch.float64, device=chain.device)
    enabled = progress_enabled(progress_bar)
    with torch.no_grad(), make_progress_bar(num_timesteps, desc="evaluate_bound", enabled=enabled) as bar:
        for t in range(1, num_timesteps + 1):
            bar.update(1)
            for first in range(0, n, batch_size):
                x0 = data[first : first + batch_size]
                c = None if cond is None else cond[first : first + batch_size]
                noise = torch.randn(x0.shape, dtype=x0.dtype, generator=generator, device=x0.device)
                # the same x0 and noise under every draw: (S, B, ...) views, one vectorised call
                shared = (num_draws, *x0.shape)
                value = chain.vlb_term(x0.expand(shared), t, noise.expand(shared), condition=c, weights=weights)
                terms[:, first : first + batch_size, t - 1] = value.double()
        for first in range(0, n, batch_size):
            terms[:, first : first + batch_size, num_timesteps] = chain.prior_kl(data[first : first + batch_size]).double()
    per_example = terms.sum(dim=2)
    mean = per_example.mean(dim=0)
    nats = float(mean.mean())
    # the draws are shared by every point: the error of the grand mean has a part from the points and one from the draws
    se_points = float(mean.std() / math.sqrt(n)) if n > 1 else float("nan")
    se_draws = float(per_example.mean(dim=1).std() / math.sqrt(num_draws)) if num_draws > 1 else 0.0
    nats_se = math.sqrt(se_points**2 + se_draws**2)
    epistemic_std = (
        per_example.std(dim=0) if num_draws > 1 else torch.full((n,), float("nan"), dtype=torch.float64, device=chain.device)
    )
    weight_kl = None
    if draws.source == "posterior" and chain.weight_posterior is not None:
        with torch.no_grad():
            first_draw = {name: value[0] for name, value in weights.items()}
            weight_kl = float(chain.weight_posterior.kl(chain.weight_priors(), first_draw))
    scale = 1.0 / (chain.num_dims * _LN2)
    return BayesianBoundResult(
        per_example=per_example,
        per_example_mean=mean,
        epistemic_std=epistemic_std,
        nats=nats,
        nats_se=nats_se,
        bits_per_dim=nats * scale,
        bits_per_dim_se=nats_se * scale,
        per_draw_terms=terms.mean(dim=1),
        weight_kl=weight_kl,
        source=draws.source,
        condition=cond,
        data=data,
        num_dims=chain.num_dims,
        seed=seed,
        wall_time=time.perf_counter() - start,
        chain_config=chain.describe(),
    )
