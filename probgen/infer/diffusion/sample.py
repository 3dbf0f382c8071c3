"""Samplers of a trained diffusion chain: ancestral (the Pyro model), DDIM, and conditional (inpainting).

Every sampler takes ``num_samples`` (and ``num_chains``, one by default) keyword-only and returns a
:class:`~probgen.infer.results.DiffusionSamples` whose draws are shaped ``(chain, draw, *event_shape)``,
as every probgen posterior is. Each is seeded, blocks its sample sites from enclosing Pyro handlers and
restores torch's global RNG, so a call has no side effects.

A conditional chain needs ``condition=``, and the convention is one condition per draw: for
:func:`sample_ancestral` and :func:`sample_ddim` a condition of ``num_samples`` rows (class labels
``(num_samples,)`` or covariates ``(num_samples, cond_dim)``) gives ``samples[c, i]`` drawn from
``p_theta(x_0 | condition[i])`` in every chain ``c``; a single row, ``(1,)`` or ``(1, cond_dim)``,
conditions every draw on the same value. For :func:`sample_conditional` the condition belongs to the
observations: ``N`` rows (or one), one for each row of ``x_observed``.

A Bayesian chain (built with ``prior=``) is refused with a ValueError: its samples depend on a weight
draw. Sample one draw's chain (``chain.with_weights(...)``), the posterior-mean chain, or use the
read-outs of :mod:`probgen.infer.diffusion.uncertainty`, which sample under many draws at once.

References:

[1] J. Ho, A. Jain, P. Abbeel (2020), "Denoising Diffusion Probabilistic Models", NeurIPS.
[2] J. Song, C. Meng, S. Ermon (2021), "Denoising Diffusion Implicit Models", ICLR.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, cast

import pyro.poutine as poutine
import torch
from torch import Tensor

from probgen._device import fork_rng
from probgen._validate import check_positive_int, check_probability, check_seed
from probgen.infer.diffusion._util import check_condition, check_data, repeat_rows
from probgen.infer.diffusion._util import check_chain as _check_any_chain
from probgen.infer.results import DiffusionSamples, Sampler
from probgen.models.diffusion.chain import DiffusionChain
from probgen.models.diffusion.inpaint import InpaintMessenger

__all__ = ["ddim_step", "sample_ancestral", "sample_conditional", "sample_ddim"]


def check_chain(chain: Any) -> DiffusionChain:
    """``chain`` if it is a point-estimate :class:`DiffusionChain`; a Bayesian one is refused with the remedy."""
    chain = _check_any_chain(chain)
    if chain.weight_posterior is not None:
        raise ValueError(
            "this chain is Bayesian (prior=), so its samples depend on a weight draw: sample one draw with "
            "chain.with_weights({k: v[0] for k, v in chain.weight_posterior.sample(1).items()}), the posterior mean "
            "with chain.with_weights(chain.weight_posterior.mean()), or under weight uncertainty with "
            "sample_uncertainty, predictive_uncertainty or mutual_information."
        )
    return chain


def _draws(rows: Tensor, lead: tuple[int, ...]) -> Tensor:
    """Rows ``(prod(lead), *event)`` as ``(*lead, *event)``: ``lead`` is ``(chain, draw)`` or ``(chain, draw, N)``."""
    return rows.reshape(lead + tuple(rows.shape[1:]))


def _trajectory(states: list[Tensor], lead: tuple[int, ...]) -> Tensor:
    """The rows' states ``x_{steps[i]}``, one tensor per visited step, as ``(chain, draw, step, ...)``."""
    return torch.stack([_draws(state, lead) for state in states], dim=2)


