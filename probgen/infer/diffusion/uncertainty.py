"""Read-outs of a Bayesian denoiser's weight uncertainty, in the vocabulary of Bayesian neural networks.

Each read-out takes a Bayesian chain (built with ``prior=``), its
:class:`~probgen.infer.results.DiffusionFitResult`, or a deep ensemble
(:class:`~probgen.infer.results.EnsembleFit`, whose members play the weight draws), evaluates ``S``
weight draws in one vectorised call per step (``weights=`` of the chain's methods, ``torch.func.vmap``
over the draws), and takes ``condition=`` for a conditional chain:

* :func:`sample_uncertainty`: generated samples under ``S`` draws from one shared starting noise;
  ``epistemic_var`` is the variance over draws of deterministic DDIM (a function of the weights and
  ``x_T`` only), ``aleatoric_var`` the ancestral sampler's variance within a draw;
* :func:`predictive_uncertainty`: the predictive ``p(x_0 | c)`` at given conditions, decomposed by the
  law of total variance over ``S`` draws and ``K`` samples per draw;
* :func:`mutual_information`: per sample, the weights' disagreement on every reverse step in closed
  form (DECU's epistemic score, [1]), averaged over the steps;
* :func:`filter_by_uncertainty`: keeps the least uncertain fraction of a batch of samples.

The bound under weight uncertainty is :func:`~probgen.infer.diffusion.evaluate_bound` with
``num_posterior_draws=``. A point-estimate chain has no weight uncertainty, and every read-out refuses
it with a ValueError that says so (rather than reporting a zero that would look like a measurement).
All read-outs are seeded: the weight draws come from a stream derived from ``seed`` (the same draws as
``evaluate_bound`` with that seed), the noise from torch's RNG seeded by ``seed`` and forked, so that a
read-out leaves the global state as it found it and starts from the ``x_T`` that
:func:`~probgen.infer.diffusion.sample_ddim` draws with the same seed.

References:

[1] L. Berry, A. Brando, D. Meger (2024), "Shedding Light on Large Generative Networks: Estimating
    Epistemic Uncertainty in Diffusion Models", UAI.
[2] J. Song, C. Meng, S. Ermon (2021), "Denoising Diffusion Implicit Models", ICLR.
[3] S. Depeweg, J. M. Hernandez-Lobato, F. Doshi-Velez, S. Udluft (2018), "Decomposition of
    Uncertainty in Bayesian Deep Learning for Efficient and Risk-sensitive Learning", ICML.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from probgen._validate import check_positive_int, check_probability, check_seed
from probgen.infer.diffusion._util import WeightDraws, check_condition, repeat_rows, weight_draws
from probgen.infer.diffusion.sample import _ddim_steps, ddim_step
from probgen.infer.results import (
    DiffusionFitResult,
    EnsembleFit,
    MutualInformation,
    PredictiveUncertainty,
    SampleUncertainty,
)
from probgen.models.diffusion._util import sum_event
from probgen.models.diffusion.chain import DiffusionChain

__all__ = [
    "FilteredSamples",
    "filter_by_uncertainty",
    "mutual_information",
    "predictive_uncertainty",
    "sample_uncertainty",
]

#: What every read-out takes as its source of weight draws.
Source = DiffusionChain | DiffusionFitResult | EnsembleFit


def _ddim(chain: DiffusionChain, x: Tensor, weights: Mapping[str, Tensor], cond: Tensor | None, steps: list[int]) -> Tensor:
    """Deterministic DDIM (``eta = 0``) from ``x`` ``(S, M, ...)`` under the stacked ``weights``, ending at the mode."""
    for t, t_prev in zip(steps[:0:-1], steps[-2::-1], strict=True):
        x = ddim_step(chain, x, t, t_prev, eta=0.0, condition=cond, weights=weights)
    out = chain.p_mean_variance(x, 1, condition=cond, weights=weights)
    return chain.decoder.mode(out.mean)


def _ancestral(chain: DiffusionChain, x: Tensor, weights: Mapping[str, Tensor], cond: Tensor | None) -> Tensor:
    """Ancestral sampling (Ho et al. 2020, Algorithm 2) from ``x_T`` ``(S, R, ...)``, slice ``s`` under draw ``s``."""
    for t in range(chain.num_timesteps, 0, -1):
        out = chain.p_mean_variance(x, t, condition=cond, weights=weights)
        scale = (0.5 * out.log_variance).exp().expand_as(out.mean)
        if t == 1:
            return chain.decoder.distribution(out.mean, scale).sample()
        x = out.mean + scale * torch.randn_like(x)
    return x  # pragma: no cover - the loop returns at t = 1


def _rows_condition(chain: DiffusionChain, condition: Any, num_rows: int) -> Tensor | None:
    return check_condition(chain, condition, num_rows, f"the samples (num_samples={num_rows})")



@contextlib.contextmanager
def _seeded_draws(source: Any, num_posterior_draws: Any, seed: int, what: str) -> Iterator[WeightDraws]:
    """The set-up every read-out shares: torch's streams forked and seeded with ``seed`` (so the caller's
    are left as they were), no gradients, and the read-out's ``S >= 2`` weight draws."""
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        yield weight_draws(source, num_posterior_draws, seed, what=what, min_draws=2)


