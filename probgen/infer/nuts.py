"""probgen's own NUTS: every chain advanced by the same tensor operations.

:func:`sample_nuts` runs the No-U-Turn Sampler on any flat log-density ``u -> (log p(u), grad)``
evaluated on a batch ``u`` of shape ``(chains, dim)``; :func:`run_flat_nuts` compiles a BNN
with :func:`~probgen.infer._flat.compile_bnn` and is registered as the ``"flat"`` backend of
:func:`~probgen.infer.mcmc.fit_nuts`.

The sampler is Stan's NUTS: multinomial sampling within a trajectory, biased progressive
sampling across its doublings, the generalised U-turn criterion on every balanced
sub-trajectory, divergence when the energy error exceeds 1000, dual averaging of the step
size towards ``target_accept_prob`` and a diagonal mass matrix estimated in Stan's slow
windows. Two things differ in how it is computed:

* The tree is built iteratively, one leapfrog step per loop iteration, keeping momentum
  checkpoints for the U-turn checks (NumPyro's scheme) instead of recursing.
* Chains do not wait for each other. Each chain is a small state machine (which doubling of
  which transition it is in, how many leaves of the current subtree it has built), and one
  loop iteration takes one leapfrog step for every chain at once: a chain that finishes its
  transition starts the next one in the same iteration, so no chain idles while another one
  builds a deeper tree. The only idle steps are at the very end of the run.
* The loop body (:func:`_extend`: leapfrog step, log density, multinomial choice, U-turn
  checks) has no data-dependent branches, so that on large models ``torch.compile`` fuses it
  into a few loops; merging subtrees, ending transitions and adaptation run eagerly, only in
  the iterations where some chain needs them.

All random numbers come from one ``torch.Generator`` seeded with ``seed``. A run can be
continued without warm-up from its :class:`NUTSState` (``init=state.position``,
``step_size=``, ``inverse_mass=``).

References:
    Hoffman, M. D. and Gelman, A. (2014). The No-U-Turn Sampler: adaptively setting path
    lengths in Hamiltonian Monte Carlo. JMLR 15, 1593-1623.
    Betancourt, M. (2017). A conceptual introduction to Hamiltonian Monte Carlo.
    arXiv:1701.02434 (multinomial sampling, generalised U-turn criterion, appendix A).
    Stan Development Team. Stan Reference Manual, "HMC algorithm parameters" (adaptation windows).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from probgen.infer import _nuts_util as util
from probgen.infer._flat import FlatLogDensity, compile_bnn
from probgen.infer._progress import make_progress_bar, progress_enabled
from probgen.infer._workers import run_jobs
from probgen.infer.mcmc import STAT_NAMES, ChainOutput, NUTSConfig, typed_stats
from probgen.models.bnn import BNN

__all__ = [
    "sample_nuts",
    "sample_bnn",
    "run_flat_nuts",
    "NUTSState",
    "NUTSOutput",
    "MAX_DELTA_ENERGY",
    "TREE_DEPTH_WARN_FRACTION",
    "COMPILE_MIN_WORK",
]

#: An energy error above this marks a divergent transition (as Stan and Pyro).
MAX_DELTA_ENERGY = 1000.0
#: Warn when more than this fraction of draws reach ``max_tree_depth``.
TREE_DEPTH_WARN_FRACTION = 0.05

#: Compile the inner loop when data points x parameters x chains reaches this. Measured on an
#: 8-50-1 BNN with 1000 points (work 2e6): 0.9 ms per leapfrog step of 4 chains compiled against
#: 2-7 ms eager, for about 20 s of compilation (5-10 s with inductor's cache warm).
COMPILE_MIN_WORK = 1_000_000

#: Frames from ``_warn_about`` up to the caller of ``fit_nuts``: ``_warn_about``,
#: ``run_flat_nuts``, ``mcmc._run_flat``, ``fit_nuts``, the caller.
_CALLER_STACKLEVEL = 4

LogDensity = Callable[[Tensor], tuple[Tensor, Tensor]]


class NUTSState(NamedTuple):
    """Where a run stopped, enough to continue it without warm-up.

    :ivar Tensor position: the last draw of every chain, unconstrained, ``(chains, dim)``.
    :ivar Tensor step_size: the adapted step size of every chain, ``(chains,)``.
    :ivar Tensor inverse_mass: the adapted diagonal inverse mass matrix, ``(chains, dim)``.
    """

    position: Tensor
    step_size: Tensor
    inverse_mass: Tensor


class NUTSOutput(NamedTuple):
    """What :func:`sample_nuts` returns.

    :ivar Tensor draws: unconstrained draws, ``(chains, draws, dim)``.
    :ivar dict sample_stats: per-draw statistics under ArviZ names, each ``(chains, draws)``.
    :ivar NUTSState state: the adapted state at the end of the run.
    :ivar int num_gradients: batched log-density evaluations (each covers every chain of its group).
    :ivar Tensor num_leapfrog: leapfrog steps per chain over warm-up and sampling, ``(chains,)``.
    """

    draws: Tensor
    sample_stats: dict[str, Tensor]
    state: NUTSState
    num_gradients: int
    num_leapfrog: Tensor


class _Point(NamedTuple):
    """Position, log density, gradient and Hamiltonian (with the momentum it had) of every chain."""

    z: Tensor
    logp: Tensor
    grad: Tensor
    energy: Tensor


class _Edge(NamedTuple):
    """One end of every chain's trajectory: position, momentum and gradient."""

    z: Tensor
    r: Tensor
    grad: Tensor