def _run_model(
    chain: DiffusionChain,
    lead: tuple[int, ...],
    seed: int,
    return_chain: bool,
    messenger: InpaintMessenger | None,
    condition: Tensor | None,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Run ``chain.model`` for ``prod(lead)`` rows and their ``condition``; return ``x_0``, trajectory, steps."""
    with fork_rng(chain.device), torch.no_grad(), poutine.block():
        torch.manual_seed(seed)
        model = chain.model if messenger is None else messenger(chain.model)
        trace = poutine.trace(model).get_trace(num_samples=math.prod(lead), condition=condition)
    steps = torch.arange(chain.num_timesteps, -1, -1, device="cpu")  # a record of the steps, read on the host
    values: dict[str, Tensor] = {
        name: cast(Tensor, site["value"]) for name, site in trace.nodes.items() if site["type"] == "sample"
    }
    trajectory = _trajectory([values[f"x_{t}"] for t in steps.tolist()], lead) if return_chain else None
    return _draws(values["x_0"], lead), trajectory, steps


def _sizes(num_samples: int, num_chains: int) -> tuple[int, int]:
    return check_positive_int("num_samples", num_samples), check_positive_int("num_chains", num_chains)


def _draw_condition(chain: DiffusionChain, condition: Any, num_samples: int, num_chains: int) -> Tensor | None:
    """One condition per draw, checked and laid out like the rows ``(chain * draw)`` the samplers draw."""
    cond = check_condition(chain, condition, num_samples, f"the draws (num_samples={num_samples})")
    return None if cond is None else repeat_rows(cond, num_chains)


def _result(chain: DiffusionChain, sampler: Sampler, seed: int, start: float, **draws: Any) -> DiffusionSamples:
    """The draws with what every sampler records: seed, time since ``start`` and the chain's configuration."""
    return DiffusionSamples(
        seed=seed, wall_time=time.perf_counter() - start, sampler=sampler, chain_config=chain.describe(), **draws
    )


def sample_ancestral(
    chain: DiffusionChain,
    *,
    num_samples: int,
    num_chains: int = 1,
    seed: int | None = None,
    return_chain: bool = False,
    condition: Tensor | None = None,
) -> DiffusionSamples:
    """Ancestral sampling: run the Pyro model ``chain.model`` with nothing observed ([1] Algorithm 2).

    :param DiffusionChain chain: the chain.
    :param int num_samples: draws per chain.
    :param int num_chains: independent chains of draws (they are all independent; the dim is there
        so that every consumer sees ``(chain, draw, ...)``).
    :param seed: the seed; ``None`` picks one and records it.
    :param bool return_chain: also return every ``x_t``, ``t = T..0``.
    :param condition: for a conditional chain (required there, refused otherwise), one condition per
        draw: class labels ``(num_samples,)`` or covariates ``(num_samples, cond_dim)``, where
        ``samples[:, i]`` is drawn given ``condition[i]``; a single row conditions every draw.
    :returns: :class:`~probgen.infer.results.DiffusionSamples`, ``samples`` shaped ``(chain, draw, *event_shape)``.
    :raises ValueError: for bad sizes, or a condition that is missing, unexpected or of the wrong shape.

    Example::

        >>> from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
        >>> chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("linear", 10), event_shape=(2,))
        >>> draws = sample_ancestral(chain, num_samples=7, seed=1, return_chain=True)
        >>> draws.samples.shape, draws.trajectory.shape
        (torch.Size([1, 7, 2]), torch.Size([1, 7, 11, 2]))

    With a class-conditional chain, one label per draw::

        >>> net = MLPDenoiser(2, hidden_dim=8, num_classes=2)
        >>> labelled = DiffusionChain(net, get_schedule("linear", 10), event_shape=(2,))
        >>> draws = sample_ancestral(labelled, num_samples=3, num_chains=2, seed=0, condition=torch.tensor([0, 1, 1]))
        >>> draws.samples.shape
        torch.Size([2, 3, 2])
    """
    chain = check_chain(chain)
    num_samples, num_chains = _sizes(num_samples, num_chains)
    cond = _draw_condition(chain, condition, num_samples, num_chains)
    seed = check_seed(seed)
    start = time.perf_counter()
    samples, trajectory, steps = _run_model(chain, (num_chains, num_samples), seed, return_chain, None, cond)
    return _result(
        chain, "ancestral", seed, start, samples=samples, steps=steps, trajectory=trajectory,
        condition=None if cond is None else cond[:num_samples],
    )  # fmt: skip


def sample_conditional(
    chain: DiffusionChain,
    x_observed: Tensor,
    mask: Tensor,
    *,
    num_samples: int,
    num_chains: int = 1,
    seed: int | None = None,
    return_chain: bool = False,
    condition: Tensor | None = None,
) -> DiffusionSamples:
    """Generate the unknown coordinates of ``x_0`` given the known ones (``mask`` true), approximately.

    Runs ``chain.model`` under :class:`~probgen.models.diffusion.InpaintMessenger`, which conditions
    each latent site's known coordinates on forward-noised copies of the observation (the
    replacement method). The result agrees with ``x_observed`` where ``mask`` is true. It is an
    approximation of the model's conditional ``p_theta(x_0^unk | x_0^obs)``, exact only when the known
    and unknown coordinates are independent under the model; see the messenger for details.

    :param DiffusionChain chain: the chain.
    :param Tensor x_observed: ``(N, *event_shape)``, ``N`` observations to complete. Entries outside
        ``mask`` are ignored.
    :param Tensor mask: boolean, broadcastable to ``x_observed``, true where a coordinate is known.
    :param int num_samples: completions of every observation per chain.
    :param int num_chains: independent chains of completions.
    :param seed: the seed; ``None`` picks one and records it.
    :param bool return_chain: also return every ``x_t``.
    :param condition: for a conditional chain (required there, refused otherwise), the condition of
        each observation: class labels ``(N,)`` or covariates ``(N, cond_dim)``, row ``i`` for row ``i``
        of ``x_observed`` in every draw; a single row serves every observation.
    :returns: :class:`~probgen.infer.results.DiffusionSamples`, ``samples`` shaped
        ``(chain, draw, N, *event_shape)``.

    Example::

        >>> from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
        >>> chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("linear", 10), event_shape=(2,))
        >>> draws = sample_conditional(chain, torch.tensor([[1.5, 0.0]]), torch.tensor([True, False]), num_samples=5, seed=0)
        >>> draws.samples.shape, draws.samples[0, :, 0, 0].tolist()
        (torch.Size([1, 5, 1, 2]), [1.5, 1.5, 1.5, 1.5, 1.5])
    """
    chain = check_chain(chain)
    x_observed = check_data(chain, x_observed, "x_observed")
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a boolean tensor, got dtype {mask.dtype}.")
    try:
        mask = mask.to(x_observed.device).expand_as(x_observed)
    except RuntimeError as error:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to x_observed's shape {tuple(x_observed.shape)}."
        ) from error
    num_samples, num_chains = _sizes(num_samples, num_chains)
    cond = check_condition(chain, condition, x_observed.shape[0], "x_observed")
    seed = check_seed(seed)
    start = time.perf_counter()
    lead = (num_chains, num_samples, x_observed.shape[0])
    # every observation (and its condition) once per draw: (chain * draw * N, ...)
    num_draws = num_chains * num_samples
    messenger = InpaintMessenger(chain, repeat_rows(x_observed, num_draws), repeat_rows(mask, num_draws))
    rows = None if cond is None else repeat_rows(cond, num_draws)
    samples, trajectory, steps = _run_model(chain, lead, seed, return_chain, messenger, rows)
    return _result(
        chain, "conditional", seed, start, samples=samples, steps=steps, trajectory=trajectory, x_observed=x_observed,
        mask=mask, condition=cond,
    )  # fmt: skip