def _warn_if_diverged(outputs: Tensor, sampler: str) -> None:
    """Warn when some weight draws (dim 0 of ``outputs``) gave non-finite samples: their variances are then inf or NaN."""
    bad = ~torch.isfinite(outputs.reshape(outputs.shape[0], -1)).all(dim=1)
    if bool(bad.any()):
        warnings.warn(
            f"{int(bad.sum())} of {outputs.shape[0]} weight draws gave non-finite {sampler} samples (the chain diverged "
            "under them), so the variances of those samples are inf or NaN; a narrower prior or posterior, or more "
            "training, keeps the draws in range.",
            RuntimeWarning,
            stacklevel=3,
        )


def sample_uncertainty(
    source: Source,
    *,
    num_samples: int,
    num_posterior_draws: int | None = None,
    num_ancestral: int = 8,
    num_sampling_steps: int | None = None,
    seed: int | None = None,
    condition: Tensor | None = None,
) -> SampleUncertainty:
    """Generate samples under ``S`` weight draws from shared starting noise, and split their variance.

    Each of the ``num_samples`` samples draws one ``x_T``, shared by every weight draw. Then:

    1. deterministic DDIM (``eta = 0``, [2]) maps ``(w_s, x_T)`` to ``x_0``: the variance of these over
       the draws is ``epistemic_var``, the spread that the weights alone cause;
    2. the ancestral sampler runs ``num_ancestral`` times per draw from the same ``x_T``: the mean over
       draws of the variance over runs is ``aleatoric_var``, the sampler's own spread given the weights;
    3. ``total_var`` is their sum (see :class:`~probgen.infer.results.SampleUncertainty`).

    :param source: a Bayesian chain, its fit, or an :class:`~probgen.infer.results.EnsembleFit`.
    :param int num_samples: ``M``, the number of samples (starting noises).
    :param num_posterior_draws: ``S`` (at least 2) for a Bayesian source; ``None`` or ``M`` for an ensemble.
    :param int num_ancestral: ``K``, ancestral runs per draw and sample (at least 2).
    :param num_sampling_steps: DDIM's steps, ``2..T``; all ``T`` if ``None``.
    :param seed: the seed; ``None`` picks one and records it.
    :param condition: for a conditional chain, one condition per sample (``(M,)`` labels or
        ``(M, cond_dim)`` covariates, or a single row), as for :func:`~probgen.infer.diffusion.sample_ddim`.
    :returns: a :class:`~probgen.infer.results.SampleUncertainty`.
    :raises ValueError: for a point-estimate source, fewer than 2 draws or runs, bad sizes, or a bad condition.

    Example::

        >>> from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
        >>> from probgen.priors import GaussianPrior
        >>> chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("linear", 10), event_shape=(2,),
        ...                        prior=GaussianPrior(1.0, fan_in=True), init_scale=0.05)
        >>> result = sample_uncertainty(chain, num_samples=6, num_posterior_draws=4, num_ancestral=3, seed=0)
        >>> result.ddim_samples.shape, result.ancestral_samples.shape, result.epistemic_var.shape
        (torch.Size([4, 6, 2]), torch.Size([4, 3, 6, 2]), torch.Size([6, 2]))
    """
    num_samples = check_positive_int("num_samples", num_samples)
    num_ancestral = check_positive_int("num_ancestral", num_ancestral)
    if num_ancestral < 2:
        raise ValueError(f"num_ancestral must be at least 2 (a variance within a draw), got {num_ancestral}.")
    seed = check_seed(seed)
    start = time.perf_counter()
    with _seeded_draws(source, num_posterior_draws, seed, "sample_uncertainty") as draws:
        chain, weights, num_draws = draws.chain, draws.weights, draws.num_draws
        T = chain.num_timesteps
        num_steps = T if num_sampling_steps is None else check_positive_int("num_sampling_steps", num_sampling_steps)
        if not 2 <= num_steps <= T:
            raise ValueError(f"num_sampling_steps must lie in [2, {T}] (the chain's num_timesteps), got {num_steps}.")
        cond = _rows_condition(chain, condition, num_samples)
        x_T = torch.randn((num_samples, *chain.event_shape), dtype=chain._dtype(), device=chain.device)
        steps = _ddim_steps(num_steps, T)
        # 1. DDIM under every draw from the same x_T: (S, M, ...)
        ddim = _ddim(chain, x_T.expand(num_draws, *x_T.shape), weights, cond, steps)
        # 2. K ancestral runs per draw from the same x_T: rows k * M + i start at x_T[i]
        starts = repeat_rows(x_T, num_ancestral)
        run_cond = None if cond is None else repeat_rows(cond, num_ancestral)
        runs = _ancestral(chain, starts.expand(num_draws, *starts.shape), weights, run_cond)
        ancestral = runs.reshape(num_draws, num_ancestral, num_samples, *chain.event_shape)
    _warn_if_diverged(ddim, "DDIM")
    _warn_if_diverged(ancestral, "ancestral")
    epistemic = ddim.var(dim=0)
    aleatoric = ancestral.var(dim=1).mean(dim=0)
    return SampleUncertainty(
        x_T=x_T,
        ddim_samples=ddim,
        ancestral_samples=ancestral,
        epistemic_var=epistemic,
        aleatoric_var=aleatoric,
        total_var=epistemic + aleatoric,
        condition=cond,
        source=draws.source,
        steps=torch.tensor(steps[::-1] + [0], device="cpu"),
        seed=seed,
        wall_time=time.perf_counter() - start,
        chain_config=chain.describe(),
    )


