"""Small pure functions behind probgen's NUTS: tree bookkeeping, U-turns and adaptation.

Everything here works on tensors whose leading dimension indexes chains, so that
:mod:`probgen.infer.nuts` can advance all chains with the same tensor operations.

References:
    Hoffman, M. D. and Gelman, A. (2014). The No-U-Turn Sampler: adaptively setting path
    lengths in Hamiltonian Monte Carlo. JMLR 15, 1593-1623.
    Betancourt, M. (2017). A conceptual introduction to Hamiltonian Monte Carlo.
    arXiv:1701.02434, appendix A (multinomial sampling, generalised U-turn criterion).
    Stan Development Team. Stan Reference Manual, "HMC algorithm parameters" (adaptation
    windows, dual averaging constants, metric regularisation).
    Phan, D., Pradhan, N. and Jankowiak, M. (2019). Composable effects for flexible and
    accelerated probabilistic programming in NumPyro. arXiv:1912.11554 (iterative NUTS).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

#: Stan's dual-averaging constants (Hoffman & Gelman 2014, section 3.2).
DA_GAMMA = 0.05
DA_T0 = 10.0
DA_KAPPA = 0.75
#: Stan's defaults for windowed adaptation: initial fast buffer, final fast buffer, first slow window.
INIT_BUFFER = 75
TERM_BUFFER = 50
BASE_WINDOW = 25


def checkpoint_indices(leaf: int) -> tuple[int, int]:
    """Checkpoint slots to compare against when leaf ``leaf`` (0-based) of a subtree is added.

    The iterative NUTS keeps, for every even leaf, its momentum and the running momentum sum
    in slot ``popcount(leaf >> 1)``. Adding an odd leaf completes the balanced sub-subtrees
    that start at the checkpoints in slots ``[lo, hi]``, one per trailing one bit of ``leaf``;
    for even leaves the range is empty (``lo = hi + 1``).

    >>> checkpoint_indices(0), checkpoint_indices(1), checkpoint_indices(7), checkpoint_indices(6)
    ((1, 0), (0, 0), (0, 2), (3, 2))
    """
    hi = bin(leaf >> 1).count("1")
    trailing_ones = 0
    while leaf & 1:
        leaf >>= 1
        trailing_ones += 1
    return hi - trailing_ones + 1, hi


def checkpoint_tables(max_tree_depth: int) -> tuple[Tensor, Tensor]:
    """:func:`checkpoint_indices` of every leaf of the deepest subtree, as two long tensors."""
    leaves = range(2 ** max(max_tree_depth - 1, 0))
    lo, hi = zip(*(checkpoint_indices(n) for n in leaves))
    return torch.tensor(lo, device="cpu"), torch.tensor(hi, device="cpu")


def slow_windows(num_warmup: int) -> list[tuple[int, int]]:
    """Stan's slow adaptation windows ``[start, end)`` for the mass matrix.

    A fast initial buffer (75 iterations), slow windows of 25, 50, 100, ... iterations (the
    last one stretched to the final buffer), and a fast final buffer (50 iterations); when
    ``num_warmup`` is too short for these, the buffers take 15% and 10% of it. Fewer than 20
    warm-up iterations adapt the step size only.

    >>> slow_windows(1000)
    [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    >>> slow_windows(100)
    [(15, 90)]
    """
    if num_warmup < 20:
        return []
    init, term, base = INIT_BUFFER, TERM_BUFFER, BASE_WINDOW
    if init + base + term > num_warmup:
        init = int(0.15 * num_warmup)
        term = int(0.1 * num_warmup)
        base = num_warmup - init - term
    end_slow = num_warmup - term
    windows = []
    start, size = init, base
    while start < end_slow:
        if 3 * size <= end_slow - start:  # room for this window and one twice its size
            stop, next_size = start + size, 2 * size
        else:
            stop, next_size = end_slow, size
        windows.append((start, stop))
        start, size = stop, next_size
    return windows


def kinetic_energy(r: Tensor, inv_mass: Tensor) -> Tensor:
    """``0.5 r^T M^{-1} r`` per chain for a diagonal inverse mass matrix."""
    return 0.5 * (r * r * inv_mass).sum(-1)


def is_turning(v_left: Tensor, v_right: Tensor, rho: Tensor) -> Tensor:
    """Generalised U-turn criterion (Betancourt 2017, eq. A.2 and section A.4.2).

    :param Tensor v_left: velocity ``M^{-1} p`` at one end of the (sub)trajectory.
    :param Tensor v_right: velocity at the other end.
    :param Tensor rho: the sum of the momenta of every state in the (sub)trajectory.
    :returns: ``True`` where either end has turned back, ``v . rho <= 0``.
    """
    return ((v_left * rho).sum(-1) <= 0) | ((v_right * rho).sum(-1) <= 0)


class DualAveraging(NamedTuple):
    """Per-chain state of Nesterov dual averaging on ``log(step_size)`` (Hoffman & Gelman, Alg. 6).

    :ivar Tensor log_step: the current iterate ``x_t``, used for the next transition.
    :ivar Tensor log_step_avg: the weighted average ``x_bar_t``, used after warm-up.
    :ivar Tensor h_avg: the running mean of ``target - accept_prob`` (``H_bar_t``).
    :ivar Tensor mu: the shrinkage point, ``log(10 * step_size)`` at the last restart.
    :ivar Tensor steps: iterations since the last restart (``t``).
    """

    log_step: Tensor
    log_step_avg: Tensor
    h_avg: Tensor
    mu: Tensor
    steps: Tensor


def dual_averaging_init(step_size: Tensor) -> DualAveraging:
    """A fresh (re)start at ``step_size``, shrinking towards ``log(10 * step_size)``."""
    log_step = step_size.log()
    zeros = torch.zeros_like(log_step)
    return DualAveraging(log_step, zeros, zeros, math.log(10.0) + log_step, zeros)


def dual_averaging_update(state: DualAveraging, accept_prob: Tensor, target: float | Tensor) -> DualAveraging:
    """One dual-averaging step per chain (Hoffman & Gelman 2014, eq. 6 with Stan's constants)."""
    steps = state.steps + 1
    eta = 1.0 / (steps + DA_T0)
    h_avg = (1 - eta) * state.h_avg + eta * (target - accept_prob)
    log_step = state.mu - h_avg * steps.sqrt() / DA_GAMMA
    weight = steps.pow(-DA_KAPPA)
    log_step_avg = (1 - weight) * state.log_step_avg + weight * log_step
    return DualAveraging(log_step, log_step_avg, h_avg, state.mu, steps)


def regularized_variance(m2: Tensor, count: Tensor) -> Tensor:
    """Stan's regularised variance estimate for the diagonal metric.

    ``var = n / (n + 5) * sample_var + 1e-3 * 5 / (n + 5)``: shrinks towards ``1e-3`` when the
    window is short.

    :param Tensor m2: Welford's sum of squared deviations, ``(chains, dim)``.
    :param Tensor count: draws in the window per chain, ``(chains,)``.
    """
    n = count[:, None]
    var = m2 / (n - 1).clamp(min=1)
    return (n / (n + 5)) * var + 1e-3 * (5 / (n + 5))
