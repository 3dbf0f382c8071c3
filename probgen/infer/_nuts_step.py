"""One iteration of probgen's batched NUTS as a pure function of the chains' state.

Every chain is a small state machine (which doubling of which transition it is in, how many
leaves of the current subtree it has built), and one iteration takes one leapfrog step for every
chain at once. The state holds the next step's landing point, :attr:`Chains.pending_z` (its half
kick and drift are done). The caller evaluates the log density there, and :func:`iterate` maps
the state of all chains, that density and its gradient, the random numbers of the iteration
(drawn by the caller, :class:`Noise`) and the run's constants (:class:`Tables`) to the next state
and what to record (:class:`Emit`). It knows nothing of the model, and is written as a
composition of masked updates over chains:

1. :func:`land` completes the leapfrog step and adds its leaf to every chain's subtree
   (multinomial choice within the subtree, U-turn checks against the momentum checkpoints);
2. :func:`finish_subtrees` merges the finished subtrees into their trajectories (biased
   progressive sampling) and decides which transitions stop;
3. the transitions that stop end (the draw and its statistics), and :func:`adapt` runs the
   warm-up's dual averaging of the step size and Welford estimate of the diagonal metric;
4. :func:`start_transitions` draws fresh momenta, :func:`start_subtrees` opens the next doubling
   in a random direction, and :func:`advance` takes the next step's half kick and drift.

There are no data-dependent branches, so an iteration can be captured once and compiled into a
few C++ loops; the run's sizes travel as tensors (:class:`Tables`), so one compiled iteration
serves every run and every model with the same numbers of chains and dimensions. Run eagerly,
``skip_empty=True`` skips the steps whose mask selects no chain, which gives the same result
with less work. The one step that needs a loop, Stan's step-size search after the metric changes
at the end of a slow window, is flagged in :attr:`Emit.window_ended` and run by the caller
(:func:`restart_adaptation`).

References:
    Hoffman, M. D. and Gelman, A. (2014). The No-U-Turn Sampler: adaptively setting path
    lengths in Hamiltonian Monte Carlo. JMLR 15, 1593-1623.
    Betancourt, M. (2017). A conceptual introduction to Hamiltonian Monte Carlo.
    arXiv:1701.02434 (multinomial sampling, generalised U-turn criterion, appendix A).
    Phan, D., Pradhan, N. and Jankowiak, M. (2019). Composable effects for flexible and
    accelerated probabilistic programming in NumPyro. arXiv:1912.11554 (iterative NUTS).
    Stan Development Team. Stan Reference Manual, "HMC algorithm parameters" (adaptation windows).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from probgen.infer import _nuts_util as util

__all__ = [
    "Point",
    "Edge",
    "Subtree",
    "Chains",
    "Tables",
    "Noise",
    "Emit",
    "tables",
    "advance",
    "land",
    "iterate",
    "find_step_size",
    "restart_adaptation",
    "start_chains",
    "MAX_DELTA_ENERGY",
    "MAX_WINDOWS",
]

#: An energy error above this marks a divergent transition (as Stan and Pyro).
MAX_DELTA_ENERGY = 1000.0
#: Room for Stan's slow windows (a warm-up of a million iterations has 15).
MAX_WINDOWS = 24

LogDensity = Callable[[Tensor], tuple[Tensor, Tensor]]


class Point(NamedTuple):
    """Position, log density, gradient and Hamiltonian (with the momentum it had) of every chain."""

    z: Tensor
    logp: Tensor
    grad: Tensor
    energy: Tensor


class Edge(NamedTuple):
    """One end of every chain's trajectory: position, momentum and gradient."""

    z: Tensor
    r: Tensor
    grad: Tensor


class Subtree(NamedTuple):
    """Every chain's subtree under construction, carried by :func:`land` from leaf to leaf.

    :ivar Edge front: the last leaf, from which the next leapfrog step starts.
    :ivar Point proposal: the multinomial draw among the subtree's leaves so far.
    :ivar Tensor log_w: log of the summed weights ``exp(H0 - H)`` of its leaves.
    :ivar Tensor rho: the sum of its leaves' momenta.
    :ivar Tensor ck_v: ``M^{-1} p`` at the checkpoint leaves, ``(chains, slots, dim)``.
    :ivar Tensor ck_d: ``p - rho`` at the checkpoint leaves (``rho`` up to and including them).
    :ivar Tensor ck_a: ``ck_v . ck_d``, ``(chains, slots)``.
    :ivar Tensor leaf: leaves built so far (long).
    :ivar Tensor sum_accept: the transition's summed acceptance probabilities ``min(1, exp(H0 - H))``.
    """

    front: Edge
    proposal: Point
    log_w: Tensor
    rho: Tensor
    ck_v: Tensor
    ck_d: Tensor
    ck_a: Tensor
    leaf: Tensor
    sum_accept: Tensor