def _ddim_steps(num_sampling_steps: int, num_timesteps: int) -> list[int]:
    steps = torch.linspace(1, num_timesteps, num_sampling_steps, dtype=torch.float64, device="cpu").round().long().unique()
    return [int(s) for s in steps.tolist()]


def ddim_step(
    chain: DiffusionChain,
    x_t: Tensor,
    t: int,
    t_prev: int,
    *,
    eta: float,
    noise: Tensor | None = None,
    condition: Tensor | None = None,
    weights: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """One DDIM update from step ``t`` to an earlier step ``t_prev >= 1`` ([2] eq. 12 and 16).

    ``x_prev = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev - sigma^2) eps_hat + sigma z`` with
    ``sigma^2 = eta^2 (1 - alpha_bar_prev) / (1 - alpha_bar_t) (1 - alpha_bar_t / alpha_bar_prev)``. With
    ``eta = 1`` and ``t_prev = t - 1``, ``sigma^2 = beta~_t`` and the step is the ancestral step of a
    ``"fixed_small"`` chain. A conditional chain takes ``condition``, one row per row of ``x_t`` (see
    :meth:`~probgen.models.diffusion.DiffusionChain.p_mean_variance`), and ``weights`` puts parameter
    values (one draw, or ``S`` stacked draws with ``x_t`` of shape ``(S, ...)``) into the net.
    """
    out = chain.p_mean_variance(x_t, t, condition=condition, weights=weights)
    ab_t = float(chain.schedule.alphas_cumprod[t - 1])
    ab_prev = float(chain.schedule.alphas_cumprod[t_prev - 1])
    # [2] eq. 16: sigma_t(eta)
    sigma2 = eta**2 * (1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev)
    # [2] eq. 12: predicted x_0, direction pointing to x_t, random noise
    x_prev = math.sqrt(ab_prev) * out.pred_x0 + math.sqrt(max(1.0 - ab_prev - sigma2, 0.0)) * out.pred_eps
    if sigma2 > 0:
        x_prev = x_prev + math.sqrt(sigma2) * (torch.randn_like(x_t) if noise is None else noise)
    return x_prev


def sample_ddim(
    chain: DiffusionChain,
    *,
    num_samples: int,
    num_chains: int = 1,
    num_sampling_steps: int | None = None,
    eta: float = 0.0,
    seed: int | None = None,
    return_chain: bool = False,
    condition: Tensor | None = None,
) -> DiffusionSamples:
    """DDIM sampling on ``num_sampling_steps`` of the chain's ``T`` steps, with stochasticity ``eta`` ([2] Section 4).

    The visited steps are ``round(linspace(1, T, num_sampling_steps))`` (``T`` and ``1`` included). Each
    update is :func:`ddim_step`. The last step, from ``x_1`` to ``x_0``, draws from the decoder with mean
    ``x0_hat`` and scale ``eta * sigma_1`` for ``eta > 0`` and returns the decoder's mode at ``eta = 0``.
    So ``eta = 0`` is deterministic DDIM, and ``eta = 1`` with all ``T`` steps is the ancestral
    sampler of a ``"fixed_small"`` chain, in distribution.

    :param DiffusionChain chain: a chain (any objective; the update uses its ``eps`` and ``x_0`` predictions).
    :param int num_samples: draws per chain.
    :param int num_chains: independent chains of draws.
    :param num_sampling_steps: steps to visit, ``2 <= num_sampling_steps <= T``; ``None`` for all ``T``.
    :param float eta: ``0`` (deterministic) to ``1`` (DDPM-like noise).
    :param seed: the seed; ``None`` picks one and records it.
    :param bool return_chain: also return the visited states.
    :param condition: for a conditional chain, one condition per draw, as for :func:`sample_ancestral`.
    :returns: :class:`~probgen.infer.results.DiffusionSamples` with ``steps`` the visited steps and ``0``.

    Example::

        >>> from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
        >>> chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("linear", 100), event_shape=(2,))
        >>> draws = sample_ddim(chain, num_samples=4, num_sampling_steps=10, seed=0)
        >>> draws.samples.shape, draws.steps.tolist()[:3]
        (torch.Size([1, 4, 2]), [100, 89, 78])
    """
    chain = check_chain(chain)
    num_samples, num_chains = _sizes(num_samples, num_chains)
    num_timesteps = chain.num_timesteps
    if num_sampling_steps is None:
        num_sampling_steps = num_timesteps
    num_sampling_steps = check_positive_int("num_sampling_steps", num_sampling_steps)
    if not 2 <= num_sampling_steps <= num_timesteps:
        raise ValueError(
            f"num_sampling_steps must lie in [2, {num_timesteps}] (the chain's num_timesteps), got {num_sampling_steps}."
        )
    eta = check_probability("eta", eta, open_interval=False)  # [2] Section 4.1: 0 (DDIM) to 1 (DDPM-like)
    cond = _draw_condition(chain, condition, num_samples, num_chains)
    seed = check_seed(seed)
    start = time.perf_counter()
    lead = (num_chains, num_samples)
    steps = _ddim_steps(num_sampling_steps, num_timesteps)
    states = []
    with fork_rng(chain.device), torch.no_grad():
        torch.manual_seed(seed)
        x = torch.randn((math.prod(lead), *chain.event_shape), dtype=chain._dtype(), device=chain.device)
        states.append(x)
        for t, t_prev in zip(steps[:0:-1], steps[-2::-1], strict=True):
            x = ddim_step(chain, x, t, t_prev, eta=eta, condition=cond)
            states.append(x)
        # the last step x_1 -> x_0 goes through the decoder (mean x0_hat; scale eta * sigma_1)
        out = chain.p_mean_variance(x, 1, condition=cond)
        if eta > 0:
            scale = (eta * (0.5 * out.log_variance).exp()).expand_as(out.mean)
            x = chain.decoder.distribution(out.mean, scale).sample()
        else:
            x = chain.decoder.mode(out.mean)
        states.append(x)
    return _result(
        chain, "ddim", seed, start, samples=_draws(x, lead), steps=torch.tensor(steps[::-1] + [0], device="cpu"),
        trajectory=_trajectory(states, lead) if return_chain else None, eta=eta,
        condition=None if cond is None else cond[:num_samples],
    )  # fmt: skip
