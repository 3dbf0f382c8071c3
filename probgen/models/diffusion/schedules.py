"""Noise schedules of the diffusion forward process, as pure functions computed in float64.

A schedule maps a number of steps ``T`` to the variances ``beta_1, ..., beta_T`` of the forward
kernels ``q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)``. :func:`make_schedule`
derives, once and in one place, every quantity the chain needs (``alpha_bar_t``, the posterior
``q(x_{t-1} | x_t, x_0)`` coefficients and variances). Tensors in a :class:`Schedule` are indexed by
``t - 1``: entry ``[0]`` belongs to ``t = 1``.

References:

[1] J. Ho, A. Jain, P. Abbeel (2020), "Denoising Diffusion Probabilistic Models", NeurIPS.
[2] A. Nichol, P. Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models", ICML.
[3] D. P. Kingma, T. Salimans, B. Poole, J. Ho (2021), "Variational Diffusion Models", NeurIPS.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from probgen._validate import as_tensor, check_positive_float, check_positive_int, lookup

__all__ = [
    "SCHEDULE_NAMES",
    "Schedule",
    "ScheduleName",
    "cosine_schedule",
    "get_schedule",
    "linear_schedule",
    "log_snr_schedule",
    "make_schedule",
]

ScheduleName = Literal["linear", "cosine", "log_snr"]
#: The schedule names accepted by :func:`get_schedule`, in the order of :data:`ScheduleName`.
SCHEDULE_NAMES: tuple[ScheduleName, ...] = get_args(ScheduleName)

_MAX_BETA = 0.999


def _check_num_timesteps(num_timesteps: int) -> int:
    num_timesteps = check_positive_int("num_timesteps", num_timesteps)
    if num_timesteps < 2:
        raise ValueError(
            f"num_timesteps must be at least 2 (a prior step and a decoder step), got {num_timesteps}."
        )
    return num_timesteps


def linear_schedule(num_timesteps: int) -> Tensor:
    """DDPM's linear schedule, ``beta_t`` from ``1e-4`` to ``0.02`` at ``T = 1000``, rescaled for other ``T``.

    For ``T`` steps both ends are multiplied by ``1000 / T`` ([2], Section 2.2 and its code),
    which keeps ``alpha_bar_T`` close to the ``T = 1000`` value, so the chain still ends near
    ``N(0, I)``. Betas are clipped at 0.999, which only bites for ``T < 50``.

    :param int num_timesteps: the number of diffusion steps ``T >= 2``.
    :returns: ``beta_1, ..., beta_T`` as a float64 tensor of shape ``(T,)``.

    References: [1] Section 4 (``beta_1 = 1e-4``, ``beta_T = 0.02``); [2] Section 2.2.

    Example::

        >>> betas = linear_schedule(1000)
        >>> float(betas[0]), float(betas[-1]), betas.dtype
        (0.0001, 0.02, torch.float64)
        >>> round(float(linear_schedule(100)[-1]), 6)
        0.2
    """
    num_timesteps = _check_num_timesteps(num_timesteps)
    scale = 1000.0 / num_timesteps
    betas = torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64, device="cpu")
    return betas.clamp(max=_MAX_BETA)


def cosine_schedule(num_timesteps: int, *, offset: float = 0.008) -> Tensor:
    """The cosine schedule of Nichol & Dhariwal, ``alpha_bar(t) = cos^2(pi/2 (t/T + s)/(1 + s))``.

    ``beta_t = 1 - alpha_bar(t) / alpha_bar(t - 1)``, clipped at 0.999 to avoid the singularity
    at ``t = T`` ([2], eq. 17 and the paragraph after it).

    :param int num_timesteps: the number of diffusion steps ``T >= 2``.
    :param float offset: the small offset ``s`` that keeps ``beta_1`` away from 0 ([2] uses 0.008).
    :returns: ``beta_1, ..., beta_T`` as a float64 tensor of shape ``(T,)``.

    References: [2] eq. 17.

    Example::

        >>> betas = cosine_schedule(1000)
        >>> float(betas[-1]), bool(betas[0] < 1e-4)
        (0.999, True)
    """
    num_timesteps = _check_num_timesteps(num_timesteps)
    offset = check_positive_float("offset", offset, allow_zero=True)
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64, device="cpu") / num_timesteps
    # [2] eq. 17: alpha_bar(t) = f(t) / f(0), f(t) = cos^2(pi/2 * (t/T + s) / (1 + s))
    f = torch.cos((steps + offset) / (1.0 + offset) * math.pi / 2) ** 2
    alphas_cumprod = f / f[0]
    betas = 1.0 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(max=_MAX_BETA)


def log_snr_schedule(num_timesteps: int, *, log_snr_start: float = 7.0, log_snr_end: float = -9.0) -> Tensor:
    """A schedule linear in the log signal-to-noise ratio, ``log SNR_t = log(alpha_bar_t / (1 - alpha_bar_t))``.

    ``log SNR_t`` falls linearly from ``log_snr_start`` at ``t = 1`` to ``log_snr_end`` at ``t = T``
    (the fixed linear ``gamma(t) = -log SNR(t)`` of [3], Section 3), so ``alpha_bar_t = sigmoid(log SNR_t)``
    and ``beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}``. Every step multiplies the SNR by the same factor,
    so the noise grows smoothly at the low-noise end, where the linear schedule doubles the noise from
    ``t = 1`` to ``t = 2``. ``log_snr_start`` sets the first noise level ``sigma_1 = sqrt(sigmoid(-start))``:
    the default 7 gives ``sigma_1 = 0.030``, about half the bin half-width of 17-level data on ``[-1, 1]``,
    where the discretised decoder takes over; for 8-bit images choose a larger start.

    :param int num_timesteps: the number of diffusion steps ``T >= 2``.
    :param float log_snr_start: ``log SNR`` at ``t = 1``.
    :param float log_snr_end: ``log SNR`` at ``t = T`` (below ``log_snr_start``).
    :returns: ``beta_1, ..., beta_T`` as a float64 tensor of shape ``(T,)``.
    :raises ValueError: if ``log_snr_end >= log_snr_start``.

    References: [3] Section 3 (``SNR(t)``, ``gamma(t) = -log SNR(t)``) and Appendix (fixed linear ``gamma``).

    Example::

        >>> betas = log_snr_schedule(100)
        >>> schedule = make_schedule(betas)
        >>> round(float(schedule.sqrt_one_minus_alphas_cumprod[0]), 4), float(schedule.alphas_cumprod[-1]) < 2e-4
        (0.0302, True)
    """
    num_timesteps = _check_num_timesteps(num_timesteps)
    if not log_snr_end < log_snr_start:
        raise ValueError(
            f"log_snr_end must be below log_snr_start (the SNR falls with t), got {log_snr_start} and {log_snr_end}."
        )
    log_snr = torch.linspace(float(log_snr_start), float(log_snr_end), num_timesteps, dtype=torch.float64, device="cpu")
    alphas_cumprod = torch.sigmoid(log_snr)
    previous = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    return (1.0 - alphas_cumprod / previous).clamp(max=_MAX_BETA)


_SCHEDULES: dict[str, Callable[[int], Tensor]] = {
    "linear": linear_schedule,
    "cosine": cosine_schedule,
    "log_snr": log_snr_schedule,
}


def get_schedule(name: ScheduleName, num_timesteps: int) -> Schedule:
    """Build the :class:`Schedule` of a named beta schedule, one of :data:`SCHEDULE_NAMES`.

    :param str name: ``"linear"``, ``"cosine"`` or ``"log_snr"``.
    :param int num_timesteps: the number of diffusion steps ``T >= 2``.
    :raises ValueError: for an unknown name, listing the valid ones.

    Example::

        >>> get_schedule("cosine", 50).num_timesteps
        50
    """
    function = lookup("schedule", name, {key: _SCHEDULES[key] for key in SCHEDULE_NAMES})
    return make_schedule(function(num_timesteps), name=name)


@dataclass(frozen=True)
class Schedule:
    """Every quantity derived from ``beta_1..T``, computed once in float64 by :func:`make_schedule`.

    Each tensor has shape ``(T,)`` and entry ``[t - 1]`` belongs to step ``t``.

    :ivar Tensor betas: ``beta_t``, the forward kernel variances.
    :ivar Tensor alphas: ``alpha_t = 1 - beta_t``.
    :ivar Tensor alphas_cumprod: ``alpha_bar_t = prod_{s <= t} alpha_s``.
    :ivar Tensor alphas_cumprod_prev: ``alpha_bar_{t-1}``, with ``alpha_bar_0 = 1``.
    :ivar Tensor sqrt_alphas_cumprod: ``sqrt(alpha_bar_t)``, the signal scale of ``q(x_t | x_0)``.
    :ivar Tensor sqrt_one_minus_alphas_cumprod: ``sqrt(1 - alpha_bar_t)``, its noise scale.
    :ivar Tensor posterior_variance: ``beta~_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)``
        ([1] eq. 7); zero at ``t = 1``.
    :ivar Tensor posterior_log_variance_clipped: ``log beta~_t`` with ``beta~_1`` replaced by
        ``beta~_2`` so that it is finite ([2], code of ``GaussianDiffusion``).
    :ivar Tensor posterior_mean_coef1: coefficient of ``x_0`` in ``mu~_t(x_t, x_0)`` ([1] eq. 7).
    :ivar Tensor posterior_mean_coef2: coefficient of ``x_t`` in ``mu~_t(x_t, x_0)`` ([1] eq. 7).
    :ivar str name: the schedule's name in :data:`SCHEDULE_NAMES` when :func:`get_schedule` built it,
        ``"custom"`` for betas from elsewhere; records and files report it.
    """

    betas: Tensor
    alphas: Tensor
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    sqrt_alphas_cumprod: Tensor
    sqrt_one_minus_alphas_cumprod: Tensor
    posterior_variance: Tensor
    posterior_log_variance_clipped: Tensor
    posterior_mean_coef1: Tensor
    posterior_mean_coef2: Tensor
    name: str = "custom"

    @property
    def num_timesteps(self) -> int:
        """The number of diffusion steps ``T``."""
        return int(self.betas.shape[0])


def make_schedule(betas: Tensor, *, name: str = "custom") -> Schedule:
    """Derive a :class:`Schedule` from ``beta_1..T`` (any source), in float64.

    :param Tensor betas: a 1-D tensor of ``T >= 2`` values in ``(0, 1)``.
    :param str name: what to call the schedule in records (:func:`get_schedule` passes its name).
    :raises ValueError: if ``betas`` is not 1-D, has fewer than 2 entries or leaves ``(0, 1)``.

    References: [1] eqs. 4 and 7.

    Example::

        >>> schedule = make_schedule(torch.tensor([0.1, 0.2, 0.3]))
        >>> [round(float(a), 4) for a in schedule.alphas_cumprod]
        [0.9, 0.72, 0.504]
    """
    betas = as_tensor("betas", betas, dtype=torch.float64, ndim=1)
    _check_num_timesteps(betas.shape[0])
    if not bool(((betas > 0) & (betas < 1)).all()):
        raise ValueError(
            f"betas must lie in (0, 1), got values from {float(betas.min())} to {float(betas.max())}."
        )
    alphas = 1.0 - betas
    alphas_cumprod = torch.cumprod(alphas, dim=0)
    alphas_cumprod_prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    # [1] eq. 7: beta~_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    clipped = torch.cat([posterior_variance[1:2], posterior_variance[1:]])
    return Schedule(
        betas=betas,
        alphas=alphas,
        alphas_cumprod=alphas_cumprod,
        alphas_cumprod_prev=alphas_cumprod_prev,
        sqrt_alphas_cumprod=alphas_cumprod.sqrt(),
        sqrt_one_minus_alphas_cumprod=(1.0 - alphas_cumprod).sqrt(),
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=clipped.log(),
        # [1] eq. 7: mu~_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
        #                  + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t
        posterior_mean_coef1=alphas_cumprod_prev.sqrt() * betas / (1.0 - alphas_cumprod),
        posterior_mean_coef2=alphas.sqrt() * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        name=str(name),
    )