def _num_conditions(condition: Any) -> int:
    """The number of rows of a condition: labels ``(N,)`` or covariates ``(N, k)``; 1 for ``None`` or a scalar."""
    if condition is None:
        return 1
    shape = torch.as_tensor(condition).shape
    return int(shape[0]) if len(shape) else 1


def predictive_uncertainty(
    source: Source,
    condition: Tensor | None = None,
    *,
    num_samples: int,
    num_posterior_draws: int | None = None,
    seed: int | None = None,
) -> PredictiveUncertainty:
    """The predictive ``p(x_0 | c)`` at given conditions, split by the law of total variance ([3]).

    Under each of ``S`` weight draws, ``K = num_samples`` independent ancestral samples (each from its
    own ``x_T``) at each condition; the fields are ``aleatoric_var = mean_s Var_k``,
    ``epistemic_var = Var_s mean_k`` and ``total_var = Var_{s,k}``, with the expectations and the exact
    identity stated in :class:`~probgen.infer.results.PredictiveUncertainty`. For a diffusion regression
    ``p(y | x)`` (a chain conditioned on covariates) this is the familiar split of a BNN's predictive
    variance into noise and model uncertainty.

    :param source: a Bayesian chain, its fit, or an :class:`~probgen.infer.results.EnsembleFit`.
    :param condition: the ``N`` conditions of a conditional chain, class labels ``(N,)`` or covariates
        ``(N, cond_dim)``; ``None`` for an unconditional chain, whose marginal is the one "condition".
    :param int num_samples: ``K``, samples per draw and condition (at least 2).
    :param num_posterior_draws: ``S`` (at least 2) for a Bayesian source; ``None`` or ``M`` for an ensemble.
    :param seed: the seed; ``None`` picks one and records it.
    :returns: a :class:`~probgen.infer.results.PredictiveUncertainty`.
    :raises ValueError: for a point-estimate source, fewer than 2 draws or samples, or a bad condition.

    Example::

        >>> from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
        >>> from probgen.priors import GaussianPrior
        >>> net = MLPDenoiser(1, hidden_dim=8, cond_dim=1)
        >>> chain = DiffusionChain(net, get_schedule("linear", 10), event_shape=(1,),
        ...                        prior=GaussianPrior(1.0, fan_in=True), init_scale=0.05)
        >>> result = predictive_uncertainty(chain, torch.linspace(-1, 1, 5)[:, None], num_samples=4,
        ...                                 num_posterior_draws=3, seed=0)
        >>> result.samples.shape, result.total_var.shape
        (torch.Size([3, 4, 5, 1]), torch.Size([5, 1]))
    """
    num_samples = check_positive_int("num_samples", num_samples)
    if num_samples < 2:
        raise ValueError(f"num_samples must be at least 2 (a variance within a draw), got {num_samples}.")
    seed = check_seed(seed)
    start = time.perf_counter()
    with _seeded_draws(source, num_posterior_draws, seed, "predictive_uncertainty") as draws:
        chain, weights, num_draws = draws.chain, draws.weights, draws.num_draws
        num_conditions = _num_conditions(condition)
        cond = check_condition(chain, condition, num_conditions, "the conditions")
        rows = num_samples * num_conditions  # row k * N + i is sample k at condition i
        x_T = torch.randn((num_draws, rows, *chain.event_shape), dtype=chain._dtype(), device=chain.device)
        samples = _ancestral(chain, x_T, weights, None if cond is None else repeat_rows(cond, num_samples))
        samples = samples.reshape(num_draws, num_samples, num_conditions, *chain.event_shape)
    pooled = samples.reshape(num_draws * num_samples, num_conditions, *chain.event_shape)
    return PredictiveUncertainty(
        samples=samples,
        mean=pooled.mean(dim=0),
        aleatoric_var=samples.var(dim=1).mean(dim=0),
        epistemic_var=samples.mean(dim=1).var(dim=0),
        total_var=pooled.var(dim=0),
        condition=cond,
        source=draws.source,
        seed=seed,
        wall_time=time.perf_counter() - start,
        chain_config=chain.describe(),
    )