class Chains(NamedTuple):
    """The whole state of every chain between two iterations (every field leads with the chain dim).

    :ivar Subtree tree: the subtree under construction.
    :ivar Point proposal: the transition's draw so far.
    :ivar Edge left: the trajectory's backward end; ``right``: its forward end.
    :ivar Tensor h0: the Hamiltonian at the start of the transition.
    :ivar Tensor log_w: the trajectory's summed log weights; ``rho``: its summed momenta.
    :ivar Tensor depth: doublings so far (long); ``size``: leaves of the current subtree (long).
    :ivar Tensor direction: ``+1`` or ``-1``, the current doubling's direction.
    :ivar Tensor half_eps: ``step_size * direction / 2``, ``(chains, 1)``.
    :ivar Tensor eps_inv_mass: ``step_size * direction * M^{-1}``, ``(chains, dim)``.
    :ivar Tensor transition_step_size: the step size of the current transition.
    :ivar Tensor iteration: transitions finished (long); ``num_leapfrog``: leapfrog steps so far (long).
    :ivar Tensor step_size: the adapted step size; ``da``: its dual-averaging state.
    :ivar Tensor inv_mass: the diagonal inverse metric, ``(chains, dim)``.
    :ivar Tensor welford_n: draws in the current slow window; ``welford_mean``, ``welford_m2``: Welford's sums.
    :ivar Tensor pending_z: where the next leapfrog step lands (its half kick and drift are done);
        the log density and its gradient are needed there.
    :ivar Tensor pending_r: the momentum after that half kick.
    """

    tree: Subtree
    proposal: Point
    left: Edge
    right: Edge
    h0: Tensor
    log_w: Tensor
    rho: Tensor
    depth: Tensor
    size: Tensor
    direction: Tensor
    half_eps: Tensor
    eps_inv_mass: Tensor
    transition_step_size: Tensor
    iteration: Tensor
    num_leapfrog: Tensor
    step_size: Tensor
    da: util.DualAveraging
    inv_mass: Tensor
    welford_n: Tensor
    welford_mean: Tensor
    welford_m2: Tensor
    pending_z: Tensor
    pending_r: Tensor


class Tables(NamedTuple):
    """Constants of a run, as tensors: inputs rather than constants of a compiled iteration, so
    that one compiled iteration serves every run with the same numbers of chains and dimensions.

    :ivar Tensor check_table: ``(leaves, slots)``: the checkpoints that leaf ``n`` is compared with.
    :ivar Tensor store_table: ``(leaves, slots)``: the slot that stores leaf ``n`` (even leaves).
    :ivar Tensor windows: ``(MAX_WINDOWS, 2)`` long: Stan's slow windows ``[start, stop)``, padded with ``(-1, -1)``.
    :ivar Tensor limits: ``(3,)`` long: ``num_warmup``, ``num_warmup + num_samples`` and ``max_tree_depth``.
    :ivar Tensor target: ``(1,)``: the dual averaging's ``target_accept_prob``.
    """

    check_table: Tensor
    store_table: Tensor
    windows: Tensor
    limits: Tensor
    target: Tensor


class Noise(NamedTuple):
    """The random numbers of one iteration, drawn by the caller.

    :ivar Tensor normal: standard normals for a fresh momentum, ``(chains, dim)``.
    :ivar Tensor uniform: uniforms ``(3, chains)``: the multinomial choice of the new leaf, the
        choice between subtree and trajectory, and the next doubling's direction.
    """

    normal: Tensor
    uniform: Tensor