class _Subtree(NamedTuple):
    """Every chain's subtree under construction, carried by :func:`_extend` from leaf to leaf.

    :ivar _Edge front: the last leaf, from which the next leapfrog step starts.
    :ivar _Point proposal: the multinomial draw among the subtree's leaves so far.
    :ivar Tensor log_w: log of the summed weights ``exp(H0 - H)`` of its leaves.
    :ivar Tensor rho: the sum of its leaves' momenta.
    :ivar Tensor ck_v: ``M^{-1} p`` at the checkpoint leaves, ``(chains, slots, dim)``.
    :ivar Tensor ck_d: ``p - rho`` at the checkpoint leaves (``rho`` up to and including them).
    :ivar Tensor ck_a: ``ck_v . ck_d``, ``(chains, slots)``.
    :ivar Tensor leaf: leaves built so far (long).
    :ivar Tensor sum_accept: the transition's summed acceptance probabilities ``min(1, exp(H0 - H))``.
    """

    front: _Edge
    proposal: _Point
    log_w: Tensor
    rho: Tensor
    ck_v: Tensor
    ck_d: Tensor
    ck_a: Tensor
    leaf: Tensor
    sum_accept: Tensor


def _select(mask: Tensor, a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> list[Tensor]:
    """``where(mask, a_i, b_i)`` for each pair; ``mask`` indexes chains and broadcasts to each shape."""
    return [torch.where(mask.view((-1,) + (1,) * (x.dim() - 1)), x, y) for x, y in zip(a, b)]


def _extend(
    log_density: LogDensity,
    tree: _Subtree,
    half_eps: Tensor,
    eps_inv_mass: Tensor,
    inv_mass: Tensor,
    h0: Tensor,
    size: Tensor,
    log_u: Tensor,
    check_table: Tensor,
    store_table: Tensor,
) -> tuple[_Subtree, Tensor, Tensor, Tensor]:
    """Add one leaf to every chain's subtree: the loop body of the iterative NUTS.

    It has no data-dependent branches, so that ``torch.compile`` can fuse it with the log
    density into a few loops.

    :param Tensor half_eps: ``step_size * direction / 2`` per chain, ``(chains, 1)``.
    :param Tensor eps_inv_mass: ``step_size * direction * M^{-1}``, ``(chains, dim)``.
    :param Tensor h0: the Hamiltonian at the start of each chain's transition.
    :param Tensor size: the number of leaves each subtree will have, ``2**depth`` (long).
    :param Tensor log_u: ``log(uniform)`` per chain for the multinomial choice.
    :param Tensor check_table: ``(leaves, slots)``: the checkpoints that leaf ``n`` is compared with.
    :param Tensor store_table: ``(leaves, slots)``: the slot that stores leaf ``n`` (even leaves).
    :returns: the extended subtrees, and per chain whether the subtree is finished, whether it
        is rejected (a U-turn inside it, or a divergence) and whether it diverged.
    """
    # 1. leapfrog step (Hoffman & Gelman 2014, Alg. 1)
    r = torch.addcmul(tree.front.r, half_eps, tree.front.grad)
    z = torch.addcmul(tree.front.z, eps_inv_mass, r)
    logp, grad = log_density(z)
    r = torch.addcmul(r, half_eps, grad)
    v = inv_mass * r
    # 2. energy error; NaN counts as zero density, and an error above 1000 is a divergence
    energy = 0.5 * (r * v).sum(-1) - logp
    delta = h0 - energy
    delta = torch.where(torch.isnan(delta), -math.inf, delta)
    diverging = delta < -MAX_DELTA_ENERGY
    sum_accept = tree.sum_accept + delta.clamp(max=0.0).exp()
    # 3. multinomial sampling within the subtree: take the new leaf with probability
    #    w_new / (w_subtree + w_new) (Betancourt 2017, appendix A.3.1)
    log_w = torch.logaddexp(tree.log_w, delta)
    take = log_u < delta - log_w
    proposal = _Point(*_select(take, (z, logp, grad, energy), tree.proposal))
    rho = tree.rho + r
    # 4. generalised U-turn of each balanced sub-subtree that this leaf completes (odd leaves),
    #    from the checkpoint k where it starts, whose momentum sum is rho - rho_k + p_k
    #    (Betancourt 2017, A.4.2; NumPyro's iterative checkpoints)
    check = check_table[tree.leaf]
    left = (tree.ck_v @ rho[:, :, None])[..., 0] + tree.ck_a  # v_k . (rho - rho_k + p_k)
    right = (tree.ck_d @ v[:, :, None])[..., 0] + (v * rho).sum(-1, keepdim=True)  # v . (rho - rho_k + p_k)
    turning = (((left <= 0) | (right <= 0)) & check).any(-1)
    # 5. even leaves become checkpoints
    store = store_table[tree.leaf]
    d = r - rho
    ck_v = torch.where(store[..., None], v[:, None, :], tree.ck_v)
    ck_d = torch.where(store[..., None], d[:, None, :], tree.ck_d)
    ck_a = torch.where(store, (v * d).sum(-1, keepdim=True), tree.ck_a)
    leaf = tree.leaf + 1
    rejected = turning | diverging
    done = (leaf == size) | rejected
    new = _Subtree(_Edge(z, r, grad), proposal, log_w, rho, ck_v, ck_d, ck_a, leaf, sum_accept)
    return new, done, rejected, diverging


class _Sampler:
    """The batched NUTS state machine; one :meth:`step` is one leapfrog step of every chain.

    :meth:`step` runs :func:`_extend` (compiled or not), then, only when some chain has
    finished its subtree, merges subtrees into trajectories, ends transitions, records draws
    and adapts, all with masks over chains.
    """

    def __init__(
        self,
        log_density: LogDensity,
        init: Tensor,
        config: NUTSConfig,
        generator: torch.Generator,
        step_size: Tensor | None,
        inverse_mass: Tensor | None,
        compile: bool,
    ) -> None:
        self.f = log_density
        self.config = config
        self.gen = generator
        chains, dim = init.shape
        self.chains, self.dim, self.dtype = chains, dim, init.dtype
        self.total = config.num_warmup + config.num_samples
        self.num_gradients = 0
        self.completed = 0  # iterations finished, summed over chains (progress; when to stop)
        self.arange = torch.arange(chains)
        everyone = torch.ones(chains, dtype=torch.bool)
        self.extend: Callable[..., tuple[_Subtree, Tensor, Tensor, Tensor]] = partial(_extend, log_density)
        self.compile_pending = compile
        if compile:
            self.extend = torch.compile(self.extend, fullgraph=True, dynamic=False)
        # 1. adaptation state (Stan reference manual: step size by dual averaging, diagonal
        #    metric from Welford variances in slow windows)
        self.inv_mass = init.new_ones(chains, dim) if inverse_mass is None else inverse_mass.clone().to(init)
        logp, grad = self._grad(init)
        if not torch.isfinite(logp).all():
            raise ValueError("the log density is not finite at the initial positions; try another seed or init.")
        self.proposal = _Point(init.clone(), logp, grad, -logp)
        if step_size is None:
            step_size = self._find_step_size(init.new_ones(chains), everyone)
        self.step_size = step_size.clone().to(init)
        self.da = util.dual_averaging_init(self.step_size)
        in_window = torch.zeros(self.total + 1, dtype=torch.bool)
        window_end = torch.zeros(self.total + 1, dtype=torch.bool)
        for start, stop in util.slow_windows(config.num_warmup):
            in_window[start:stop] = True
            window_end[stop - 1] = True
        self.in_window, self.window_end = in_window, window_end
        self.welford_n = init.new_zeros(chains)
        self.welford_mean = torch.zeros_like(init)
        self.welford_m2 = torch.zeros_like(init)
        # 2. tree state
        lo, hi = util.checkpoint_tables(config.max_tree_depth)
        slots = torch.arange(max(config.max_tree_depth - 1, 1))
        self.check_table = (slots >= lo[:, None]) & (slots <= hi[:, None])
        self.store_table = (lo[:, None] > hi[:, None]) & (slots == hi[:, None])
        zeros = init.new_zeros(chains)
        edge = _Edge(init, torch.zeros_like(init), grad)
        self.left = self.right = edge
        self.tree = _Subtree(
            front=edge,
            proposal=self.proposal,
            log_w=zeros,
            rho=torch.zeros_like(init),
            ck_v=init.new_zeros(chains, len(slots), dim),
            ck_d=init.new_zeros(chains, len(slots), dim),
            ck_a=init.new_zeros(chains, len(slots)),
            leaf=torch.zeros(chains, dtype=torch.long),
            sum_accept=zeros,
        )
        self.h0 = zeros
        self.log_w = zeros  # the whole trajectory's summed weights and momenta
        self.rho = torch.zeros_like(init)
        self.depth = torch.zeros(chains, dtype=torch.long)
        self.size = torch.ones(chains, dtype=torch.long)
        self.direction = init.new_ones(chains)
        self.half_eps = init.new_zeros(chains, 1)
        self.eps_inv_mass = torch.zeros_like(init)
        self.transition_step_size = self.step_size.clone()
        self.iteration = torch.zeros(chains, dtype=torch.long)
        self.num_leapfrog = torch.zeros(chains, dtype=torch.long)
        self.log_u = init.new_zeros(0, chains)
        self.log_u_next = 0
        # 3. outputs
        self.draws = init.new_zeros(chains, config.num_samples, dim)
        self.stats = {name: init.new_zeros(chains, config.num_samples) for name in STAT_NAMES}
        self._start_transitions(everyone)

    # -- numerics -----------------------------------------------------------------------------

    def _grad(self, z: Tensor) -> tuple[Tensor, Tensor]:
        self.num_gradients += 1
        return self.f(z)

    def _energy(self, r: Tensor, logp: Tensor) -> Tensor:
        return util.kinetic_energy(r, self.inv_mass) - logp

    def _momentum(self) -> Tensor:
        noise = torch.randn(self.chains, self.dim, generator=self.gen, dtype=self.dtype)
        return noise / self.inv_mass.sqrt()

    def _log_uniform(self) -> Tensor:
        return torch.rand(self.chains, generator=self.gen, dtype=self.dtype).log()

    def _next_log_u(self) -> Tensor:
        """``log(uniform)`` per chain for one leaf, drawn 1024 leaves at a time."""
        if self.log_u_next == len(self.log_u):
            self.log_u = torch.rand(1024, self.chains, generator=self.gen, dtype=self.dtype).log()
            self.log_u_next = 0
        self.log_u_next += 1
        return self.log_u[self.log_u_next - 1]

    def _find_step_size(self, step_size: Tensor, mask: Tensor) -> Tensor:
        """Stan's step-size initialisation: double or halve until a one-step acceptance crosses 0.8.

        Runs on copies of the current draws for the chains in ``mask``; the others keep ``step_size``.
        """
        log_08 = math.log(0.8)
        eps = step_size.clone()
        start = self.proposal
        direction = torch.zeros_like(eps)
        active = mask.clone()
        for attempt in range(100):
            r = self._momentum()
            h0 = self._energy(r, start.logp)
            e = eps[:, None]
            r_half = r + 0.5 * e * start.grad
            logp, grad = self._grad(start.z + e * self.inv_mass * r_half)
            delta = h0 - self._energy(r_half + 0.5 * e * grad, logp)
            delta = torch.where(torch.isnan(delta), -math.inf, delta)
            if attempt == 0:  # the first probe picks the direction: grow while acceptance > 0.8
                direction = torch.where(delta > log_08, 1.0, -1.0).to(eps)
                continue
            active = active & torch.where(direction > 0, delta > log_08, delta < log_08)
            if not active.any():
                break
            eps = torch.where(active, eps * torch.pow(2.0, direction), eps)
        return torch.where(mask, eps, step_size)

    # -- the state machine -------------------------------------------------------------------

    def step(self) -> None:
        """One leapfrog step of every chain, then whatever bookkeeping it completes."""
        self.num_gradients += 1
        args = (
            self.tree,
            self.half_eps,
            self.eps_inv_mass,
            self.inv_mass,
            self.h0,
            self.size,
            self._next_log_u(),
            self.check_table,
            self.store_table,
        )
        if self.compile_pending:  # the first compiled call compiles; fall back to eager if that fails
            self.compile_pending = False
            try:
                with warnings.catch_warnings():  # inductor's own deprecation notices are not the user's
                    warnings.simplefilter("ignore", DeprecationWarning)
                    result = self.extend(*args)
            except Exception as error:  # torch.compile raises many types (missing compiler, unsupported op)
                warnings.warn(
                    f"torch.compile failed ({type(error).__name__}: {error}); NUTS continues uncompiled, "
                    "which is slower on large models.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.extend = partial(_extend, self.f)
                result = self.extend(*args)
        else:
            result = self.extend(*args)
        self.tree, done, rejected, diverging = result
        if done.any():
            self._finish_subtrees(done, rejected, diverging)

    def _start_transitions(self, mask: Tensor) -> None:
        """Fresh momentum and a one-point trajectory at the current draw, for chains in ``mask``."""
        p = self.proposal
        r = self._momentum()
        edge = _Edge(p.z, r, p.grad)
        self.h0 = torch.where(mask, self._energy(r, p.logp), self.h0)
        self.proposal = p._replace(energy=torch.where(mask, self.h0, p.energy))  # the start is a candidate draw
        self.left = _Edge(*_select(mask, edge, self.left))
        self.right = _Edge(*_select(mask, edge, self.right))
        self.log_w, self.rho, self.depth, self.transition_step_size = _select(
            mask,
            (torch.zeros_like(self.log_w), r, torch.zeros_like(self.depth), self.step_size),
            (self.log_w, self.rho, self.depth, self.transition_step_size),
        )
        self.tree = self.tree._replace(sum_accept=torch.where(mask, 0.0, self.tree.sum_accept))
        self._start_subtrees(mask)

    def _start_subtrees(self, mask: Tensor) -> None:
        """A new doubling for chains in ``mask``: a random direction, from that end of the trajectory."""
        direction = torch.where(self._log_uniform() < math.log(0.5), -1.0, 1.0).to(self.dtype)
        self.direction = torch.where(mask, direction, self.direction)
        forward = self.direction > 0
        start = _Edge(*_select(forward, self.right, self.left))
        eps = self.transition_step_size * self.direction
        t = self.tree
        log_w, rho, leaf = _select(
            mask,
            (torch.full_like(t.log_w, -math.inf), torch.zeros_like(t.rho), torch.zeros_like(t.leaf)),
            (t.log_w, t.rho, t.leaf),
        )
        self.tree = t._replace(front=_Edge(*_select(mask, start, t.front)), log_w=log_w, rho=rho, leaf=leaf)
        self.size = torch.where(mask, 1 << self.depth, self.size)
        self.half_eps = torch.where(mask[:, None], 0.5 * eps[:, None], self.half_eps)
        self.eps_inv_mass = torch.where(mask[:, None], eps[:, None] * self.inv_mass, self.eps_inv_mass)

    def _finish_subtrees(self, done: Tensor, rejected: Tensor, diverging: Tensor) -> None:
        """Merge finished subtrees into their trajectories; end the transitions that stop."""
        ok = done & ~rejected
        t = self.tree
        # biased progressive sampling across doublings: take the subtree's draw with
        # probability min(1, w_subtree / w_trajectory) (Betancourt 2017, A.3.2)
        take = ok & (self._log_uniform() < t.log_w - self.log_w)
        self.proposal = _Point(*_select(take, t.proposal, self.proposal))
        self.log_w = torch.where(ok, torch.logaddexp(self.log_w, t.log_w), self.log_w)
        self.rho = torch.where(ok[:, None], self.rho + t.rho, self.rho)
        forward = self.direction > 0
        self.right = _Edge(*_select(done & forward, t.front, self.right))
        self.left = _Edge(*_select(done & ~forward, t.front, self.left))
        self.depth = self.depth + done.long()
        # generalised U-turn over the whole trajectory (Betancourt 2017, eq. A.2)
        turned = util.is_turning(self.inv_mass * self.left.r, self.inv_mass * self.right.r, self.rho)
        stop = done & (rejected | turned | (self.depth >= self.config.max_tree_depth))
        if stop.any():
            self._finish_transitions(stop, diverging)
        more = done & ~stop
        if more.any():
            self._start_subtrees(more)

    def _finish_transitions(self, mask: Tensor, diverging: Tensor) -> None:
        """Record the draws of chains in ``mask``, adapt during warm-up, start their next transitions."""
        it = self.iteration
        live = mask & (it < self.total)
        # leaves: 1 + 2 + ... + 2**(depth - 2) in the accepted doublings, plus the last subtree's
        n_leapfrog = (1 << (self.depth - 1).clamp(min=0)) - 1 + self.tree.leaf
        accept_prob = self.tree.sum_accept / n_leapfrog.clamp(min=1)
        self.num_leapfrog = self.num_leapfrog + torch.where(live, n_leapfrog, 0)
        self.completed += int(live.sum())
        keep = live & (it >= self.config.num_warmup)
        if keep.any():
            rows = self.arange[keep]
            cols = it[keep] - self.config.num_warmup
            self.draws[rows, cols] = self.proposal.z[keep]
            values = {
                "diverging": diverging,
                "lp": self.proposal.logp,
                "energy": self.proposal.energy,
                "step_size": self.transition_step_size,
                "tree_depth": self.depth,
                "n_steps": n_leapfrog,
                "acceptance_rate": accept_prob,
            }
            for name, value in values.items():
                self.stats[name][rows, cols] = value[keep].to(self.dtype)
        warm = live & (it < self.config.num_warmup)
        if warm.any():
            self._adapt(warm, accept_prob)
        self.iteration = it + live.long()
        self._start_transitions(mask)

    def _adapt(self, mask: Tensor, accept_prob: Tensor) -> None:
        """Dual averaging of the step size; the metric at the end of each slow window."""
        it = self.iteration
        da = util.dual_averaging_update(self.da, accept_prob, self.config.target_accept_prob)
        self.da = util.DualAveraging(*_select(mask, da, self.da))
        self.step_size = torch.where(mask, self.da.log_step.exp(), self.step_size)
        window = mask & self.in_window[it]
        if window.any():  # Welford's running mean and sum of squared deviations
            n = self.welford_n + window.to(self.dtype)
            z = self.proposal.z
            delta = z - self.welford_mean
            mean = self.welford_mean + delta / n.clamp(min=1)[:, None]
            m2 = self.welford_m2 + delta * (z - mean)
            self.welford_n, self.welford_mean, self.welford_m2 = _select(
                window, (n, mean, m2), (self.welford_n, self.welford_mean, self.welford_m2)
            )
        ended = mask & self.window_end[it]
        if ended.any():
            inv_mass = util.regularized_variance(self.welford_m2, self.welford_n)
            self.inv_mass = torch.where(ended[:, None], inv_mass, self.inv_mass)
            zeros = (torch.zeros_like(self.welford_n), torch.zeros_like(self.welford_mean), torch.zeros_like(self.welford_m2))
            self.welford_n, self.welford_mean, self.welford_m2 = _select(
                ended, zeros, (self.welford_n, self.welford_mean, self.welford_m2)
            )
            # a new metric needs a new step size: re-initialise it and restart dual averaging (Stan)
            self.step_size = self._find_step_size(self.step_size, ended)
            self.da = util.DualAveraging(*_select(ended, util.dual_averaging_init(self.step_size), self.da))
        last = mask & (it == self.config.num_warmup - 1)
        if last.any():  # warm-up ends: use the averaged iterate
            self.step_size = torch.where(last, self.da.log_step_avg.exp(), self.step_size)

    @property
    def finished(self) -> bool:
        return self.completed == self.chains * self.total  # a Python count: no tensor sync per step

    def state(self) -> NUTSState:
        return NUTSState(self.proposal.z.clone(), self.step_size.clone(), self.inv_mass.clone())


def sample_nuts(
    log_density: LogDensity,
    init: Tensor,
    config: NUTSConfig,
    *,
    seed: int,
    step_size: Tensor | None = None,
    inverse_mass: Tensor | None = None,
    compile: bool = False,
) -> NUTSOutput:
    """Run batched NUTS on a flat log-density.

    :param log_density: maps ``u`` of shape ``(chains, dim)`` to ``(log p(u), grad log p(u))``,
        shaped ``(chains,)`` and ``(chains, dim)``; rows must not interact.
    :param Tensor init: initial positions, ``(chains, dim)``; the number of rows is the number of chains.
    :param NUTSConfig config: warm-up and draws per chain, target acceptance, maximum tree depth.
    :param int seed: seeds the momenta, directions and Metropolis choices.
    :param Tensor step_size: initial step size per chain (default: Stan's heuristic from 1).
    :param Tensor inverse_mass: initial diagonal inverse mass matrix, ``(chains, dim)`` (default: ones).
    :param bool compile: fuse the leapfrog step, the log density and the tree bookkeeping with
        ``torch.compile`` (worth its compilation time on long runs of larger models).
    :returns: a :class:`NUTSOutput` with unconstrained draws ``(chains, draws, dim)``.

    Example: a standard normal in 3 dimensions.

    >>> cfg = NUTSConfig(num_warmup=100, num_samples=200, num_chains=2, target_accept_prob=0.8,
    ...                  max_tree_depth=10, progress_bar=False)
    >>> out = sample_nuts(lambda u: (-0.5 * (u * u).sum(-1), -u), torch.zeros(2, 3), cfg, seed=0)
    >>> out.draws.shape, out.sample_stats["diverging"].shape
    (torch.Size([2, 200, 3]), torch.Size([2, 200]))
    >>> float(out.draws.var())  # doctest: +SKIP
    1.03
    """
    with _progress(config, init.shape[0]) as report:
        return _sample(log_density, init, config, seed, step_size, inverse_mass, compile, report)


def _sample(
    log_density: LogDensity,
    init: Tensor,
    config: NUTSConfig,
    seed: int,
    step_size: Tensor | None,
    inverse_mass: Tensor | None,
    compile: bool,
    report: Callable[[int], None] | None,
) -> NUTSOutput:
    """:func:`sample_nuts` without its progress bar: ``report(n)`` hears of ``n`` more finished iterations."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sampler = _Sampler(log_density, init.detach(), config, generator, step_size, inverse_mass, compile)
        reported = 0
        while not sampler.finished:
            sampler.step()
            if report is not None and sampler.completed > reported:
                report(sampler.completed - reported)
                reported = sampler.completed
    return NUTSOutput(sampler.draws, typed_stats(sampler.stats), sampler.state(), sampler.num_gradients, sampler.num_leapfrog)


def _warn_about(stats: dict[str, Tensor], config: NUTSConfig, stacklevel: int) -> None:
    divergences = int(stats["diverging"].sum())
    if divergences:
        warnings.warn(
            f"{divergences} of {stats['diverging'].numel()} draws diverged; the posterior is not "
            "explored reliably. Raise target_accept_prob (e.g. 0.95) or reparametrise the model.",
            RuntimeWarning,
            stacklevel=stacklevel + 1,
        )
    saturated = float((stats["tree_depth"] >= config.max_tree_depth).double().mean())
    if saturated > TREE_DEPTH_WARN_FRACTION:
        warnings.warn(
            f"{saturated:.0%} of draws reached max_tree_depth={config.max_tree_depth}, so their "
            "trajectories were cut short. Raise max_tree_depth, or run longer warm-up.",
            RuntimeWarning,
            stacklevel=stacklevel + 1,
        )


def _use_compile(density: FlatLogDensity, chains: int) -> bool:
    """Whether ``torch.compile`` pays for itself: the ``"mlp"`` kernel on a large enough model."""
    work = density.x.shape[0] * density.dim * chains
    return density.kernel == "mlp" and work >= COMPILE_MIN_WORK


@contextmanager
def _progress(config: NUTSConfig, chains: int) -> Iterator[Callable[[int], None] | None]:
    """A progress bar over every iteration of ``chains`` chains: its ``update``, or ``None`` when it is off."""
    enabled = progress_enabled(config.progress_bar)
    total = chains * (config.num_warmup + config.num_samples)
    with make_progress_bar(total, desc="NUTS (flat)", enabled=enabled) as bar:
        yield bar.update if enabled else None


@contextmanager
def _torch_threads(num: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(num)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def sample_bnn(model: BNN, x: Tensor, y: Tensor, config: NUTSConfig, seed: int) -> tuple[ChainOutput, NUTSOutput]:
    """Compile ``model`` to a flat log-density and sample it with batched NUTS.

    Chains start from independent prior draws (as the ``"pyro"`` backend does). They are split
    into ``config.num_workers`` groups as evenly as possible, and the groups run side by side:
    this process runs the first and forked worker processes the others (one after another where
    ``fork`` does not exist, with the same draws). Every group runs on one torch thread with its
    chains batched: on small tensors a second thread makes each gradient several times slower
    (1.6 ms with one thread against 14 ms with two, 4 chains of an 8-50-1 BNN with 1000 points),
    while a second process on the second core nearly halves the time per gradient.

    The inner loop is compiled with ``torch.compile`` when one gradient of all chains costs at
    least :data:`COMPILE_MIN_WORK` multiply-adds. The initial positions are drawn with ``seed``,
    and group ``g`` samples with the ``g``-th seed spawned from it (``numpy.random.SeedSequence``),
    so the draws depend on ``seed`` and ``num_workers``.

    :returns: the draws and statistics in the layout ``fit_nuts`` expects, and the raw output
        (unconstrained draws, gradient counts, adapted state).
    """
    density = compile_bnn(model, x, y)
    init = density.sample_prior(config.num_chains, torch.Generator().manual_seed(seed))
    groups = init.tensor_split(config.num_workers)
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(len(groups))]
    compile = _use_compile(density, config.num_chains)
    jobs = [
        partial(_sample, density.value_and_grad, group, config, group_seed, None, None, compile)
        for group, group_seed in zip(groups, seeds)
    ]
    with _torch_threads(1), _progress(config, config.num_chains) as report:
        out = _concatenate(run_jobs(jobs, report=report))
    return ChainOutput(density.unpack(out.draws), out.sample_stats), out


def _concatenate(outputs: list[NUTSOutput]) -> NUTSOutput:
    """The outputs of groups of chains as one output, chains in group order."""
    if len(outputs) == 1:
        return outputs[0]
    return NUTSOutput(
        draws=torch.cat([o.draws for o in outputs]),
        sample_stats={name: torch.cat([o.sample_stats[name] for o in outputs]) for name in outputs[0].sample_stats},
        state=NUTSState(*(torch.cat(parts) for parts in zip(*(o.state for o in outputs)))),
        num_gradients=sum(o.num_gradients for o in outputs),
        num_leapfrog=torch.cat([o.num_leapfrog for o in outputs]),
    )


def run_flat_nuts(model: BNN, x: Tensor, y: Tensor, config: NUTSConfig, seed: int) -> ChainOutput:
    """The ``"flat"`` backend of :func:`~probgen.infer.mcmc.fit_nuts`: :func:`sample_bnn`.

    Warns, at the caller of ``fit_nuts``, about divergences and about draws whose trees
    reached ``max_tree_depth``.
    """
    chains, out = sample_bnn(model, x, y, config, seed)
    _warn_about(out.sample_stats, config, stacklevel=_CALLER_STACKLEVEL)
    return chains