def mutual_information(
    source: Source,
    *,
    num_samples: int,
    num_posterior_draws: int | None = None,
    seed: int | None = None,
    condition: Tensor | None = None,
) -> MutualInformation:
    """Generate samples and score each by the weights' disagreement along its path (DECU, [1]).

    Every sample starts from its own ``x_T``. At each step ``t = T..1`` every weight draw gives the mean
    ``mu_s`` of its reverse Gaussian at the shared ``x_t`` (one vectorised call), the step's score is
    ``0.5 sum_d log(1 + Var_s mu_{s,d} / sigma_t^2)`` (an upper bound on ``I(x_{t-1}; w | x_t)``, see
    :class:`~probgen.infer.results.MutualInformation`), and the path moves on with the proposal of one
    draw picked uniformly at random (the decoder's at ``t = 1``), a draw from the mixture. The sample's
    score is the mean over the ``T`` steps.

    :param source: a Bayesian chain, its fit, or an :class:`~probgen.infer.results.EnsembleFit`.
    :param int num_samples: ``M``, the number of samples.
    :param num_posterior_draws: ``S`` (at least 2) for a Bayesian source; ``None`` or ``M`` for an ensemble.
    :param seed: the seed; ``None`` picks one and records it.
    :param condition: for a conditional chain, one condition per sample, as for :func:`sample_uncertainty`.
    :returns: a :class:`~probgen.infer.results.MutualInformation`.
    :raises ValueError: for a point-estimate source, fewer than 2 draws, bad sizes, or a bad condition.

    References: [1] Section 4 (the per-step mutual information of the ensemble's reverse Gaussians).

    Example::

        >>> from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
        >>> from probgen.priors import GaussianPrior
        >>> chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("linear", 10), event_shape=(2,),
        ...                        prior=GaussianPrior(1.0, fan_in=True), init_scale=0.05)
        >>> scored = mutual_information(chain, num_samples=6, num_posterior_draws=4, seed=0)
        >>> scored.samples.shape, scored.per_step.shape, bool((scored.score >= 0).all())
        (torch.Size([6, 2]), torch.Size([10, 6]), True)
    """
    num_samples = check_positive_int("num_samples", num_samples)
    seed = check_seed(seed)
    start = time.perf_counter()
    with _seeded_draws(source, num_posterior_draws, seed, "mutual_information") as draws:
        chain, weights, num_draws = draws.chain, draws.weights, draws.num_draws
        cond = _rows_condition(chain, condition, num_samples)
        T = chain.num_timesteps
        x = torch.randn((num_samples, *chain.event_shape), dtype=chain._dtype(), device=chain.device)
        per_step = torch.empty(T, num_samples, dtype=torch.float64, device=chain.device)
        rows = torch.arange(num_samples, device=chain.device)
        for index, t in enumerate(range(T, 0, -1)):
            out = chain.p_mean_variance(x.expand(num_draws, *x.shape), t, condition=cond, weights=weights)
            variance = out.variance[0]  # sigma_t^2, shared by the draws
            # [1] Section 4: the mixture of the S Gaussians N(mu_s, sigma_t^2) against one of them; the
            # mixture's variance (ddof=0) in a Gaussian's entropy bounds the mutual information above
            spread = out.mean.var(dim=0, unbiased=False)
            per_step[index] = (0.5 * sum_event(torch.log1p(spread / variance), chain.event_dim)).double()
            pick = torch.randint(num_draws, (num_samples,), device=chain.device)
            mean = out.mean[pick, rows]
            scale = variance.sqrt().expand_as(mean)
            x = chain.decoder.distribution(mean, scale).sample() if t == 1 else mean + scale * torch.randn_like(mean)
    return MutualInformation(
        samples=x,
        per_step=per_step,
        score=per_step.mean(dim=0),
        steps=torch.arange(T, 0, -1, device="cpu"),
        condition=cond,
        source=draws.source,
        num_posterior_draws=num_draws,
        seed=seed,
        wall_time=time.perf_counter() - start,
        chain_config=chain.describe(),
    )