class Emit(NamedTuple):
    """What one iteration hands back besides the state.

    :ivar Tensor record: chains whose transition ended in the sampling phase (their draw is kept).
    :ivar Tensor draw_index: the index of that draw among the kept ones.
    :ivar Tensor z: the draw. :ivar Tensor logp: its log density. :ivar Tensor energy: its Hamiltonian.
    :ivar Tensor step_size: the transition's step size. :ivar Tensor tree_depth: its doublings.
    :ivar Tensor n_steps: its leapfrog steps. :ivar Tensor acceptance_rate: its mean acceptance.
    :ivar Tensor diverging: whether it diverged.
    :ivar Tensor window_ended: chains whose slow window ended (their step size must be searched).
    :ivar Tensor flags: ``(3,)`` long: whether any draw is recorded, whether any window ended, and
        how many transitions ended this iteration (one tensor, so that one read syncs them all).
    """

    record: Tensor
    draw_index: Tensor
    z: Tensor
    logp: Tensor
    energy: Tensor
    step_size: Tensor
    tree_depth: Tensor
    n_steps: Tensor
    acceptance_rate: Tensor
    diverging: Tensor
    window_ended: Tensor
    flags: Tensor


def _where(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``where(mask, a, b)`` with ``mask`` indexing chains and broadcast to the shape of ``a``."""
    return torch.where(mask.view((-1,) + (1,) * (a.dim() - 1)), a, b)


def _select(mask: Tensor, a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> list[Tensor]:
    """``where(mask, a_i, b_i)`` for each pair; ``mask`` indexes chains and broadcasts to each shape."""
    return [_where(mask, x, y) for x, y in zip(a, b)]


def tables(
    num_warmup: int, total: int, max_tree_depth: int, target_accept_prob: float, dtype: torch.dtype, device: torch.device
) -> Tables:
    """The checkpoint tables of the iterative U-turn checks, Stan's slow windows and the run's limits, on ``device``."""
    lo, hi = (table.to(device) for table in util.checkpoint_tables(max_tree_depth))
    slots = torch.arange(max(max_tree_depth - 1, 1), device=device)
    slow = util.slow_windows(num_warmup)
    if len(slow) > MAX_WINDOWS:
        raise ValueError(f"num_warmup={num_warmup} has more than {MAX_WINDOWS} slow adaptation windows.")
    windows = torch.full((MAX_WINDOWS, 2), -1, dtype=torch.long, device=device)
    if slow:
        windows[: len(slow)] = torch.tensor(slow, device=device)
    check = (slots >= lo[:, None]) & (slots <= hi[:, None])
    store = (lo[:, None] > hi[:, None]) & (slots == hi[:, None])
    limits = torch.tensor([num_warmup, total, max_tree_depth], device=device)
    return Tables(check, store, windows, limits, torch.tensor([target_accept_prob], dtype=dtype, device=device))


def advance(s: Chains) -> Chains:
    """The first half of every chain's next leapfrog step: the half kick and the drift.

    The log density is then needed at :attr:`Chains.pending_z`; :func:`land` completes the step.
    """
    front = s.tree.front
    r = torch.addcmul(front.r, s.half_eps, front.grad)
    z = torch.addcmul(front.z, s.eps_inv_mass, r)
    return s._replace(pending_z=z, pending_r=r)


def land(
    s: Chains, logp: Tensor, grad: Tensor, log_u: Tensor, check_table: Tensor, store_table: Tensor
) -> tuple[Subtree, Tensor, Tensor, Tensor]:
    """Complete every chain's pending leapfrog step and add its leaf to the chain's subtree.

    :param Tensor logp: the log density at ``s.pending_z``; ``grad``: its gradient there.
    :param Tensor log_u: ``log(uniform)`` per chain for the multinomial choice.
    :param Tensor check_table: ``(leaves, slots)``: the checkpoints that leaf ``n`` is compared with.
    :param Tensor store_table: ``(leaves, slots)``: the slot that stores leaf ``n`` (even leaves).
    :returns: the extended subtrees, and per chain whether the subtree is finished, whether it
        is rejected (a U-turn inside it, or a divergence) and whether it diverged.
    """
    # 1. the leapfrog step's second half kick (Hoffman & Gelman 2014, Alg. 1)
    tree, inv_mass, h0, size = s.tree, s.inv_mass, s.h0, s.size
    z = s.pending_z
    r = torch.addcmul(s.pending_r, s.half_eps, grad)
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
    proposal = Point(*_select(take, (z, logp, grad, energy), tree.proposal))
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
    new = Subtree(Edge(z, r, grad), proposal, log_w, rho, ck_v, ck_d, ck_a, leaf, sum_accept)
    return new, done, rejected, diverging


def start_transitions(s: Chains, mask: Tensor, normal: Tensor) -> Chains:
    """Fresh momentum and a one-point trajectory at the current draw, for chains in ``mask``."""
    p = s.proposal
    r = normal / s.inv_mass.sqrt()
    h0 = torch.where(mask, util.kinetic_energy(r, s.inv_mass) - p.logp, s.h0)
    edge = Edge(p.z, r, p.grad)
    log_w, rho, depth, transition_step_size = _select(
        mask,
        (torch.zeros_like(s.log_w), r, torch.zeros_like(s.depth), s.step_size),
        (s.log_w, s.rho, s.depth, s.transition_step_size),
    )
    return s._replace(
        h0=h0,
        proposal=p._replace(energy=torch.where(mask, h0, p.energy)),  # the start is a candidate draw
        left=Edge(*_select(mask, edge, s.left)),
        right=Edge(*_select(mask, edge, s.right)),
        log_w=log_w,
        rho=rho,
        depth=depth,
        transition_step_size=transition_step_size,
        tree=s.tree._replace(sum_accept=torch.where(mask, 0.0, s.tree.sum_accept)),
    )


def start_subtrees(s: Chains, mask: Tensor, uniform: Tensor) -> Chains:
    """A new doubling for chains in ``mask``: a random direction, from that end of the trajectory."""
    direction = torch.where(mask, torch.where(uniform < 0.5, -1.0, 1.0).to(s.direction), s.direction)
    forward = direction > 0
    start = Edge(*_select(forward, s.right, s.left))
    eps = s.transition_step_size * direction
    t = s.tree
    log_w, rho, leaf = _select(
        mask,
        (torch.full_like(t.log_w, -math.inf), torch.zeros_like(t.rho), torch.zeros_like(t.leaf)),
        (t.log_w, t.rho, t.leaf),
    )
    return s._replace(
        direction=direction,
        tree=t._replace(front=Edge(*_select(mask, start, t.front)), log_w=log_w, rho=rho, leaf=leaf),
        size=torch.where(mask, 1 << s.depth, s.size),
        half_eps=_where(mask, 0.5 * eps[:, None], s.half_eps),
        eps_inv_mass=_where(mask, eps[:, None] * s.inv_mass, s.eps_inv_mass),
    )


def finish_subtrees(
    s: Chains, done: Tensor, rejected: Tensor, log_u: Tensor, max_tree_depth: Tensor
) -> tuple[Chains, Tensor]:
    """Merge finished subtrees into their trajectories; returns the state and which transitions stop."""
    ok = done & ~rejected
    t = s.tree
    # biased progressive sampling across doublings: take the subtree's draw with
    # probability min(1, w_subtree / w_trajectory) (Betancourt 2017, A.3.2)
    take = ok & (log_u < t.log_w - s.log_w)
    forward = s.direction > 0
    right = Edge(*_select(done & forward, t.front, s.right))
    left = Edge(*_select(done & ~forward, t.front, s.left))
    rho = _where(ok, s.rho + t.rho, s.rho)
    depth = s.depth + done.long()
    # generalised U-turn over the whole trajectory (Betancourt 2017, eq. A.2)
    turned = util.is_turning(s.inv_mass * left.r, s.inv_mass * right.r, rho)
    stop = done & (rejected | turned | (depth >= max_tree_depth))
    s = s._replace(
        proposal=Point(*_select(take, t.proposal, s.proposal)),
        log_w=torch.where(ok, torch.logaddexp(s.log_w, t.log_w), s.log_w),
        rho=rho,
        left=left,
        right=right,
        depth=depth,
    )
    return s, stop


def _slow_window(iteration: Tensor, windows: Tensor) -> tuple[Tensor, Tensor]:
    """Per chain: whether its warm-up iteration lies in a slow window, and whether it ends one."""
    it = iteration[:, None]
    inside = ((it >= windows[:, 0]) & (it < windows[:, 1])).any(-1)
    ends = ((it == windows[:, 1] - 1) & (windows[:, 1] > 0)).any(-1)
    return inside, ends


def adapt(s: Chains, mask: Tensor, accept_prob: Tensor, k: Tables) -> tuple[Chains, Tensor]:
    """Dual averaging of the step size; the metric at the end of each slow window.

    :returns: the state, and the chains whose window ended: their step size must be searched
        again (:func:`restart_adaptation`) and their dual averaging restarted.
    """
    da = util.dual_averaging_update(s.da, accept_prob, k.target)
    da = util.DualAveraging(*_select(mask, da, s.da))
    step_size = torch.where(mask, da.log_step.exp(), s.step_size)
    # Welford's running mean and sum of squared deviations in the slow windows
    inside, ends = _slow_window(s.iteration, k.windows)
    window = mask & inside
    n = s.welford_n + window.to(s.welford_n.dtype)
    z = s.proposal.z
    delta = z - s.welford_mean
    mean = s.welford_mean + delta / n.clamp(min=1)[:, None]
    m2 = s.welford_m2 + delta * (z - mean)
    n, mean, m2 = _select(window, (n, mean, m2), (s.welford_n, s.welford_mean, s.welford_m2))
    ended = mask & ends
    inv_mass = _where(ended, util.regularized_variance(m2, n), s.inv_mass)
    n, mean, m2 = _select(ended, (torch.zeros_like(n), torch.zeros_like(mean), torch.zeros_like(m2)), (n, mean, m2))
    # warm-up ends: use the averaged iterate
    last = mask & (s.iteration == k.limits[0] - 1)
    step_size = torch.where(last, da.log_step_avg.exp(), step_size)
    s = s._replace(da=da, step_size=step_size, inv_mass=inv_mass, welford_n=n, welford_mean=mean, welford_m2=m2)
    return s, ended


def iterate(
    s: Chains, logp: Tensor, grad: Tensor, noise: Noise, k: Tables, *, skip_empty: bool = False
) -> tuple[Chains, Emit]:
    """One leapfrog step of every chain, and whatever bookkeeping it completes (see the module docstring).

    :param Tensor logp: the log density at ``s.pending_z``, ``(chains,)``.
    :param Tensor grad: its gradient, ``(chains, dim)``.
    :param bool skip_empty: skip the masked steps that select no chain (eager runs); ``False``
        runs every step, which a captured graph needs.
    """

    def needed(mask: Tensor) -> bool:
        return not skip_empty or bool(mask.any())

    num_warmup, total, max_tree_depth = k.limits[0], k.limits[1], k.limits[2]
    log_u = noise.uniform[:2].log()
    # 1. one leaf for every chain's subtree
    tree, done, rejected, diverging = land(s, logp, grad, log_u[0], k.check_table, k.store_table)
    s = s._replace(tree=tree)
    none = torch.zeros_like(done)
    stop, more = none, none
    # 2. finished subtrees join their trajectories; some transitions stop
    if needed(done):
        s, stop = finish_subtrees(s, done, rejected, log_u[1], max_tree_depth)
        more = done & ~stop
    # 3. the transitions that stop: their draws, the warm-up's adaptation, a fresh momentum
    it = s.iteration
    live = stop & (it < total)
    # leaves: 1 + 2 + ... + 2**(depth - 2) in the accepted doublings, plus the last subtree's
    n_leapfrog = (1 << (s.depth - 1).clamp(min=0)) - 1 + s.tree.leaf
    accept_prob = s.tree.sum_accept / n_leapfrog.clamp(min=1)
    record = live & (it >= num_warmup)
    warm = live & (it < num_warmup)
    ended = none
    if needed(warm):
        s, ended = adapt(s, warm, accept_prob, k)
    emit = Emit(
        record=record,
        draw_index=(it - num_warmup).clamp(min=0),
        z=s.proposal.z,
        logp=s.proposal.logp,
        energy=s.proposal.energy,
        step_size=s.transition_step_size,
        tree_depth=s.depth,
        n_steps=n_leapfrog,
        acceptance_rate=accept_prob,
        diverging=diverging,
        window_ended=ended,
        flags=torch.stack([record.any().long(), ended.any().long(), live.sum()]),
    )
    s = s._replace(num_leapfrog=s.num_leapfrog + torch.where(live, n_leapfrog, 0), iteration=it + live.long())
    if needed(stop):
        s = start_transitions(s, stop, noise.normal)
    # 4. the next doubling, for transitions that go on and those that just started
    fresh = stop | more
    if needed(fresh):
        s = start_subtrees(s, fresh, noise.uniform[2])
    # 5. the next leapfrog step's half kick and drift
    return advance(s), emit


def find_step_size(
    log_density: LogDensity, s: Chains, mask: Tensor, step_size: Tensor, generator: torch.Generator
) -> Tensor:
    """Stan's step-size initialisation: double or halve until a one-step acceptance crosses 0.8.

    Runs on copies of the current draws of the chains in ``mask``; the others keep ``step_size``.
    """
    log_08 = math.log(0.8)
    eps = step_size.clone()
    start = s.proposal
    direction = torch.zeros_like(eps)
    active = mask.clone()
    for attempt in range(100):
        noise = torch.randn(start.z.shape, generator=generator, dtype=start.z.dtype, device=start.z.device)
        r = noise / s.inv_mass.sqrt()
        h0 = util.kinetic_energy(r, s.inv_mass) - start.logp
        e = eps[:, None]
        r_half = r + 0.5 * e * start.grad
        logp, grad = log_density(start.z + e * s.inv_mass * r_half)
        r_new = r_half + 0.5 * e * grad
        delta = h0 - (util.kinetic_energy(r_new, s.inv_mass) - logp)
        delta = torch.where(torch.isnan(delta), -math.inf, delta)
        if attempt == 0:  # the first probe picks the direction: grow while acceptance > 0.8
            direction = torch.where(delta > log_08, 1.0, -1.0).to(eps)
            continue
        active = active & torch.where(direction > 0, delta > log_08, delta < log_08)
        if not active.any():
            break
        eps = torch.where(active, eps * torch.pow(2.0, direction), eps)
    return torch.where(mask, eps, step_size)


def restart_adaptation(
    log_density: LogDensity, s: Chains, ended: Tensor, generator: torch.Generator
) -> Chains:
    """After a slow window: a new step size for the chains in ``ended``, and dual averaging restarted (Stan).

    Their new transitions (already started) take the new step size, and so does the pending step.
    """
    step_size = find_step_size(log_density, s, ended, s.step_size, generator)
    da = util.DualAveraging(*_select(ended, util.dual_averaging_init(step_size), s.da))
    transition = torch.where(ended, step_size, s.transition_step_size)
    eps = transition * s.direction
    s = s._replace(
        step_size=step_size,
        da=da,
        transition_step_size=transition,
        half_eps=_where(ended, 0.5 * eps[:, None], s.half_eps),
        eps_inv_mass=_where(ended, eps[:, None] * s.inv_mass, s.eps_inv_mass),
    )
    return advance(s)


def start_chains(
    log_density: LogDensity,
    init: Tensor,
    max_tree_depth: int,
    generator: torch.Generator,
    noise: Noise,
    step_size: Tensor | None = None,
    inverse_mass: Tensor | None = None,
) -> Chains:
    """The state of every chain before its first iteration, at ``init`` ``(chains, dim)``.

    :raises ValueError: if the log density is not finite at some initial position.
    """
    chains, dim = init.shape
    inv_mass = init.new_ones(chains, dim) if inverse_mass is None else inverse_mass.clone().to(init)
    logp, grad = log_density(init)
    if not torch.isfinite(logp).all():
        raise ValueError("the log density is not finite at the initial positions; try another seed or init.")
    zeros = init.new_zeros(chains)
    slots = max(max_tree_depth - 1, 1)
    edge = Edge(init, torch.zeros_like(init), grad)
    proposal = Point(init.clone(), logp, grad, -logp)
    long_zeros = torch.zeros(chains, dtype=torch.long, device=init.device)
    ones = init.new_ones(chains)
    s = Chains(
        tree=Subtree(
            front=edge,
            proposal=proposal,
            log_w=zeros,
            rho=torch.zeros_like(init),
            ck_v=init.new_zeros(chains, slots, dim),
            ck_d=init.new_zeros(chains, slots, dim),
            ck_a=init.new_zeros(chains, slots),
            leaf=long_zeros,
            sum_accept=zeros,
        ),
        proposal=proposal,
        left=edge,
        right=edge,
        h0=zeros,
        log_w=zeros,
        rho=torch.zeros_like(init),
        depth=long_zeros,
        size=torch.ones(chains, dtype=torch.long, device=init.device),
        direction=ones,
        half_eps=init.new_zeros(chains, 1),
        eps_inv_mass=torch.zeros_like(init),
        transition_step_size=ones,
        iteration=long_zeros,
        num_leapfrog=long_zeros,
        step_size=ones,
        da=util.dual_averaging_init(ones),
        inv_mass=inv_mass,
        welford_n=zeros,
        welford_mean=torch.zeros_like(init),
        welford_m2=torch.zeros_like(init),
        pending_z=init.clone(),
        pending_r=torch.zeros_like(init),
    )
    everyone = torch.ones(chains, dtype=torch.bool, device=init.device)
    if step_size is None:
        step_size = find_step_size(log_density, s, everyone, ones, generator)
    step_size = step_size.clone().to(init)
    s = s._replace(step_size=step_size, da=util.dual_averaging_init(step_size), transition_step_size=step_size)
    s = start_transitions(s, everyone, noise.normal)
    return advance(start_subtrees(s, everyone, noise.uniform[2]))