class FilteredSamples(NamedTuple):
    """What :func:`filter_by_uncertainty` kept.

    :ivar Tensor samples: the kept samples, in their original order, ``(num_kept, ...)``.
    :ivar Tensor indices: their rows in the batch (ascending).
    :ivar Tensor scores: their scores.
    :ivar float threshold: the largest kept score.
    """

    samples: Tensor
    indices: Tensor
    scores: Tensor
    threshold: float


def filter_by_uncertainty(samples: Tensor, scores: Tensor, *, keep: float = 0.5) -> FilteredSamples:
    """Keep the least uncertain fraction ``keep`` of a batch of generated samples.

    The ``floor(keep * M)`` samples (at least one) with the lowest scores are kept, ties broken by
    position; scores are e.g. :attr:`MutualInformation.score <probgen.infer.results.MutualInformation.score>`
    or :attr:`SampleUncertainty.epistemic_score <probgen.infer.results.SampleUncertainty.epistemic_score>`.
    As DECU shows ([1] Section 5), dropping the samples on which the weights disagree most removes
    the ones furthest from the training data.

    :param Tensor samples: ``(M, ...)``.
    :param Tensor scores: ``(M,)``, finite; lower is more certain.
    :param float keep: the fraction to keep, in ``(0, 1]``.
    :returns: a :class:`FilteredSamples`.
    :raises ValueError: for scores of the wrong shape or not finite, or ``keep`` outside ``(0, 1]``.

    Example::

        >>> kept = filter_by_uncertainty(torch.arange(4.0)[:, None], torch.tensor([0.3, 0.1, 0.4, 0.2]), keep=0.5)
        >>> kept.indices.tolist(), kept.samples[:, 0].tolist()
        ([1, 3], [1.0, 3.0])
    """
    keep = check_probability("keep", keep, open_interval=False)
    if keep == 0:
        raise ValueError("keep must lie in (0, 1], got 0.0; keep at least one sample.")
    if not isinstance(samples, Tensor) or samples.dim() == 0:
        raise ValueError("samples must be a tensor with one row per sample, (M, ...).")
    scores = torch.as_tensor(scores)
    if scores.shape != samples.shape[:1]:
        raise ValueError(
            f"scores must have one value per sample, shape ({samples.shape[0]},), got {tuple(scores.shape)}; "
            "reduce a per-dimension score over its dimensions first."
        )
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("scores contain NaN or infinite values; score every sample first.")
    num_kept = max(1, math.floor(keep * samples.shape[0]))
    index = torch.sort(torch.argsort(scores, stable=True)[:num_kept]).values
    kept = scores[index]
    return FilteredSamples(samples=samples[index], indices=index, scores=kept, threshold=float(kept.max()))
