"""probgen's own NUTS: every chain advanced by the same tensor operations.

:func:`sample_nuts` runs the No-U-Turn Sampler on any flat log-density ``u -> (log p(u), grad)``
evaluated on a batch ``u`` of shape ``(chains, dim)``; :func:`run_chains` runs it on a
:class:`~probgen.infer._flat.FlatLogDensity` with the chains split over worker processes. It is
the ``"flat"`` backend of :func:`~probgen.infer.mcmc.fit_nuts`, for probgen's BNNs and any Pyro
program alike: this module knows nothing about the model behind the density.

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
* One iteration is a pure function of the chains' state and the iteration's random numbers
  (:func:`probgen.infer._nuts_step.iterate`), with masks instead of data-dependent branches.
  Eagerly, the masked steps that select no chain are skipped. On long runs the whole iteration,
  log density included, is captured once and compiled by TorchInductor into a few C++ loops,
  which removes the Python and dispatch cost of the bookkeeping (about 0.8 ms per iteration
  eagerly on small models; see :data:`COMPILE_MIN_ITERATIONS` for when it is done).
* Compiled, iterations run in blocks: one compiled call loops (``torch``'s ``while_loop``) over
  iterations until one records a draw or ends a slow window, the two events that need Python, or
  until :data:`NOISE_BLOCK`'s random numbers are used up. The calls, argument checks and Python
  between leapfrog steps are paid once per block, not once per step, and the draws are those of
  one call per step. Blocks pay where the density is costly (:data:`BLOCK_MIN_WORK`).

All random numbers come from one ``torch.Generator`` seeded with ``seed``, drawn in blocks of
:data:`NOISE_BLOCK` iterations, so an eager and a compiled run see the same numbers. A run can be
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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.utils._pytree as pytree
from torch import Tensor

from probgen.infer import _nuts_step as step
from probgen.infer._capture import agrees, capture, compile_graph, lift_constants
from probgen.infer._flat import FlatLogDensity
from probgen.infer._progress import make_progress_bar, progress_enabled
from probgen.infer._workers import Report, Status, run_jobs

__all__ = [
    "sample_nuts",
    "run_chains",
    "chain_groups",
    "torch_threads",
    "NUTSConfig",
    "NUTSState",
    "NUTSOutput",
    "STAT_NAMES",
    "typed_stats",
    "MAX_DELTA_ENERGY",
    "COMPILE_MIN_ITERATIONS",
    "BLOCK_MIN_WORK",
    "uses_blocks",
    "NOISE_BLOCK",
]

#: Seconds between the statuses (phase, step size, divergences) a run sends its progress bar.
STATUS_INTERVAL = 0.5
#: Per-draw sampler statistics, under ArviZ's names, in the order every backend records them.
STAT_NAMES = ("diverging", "lp", "energy", "step_size", "tree_depth", "n_steps", "acceptance_rate")
#: An energy error above this marks a divergent transition (as Stan and Pyro).
MAX_DELTA_ENERGY = step.MAX_DELTA_ENERGY

#: With ``compile=None`` a run compiles when, after :data:`PROBE_ITERATIONS` eager iterations, the
#: rest of it is expected to take at least this many more (from the iterations per transition so
#: far). The break-even: an eager iteration costs at least 0.8 ms of bookkeeping (plus the density;
#: about 2 ms in all for eight schools), so 5000 of them take 4-10 s, against 15-20 s to compile the
#: sampler's iteration and a small model's density on a fresh machine (TorchInductor also builds its
#: headers there, about 13 s once) and 1-3 s once its disk cache holds them. The rule counts
#: iterations, not seconds, so that whether a run compiles depends on its seed and sizes alone.
COMPILE_MIN_ITERATIONS = 5000
#: Eager iterations run before deciding whether to compile.
PROBE_ITERATIONS = 200
#: Iterations whose random numbers are drawn at once; a compiled block runs at most this many.
NOISE_BLOCK = 256
#: :func:`run_chains` compiles in blocks (:func:`uses_blocks`) when one gradient of one chain costs at least this many
#: multiply-adds (:attr:`FlatLogDensity.work`). Where the density is cheap, a block saves little per
#: iteration (eight schools: about 80 µs either way) and costs 1-2.5 s more per process to capture and
#: load: Pyro programs of work 10-14 ran 0.60-0.79x as fast with blocks. The README's BNN (work about
#: 15,000) took 12.2 s against 14.0 s, and an 8-50-1 BNN on 1000 points (about 500,000) ran 1.06-1.15x
#: as fast (benchmarks/README.md). The threshold lies between the measured sides. The benchmarks' rows
#: ``probgen-single`` raise it past every density to call the compiled iteration once per step.
BLOCK_MIN_WORK = 10_000

LogDensity = Callable[[Tensor], tuple[Tensor, Tensor]]


class NUTSConfig(NamedTuple):
    """Settings shared by every NUTS backend.

    :ivar int num_warmup: adaptation iterations per chain (step size and diagonal mass matrix).
    :ivar int num_samples: kept draws per chain.
    :ivar int num_chains: independent chains.
    :ivar float target_accept_prob: dual-averaging target for the mean acceptance probability.
    :ivar int max_tree_depth: cap on tree doublings (at most ``2**max_tree_depth - 1`` leapfrog steps).
    :ivar bool progress_bar: show a progress bar (off when ``CI`` is set).
    :ivar int num_workers: processes that run the chains side by side, each with its share of
        the chains (at most ``num_chains``); ``1`` runs every chain in this process.
    """

    num_warmup: int
    num_samples: int
    num_chains: int
    target_accept_prob: float
    max_tree_depth: int
    progress_bar: bool
    num_workers: int = 1


def typed_stats(stats: dict[str, Tensor]) -> dict[str, Tensor]:
    """Sample statistics with ArviZ's dtypes: ``diverging`` bool, ``tree_depth`` and ``n_steps`` integer."""
    typed = dict(stats)
    typed["diverging"] = stats["diverging"].bool()
    typed["tree_depth"] = stats["tree_depth"].long()
    typed["n_steps"] = stats["n_steps"].long()
    return typed


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
    :ivar bool compiled: whether the iterations ran compiled (from the start, or after the probe).
    """

    draws: Tensor
    sample_stats: dict[str, Tensor]
    state: NUTSState
    num_gradients: int
    num_leapfrog: Tensor
    compiled: bool = False


#: Emit fields recorded per draw, under their ArviZ names.
_RECORDED = {
    "diverging": "diverging",
    "lp": "logp",
    "energy": "energy",
    "step_size": "step_size",
    "tree_depth": "tree_depth",
    "n_steps": "n_steps",
    "acceptance_rate": "acceptance_rate",
}


class _Packer:
    """A tree of tensors that all lead with the chain dim, packed into one ``(chains, -1)`` tensor per dtype."""

    def __init__(self, tree: Any) -> None:
        leaves, self.treespec = pytree.tree_flatten(tree)
        self.dtypes = sorted({leaf.dtype for leaf in leaves}, key=str)
        offsets = dict.fromkeys(self.dtypes, 0)
        self.slots: list[tuple[int, int, int, torch.Size]] = []
        for leaf in leaves:
            size = leaf[0].numel() if leaf.dim() else 1
            start = offsets[leaf.dtype]
            self.slots.append((self.dtypes.index(leaf.dtype), start, start + size, leaf.shape))
            offsets[leaf.dtype] = start + size

    def pack(self, tree: Any) -> list[Tensor]:
        leaves = pytree.tree_leaves(tree)
        groups: list[list[Tensor]] = [[] for _ in self.dtypes]
        for leaf, (group, _, _, _) in zip(leaves, self.slots):
            groups[group].append(leaf.reshape(leaf.shape[0], -1))
        return [torch.cat(parts, dim=1) for parts in groups]

    def unpack(self, packed: Any) -> Any:
        leaves = [packed[group][:, start:stop].reshape(shape) for group, start, stop, shape in self.slots]
        return pytree.tree_unflatten(leaves, self.treespec)


class _LazyEmit:
    """A compiled iteration's :class:`~probgen.infer._nuts_step.Emit`, unpacked only when a field is read.

    Most iterations only need ``flags``; unpacking the rest costs more than the compiled kernel.
    """

    def __init__(self, packer: _Packer, packed: list[Tensor], flags: Tensor) -> None:
        self.packer, self.packed, self.flags = packer, packed, flags
        self._emit: step.Emit | None = None

    def __getattr__(self, name: str) -> Any:
        if self.__dict__.get("_emit") is None:
            self._emit = step.Emit._make([*self.packer.unpack(self.packed), self.flags])
        return getattr(self._emit, name)


class _Run:
    """One group of chains from start to finish: the state, the noise, the recorded draws, and the
    choice between eager and compiled iterations.

    An iteration evaluates the log density at the chains' pending positions, then runs
    :func:`~probgen.infer._nuts_step.iterate`. Compiled, both go into one loop that runs blocks of
    iterations (:meth:`_compile_block`); where the density cannot be captured whole (a program that
    branches on its values) or the loop does not compile, the iteration and the density are
    compiled apart and called once per step.

    :param compile: ``True`` compiles before the first iteration, ``False`` never, ``None`` after
        :data:`PROBE_ITERATIONS` eager iterations if the rest of the run is expected to take at least
        :data:`COMPILE_MIN_ITERATIONS` more.
    :param blocks: compile blocks of iterations (:meth:`_compile_block`) rather than one call per step.
    """

    def __init__(
        self,
        log_density: LogDensity,
        init: Tensor,
        config: NUTSConfig,
        seed: int,
        step_size: Tensor | None,
        inverse_mass: Tensor | None,
        compile: bool | None,
        blocks: bool = True,
    ) -> None:
        chains, dim = init.shape
        self.f = log_density
        self.chains, self.dim, self.dtype = chains, dim, init.dtype
        self.total = config.num_warmup + config.num_samples
        self.num_warmup = config.num_warmup
        self.tables = step.tables(
            config.num_warmup, self.total, config.max_tree_depth, config.target_accept_prob, init.dtype, init.device
        )
        self.gen = torch.Generator(init.device).manual_seed(seed)
        self.num_gradients = 0
        self._block: tuple[Tensor, Tensor] | None = None
        self._block_next = NOISE_BLOCK
        self.state = step.start_chains(
            self._counted, init, config.max_tree_depth, self.gen, self._noise(), step_size, inverse_mass
        )
        self.draws = init.new_zeros(chains, config.num_samples, dim)
        self.stats = {name: init.new_zeros(chains, config.num_samples) for name in STAT_NAMES}
        self.rows = torch.arange(chains, device=init.device)
        self.completed = 0  # transitions finished, summed over chains
        self.iterations = 0
        self.calls = 0  # iterations run one at a time, plus compiled blocks
        self.compile = compile
        self.blocks = blocks
        self._kernel: Callable[..., list[Tensor]] | None = None
        self._block_kernel: Callable[..., list[Tensor]] | None = None
        self._scalars: list[Tensor] = []  # a block's first index into the noise block, as a tensor
        self._density: LogDensity = log_density
        self._state_packer: _Packer | None = None
        self._emit_packer: _Packer | None = None
        self._packed: list[Tensor] = []
        self._pending: Tensor = self.state.pending_z

    # -- randomness and counting --------------------------------------------------------------

    def _counted(self, z: Tensor) -> tuple[Tensor, Tensor]:
        self.num_gradients += 1
        return self.f(z)

    def _noise_block(self) -> tuple[Tensor, Tensor]:
        """The current block of :data:`NOISE_BLOCK` iterations' random numbers, drawn when the last is used up."""
        if self._block is None or self._block_next == NOISE_BLOCK:
            gen, dtype = self.gen, self.dtype
            normal = torch.randn(NOISE_BLOCK, self.chains, self.dim, generator=gen, dtype=dtype, device=gen.device)
            uniform = torch.rand(NOISE_BLOCK, 3, self.chains, generator=gen, dtype=dtype, device=gen.device)
            self._block, self._block_next = (normal, uniform), 0
        return self._block

    def _noise(self) -> step.Noise:
        """The next iteration's random numbers."""
        normal, uniform = self._noise_block()
        index = self._block_next
        self._block_next += 1
        return step.Noise(normal[index], uniform[index])

    # -- iterations ---------------------------------------------------------------------------

    def _eager(self, noise: step.Noise) -> step.Emit:
        logp, grad = self.f(self.state.pending_z)
        self.state, emit = step.iterate(self.state, logp, grad, noise, self.tables, skip_empty=True)
        return emit

    def _fast(self, noise: step.Noise) -> step.Emit:
        assert self._kernel is not None and self._emit_packer is not None
        logp, grad = self._density(self._pending)
        n = len(self._packed)
        out = self._kernel(*self._packed, logp, grad, noise.normal, noise.uniform, *self.tables)
        self._packed, self._pending = list(out[:n]), out[n]
        return _LazyEmit(self._emit_packer, out[n + 1 : -1], out[-1])  # type: ignore[return-value]

    def _blocked(self) -> tuple[step.Emit, int, int]:
        """Iterations in one compiled call, up to the first that records a draw or ends a slow
        window, or to the end of the noise block; returns the last one's emit, the iterations
        run and the transitions they finished."""
        assert self._block_kernel is not None and self._emit_packer is not None
        normal, uniform = self._noise_block()
        start = self._block_next
        n = len(self._packed)
        out = self._block_kernel(*self._packed, normal, uniform, self._scalars[start], *self.tables)
        count, completed = out[0].tolist()
        self._packed = list(out[1 : n + 1])
        self._block_next += count
        emit = _LazyEmit(self._emit_packer, out[n + 1 : -1], out[-1])
        return emit, count, completed  # type: ignore[return-value]

    def _compile_block(self, density: torch.fx.GraphModule) -> bool:
        """Compile iterations, log density included, into one loop that runs until a draw is
        recorded, a slow window ends or the noise block is used up (see :meth:`_blocked`).

        Each of those events needs the caller (recording, Stan's step-size search), so a block
        runs exactly the iterations the one-at-a-time loop would, on the same random numbers, and
        hands back at the same points; only the Python and the calls in between are gone.
        """
        device = self.gen.device
        lifted, constants = lift_constants(density)  # the loop's body gets every tensor as an input
        normal, uniform = self._noise_block()
        logp, grad = self.f(self.state.pending_z)
        noise = step.Noise(normal[0], uniform[0])
        _, emit = step.iterate(self.state, logp, grad, noise, self.tables)
        state_packer, emit_packer = _Packer(self.state), _Packer(tuple(emit[:-1]))  # flags have no chain dim
        n = len(state_packer.dtypes)
        emit_template = emit_packer.pack(tuple(emit[:-1]))  # shapes and dtypes of the carried emit

        def cond(i: Tensor, halt: Tensor, completed: Tensor, *rest: Tensor) -> Tensor:
            start = rest[-1]
            return (i < NOISE_BLOCK - start) & ~halt

        def body(i: Tensor, halt: Tensor, completed: Tensor, *rest: Tensor) -> tuple[Tensor, ...]:
            # rest: the carried state and emit, then the inputs (noise, tables, the density's constants, start)
            carry, inputs = rest[: n + len(emit_template) + 1], rest[n + len(emit_template) + 1 :]
            normal, uniform, start = inputs[0], inputs[1], inputs[-1]
            tables = step.Tables(*inputs[2 : -1 - len(constants)])
            state = state_packer.unpack(carry[:n])
            logp, grad = lifted(state.pending_z, *inputs[-1 - len(constants) : -1])
            index = (start + i).reshape(1)
            noise = step.Noise(normal.index_select(0, index)[0], uniform.index_select(0, index)[0])
            new, out = step.iterate(state, logp, grad, noise, tables)
            flags = out.flags
            halt = (flags[0] > 0) | (flags[1] > 0)
            return (i + 1, halt, completed + flags[2], *state_packer.pack(new), *emit_packer.pack(tuple(out[:-1])), flags)

        def block(*flat: Tensor) -> tuple[Tensor, ...]:
            packed, normal, uniform, start, tables = flat[:n], flat[n], flat[n + 1], flat[n + 2], flat[n + 3 :]

            def zeros(*shape: int, dtype: torch.dtype = torch.long) -> Tensor:  # a fresh tensor per carried value
                return torch.zeros(shape, dtype=dtype, device=start.device)

            emitted = [torch.zeros_like(t) for t in emit_template]
            carry = (zeros(), zeros(dtype=torch.bool), zeros(), *packed, *emitted, zeros(3))
            # the operator itself, every tensor passed in: its Python wrapper would trace cond and
            # body through dynamo first, seconds per process that make_fx does not need
            out = torch.ops.higher_order.while_loop(cond, body, carry, (normal, uniform, *tables, *constants, start))
            return (torch.stack([out[0], out[2]]), *out[3:])

        self._scalars = [torch.tensor(i, device=device) for i in range(NOISE_BLOCK + 1)]
        example = [*state_packer.pack(self.state), normal, uniform, self._scalars[NOISE_BLOCK - 4], *self.tables]
        graph = capture(block, example)
        compiled = None if graph is None else compile_graph(graph, example, warn=False)  # checked against graph
        if compiled is None:
            return False
        self._block_kernel = compiled
        self._state_packer, self._emit_packer = state_packer, emit_packer
        self._packed = state_packer.pack(self.state)
        return True

    def _try_compile(self) -> None:
        """Capture and compile the sampler's iteration and the density; stay eager if that fails or disagrees.

        The state and the outputs travel packed, one tensor per dtype, because a compiled
        function's wrapper checks and allocates every argument and result: with the ~40 tensors of
        the state that cost more than the fused kernels themselves.
        """
        self.compile = False  # decided, whatever happens below
        # the density apart: captured at one point and checked at another, so that a program that
        # branches on its values (a capture records one path) keeps running eagerly
        pending, other = [self.state.pending_z], [self.state.proposal.z]
        density_graph = capture(self.f, pending, other)
        if self.blocks and density_graph is not None and self._compile_block(density_graph):
            return
        dtype, device = self.dtype, self.gen.device
        noise = step.Noise(
            torch.randn(self.chains, self.dim, dtype=dtype, device=device), torch.rand(3, self.chains, dtype=dtype, device=device)
        )
        logp, grad = self.f(self.state.pending_z)
        _, emit = step.iterate(self.state, logp, grad, noise, self.tables)
        state_packer, emit_packer = _Packer(self.state), _Packer(tuple(emit[:-1]))  # flags have no chain dim
        n = len(state_packer.dtypes)

        def kernel(*flat: Tensor) -> tuple[Tensor, ...]:
            state = state_packer.unpack(flat[:n])
            new, out = step.iterate(
                state, flat[n], flat[n + 1], step.Noise(flat[n + 2], flat[n + 3]), step.Tables(*flat[n + 4 :])
            )
            return (*state_packer.pack(new), new.pending_z, *emit_packer.pack(tuple(out[:-1])), out.flags)

        example = [*state_packer.pack(self.state), logp, grad, noise.normal, noise.uniform, *self.tables]
        graph = capture(kernel, example)
        compiled = None if graph is None else compile_graph(graph, example)
        if compiled is None or not agrees(compiled(*example), kernel(*example)):
            return
        density = None if density_graph is None else compile_graph(density_graph, pending)
        if density is not None and agrees(density(*other), self.f(*other)):
            self._density = lambda z, fn=density: tuple(fn(z))  # type: ignore[misc]
        self._kernel = compiled
        self._state_packer, self._emit_packer = state_packer, emit_packer
        self._packed = state_packer.pack(self.state)
        self._pending = self.state.pending_z

    def _state(self) -> step.Chains:
        if self._state_packer is not None:
            self.state = self._state_packer.unpack(self._packed)
        return self.state

    def _decide(self) -> None:
        """After the probe: compile if the rest of the run is expected to take at least
        :data:`COMPILE_MIN_ITERATIONS` iterations, from the iterations per transition so far."""
        self.compile = False
        transitions = max(self.completed / self.chains, 0.5)  # per chain
        remaining = (self.total - self.completed / self.chains) * self.iterations / transitions
        if remaining >= COMPILE_MIN_ITERATIONS:
            self._try_compile()

    def iterate(self) -> int:
        """One iteration of every chain (compiled: a block of them); returns the number of transitions finished."""
        if self._block_kernel is not None:
            emit, count, completed = self._blocked()
            any_record, any_ended, _ = emit.flags.tolist()
        else:
            noise = self._noise()
            emit = self._fast(noise) if self._kernel is not None else self._eager(noise)
            count = 1
            any_record, any_ended, completed = emit.flags.tolist()
        self.num_gradients += count
        self.iterations += count
        self.calls += 1
        if any_record:
            mask = emit.record
            rows, cols = self.rows[mask], emit.draw_index[mask]
            self.draws[rows, cols] = emit.z[mask]
            for name, field in _RECORDED.items():
                self.stats[name][rows, cols] = getattr(emit, field)[mask].to(self.dtype)
        if any_ended:
            state = step.restart_adaptation(self._counted, self._state(), emit.window_ended, self.gen)
            self.state = state
            if self._state_packer is not None:
                self._packed, self._pending = self._state_packer.pack(state), state.pending_z
        self.completed += int(completed)
        return int(completed)

    def status(self) -> dict[str, Any]:
        """Where the chains stand, for a progress bar: phase, median step size, divergences so far."""
        return {
            "warmup": self.completed < self.chains * self.num_warmup,
            "step_size": float(self._state().step_size.median()),
            "divergences": int(self.stats["diverging"].sum()),
        }

    def run(self, report: Report | None) -> NUTSOutput:
        if self.compile:
            self._try_compile()
        total = self.chains * self.total
        told = -math.inf
        while self.completed < total:
            done = self.iterate()
            if report is not None and done:
                now = time.monotonic()
                if now - told >= STATUS_INTERVAL or self.completed == total:
                    told = now
                    report(done, self.status())
                else:
                    report(done)
            if self.compile is None and self.iterations == PROBE_ITERATIONS:
                self._decide()
        state = self._state()
        return NUTSOutput(
            draws=self.draws,
            sample_stats=typed_stats(self.stats),
            state=NUTSState(state.proposal.z.clone(), state.step_size.clone(), state.inv_mass.clone()),
            num_gradients=self.num_gradients,
            num_leapfrog=state.num_leapfrog.clone(),
            compiled=self._kernel is not None or self._block_kernel is not None,
        )


def sample_nuts(
    log_density: LogDensity,
    init: Tensor,
    config: NUTSConfig,
    *,
    seed: int,
    step_size: Tensor | None = None,
    inverse_mass: Tensor | None = None,
    compile: bool | None = False,
    blocks: bool = True,
) -> NUTSOutput:
    """Run batched NUTS on a flat log-density.

    :param log_density: maps ``u`` of shape ``(chains, dim)`` to ``(log p(u), grad log p(u))``,
        shaped ``(chains,)`` and ``(chains, dim)``; rows must not interact. To be compiled it must
        be traceable by ``torch.fx`` (plain tensor code without branches on values).
    :param Tensor init: initial positions, ``(chains, dim)``; the number of rows is the number of chains.
    :param NUTSConfig config: warm-up and draws per chain, target acceptance, maximum tree depth.
    :param int seed: seeds the momenta, directions and Metropolis choices.
    :param Tensor step_size: initial step size per chain (default: Stan's heuristic from 1).
    :param Tensor inverse_mass: initial diagonal inverse mass matrix, ``(chains, dim)`` (default: ones).
    :param compile: capture one whole iteration (leapfrog step, log density, tree bookkeeping and
        adaptation) and compile it with TorchInductor: ``True`` from the start, ``None`` when a
        probe says the run is long enough to repay it (see :data:`COMPILE_MIN_ITERATIONS`; the choice
        depends on the seed and sizes alone), ``False`` never.
    :param bool blocks: compiled, run blocks of iterations per compiled call rather than one (the same
        draws up to rounding; see :data:`BLOCK_MIN_WORK` for when :func:`run_chains` uses them).
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
        return _sample(log_density, init, config, seed, step_size, inverse_mass, compile, report, blocks)


def _sample(
    log_density: LogDensity,
    init: Tensor,
    config: NUTSConfig,
    seed: int,
    step_size: Tensor | None,
    inverse_mass: Tensor | None,
    compile: bool | None,
    report: Report | None,
    blocks: bool = True,
) -> NUTSOutput:
    """:func:`sample_nuts` without its progress bar: ``report(n)`` hears of ``n`` more finished
    iterations, and ``report(n, status)`` every :data:`STATUS_INTERVAL` seconds of where they stand."""
    with torch.no_grad():
        run = _Run(log_density, init.detach(), config, seed, step_size, inverse_mass, compile, blocks)
        return run.run(report)


def merge_status(statuses: list[Status | None]) -> Status:
    """One status for groups of chains: warm-up while any group is, the median step size, all divergences."""
    known = [s for s in statuses if s is not None]
    return {
        "warmup": any(s["warmup"] for s in known) or len(known) < len(statuses),
        "step_size": float(np.median([s["step_size"] for s in known])),
        "divergences": sum(int(s["divergences"]) for s in known),
    }


def describe_status(status: Status) -> str:
    """The text a progress bar shows after the count, e.g. ``"warm-up, step 0.031, 0 divergent"``."""
    phase = "warm-up" if status["warmup"] else "sampling"
    return f"{phase}, step {status['step_size']:.3g}, {status['divergences']} divergent"


@contextmanager
def _progress(config: NUTSConfig, chains: int) -> Iterator[Report | None]:
    """A progress bar over every iteration of ``chains`` chains, or ``None`` when it is off.

    What it yields takes ``report(n)`` and ``report(n, status)``: the bar advances by ``n`` and,
    given a status, shows the phase (warm-up or sampling), the median step size over the chains
    and the number of divergent transitions so far (in the draws kept, as Pyro and Stan count them).
    """
    enabled = progress_enabled(config.progress_bar)
    total = chains * (config.num_warmup + config.num_samples)
    with make_progress_bar(total, desc="NUTS (flat)", enabled=enabled) as bar:

        def report(n: int, status: Status | None = None) -> None:
            if status is not None:
                bar.set_postfix_str(describe_status(status), refresh=False)
            bar.update(n)

        yield report if enabled else None


@contextmanager
def torch_threads(num: int) -> Iterator[None]:
    """Run the block on ``num`` torch threads (every group of chains runs on one), then restore the count."""
    old = torch.get_num_threads()
    torch.set_num_threads(num)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run_chains(
    density: FlatLogDensity,
    config: NUTSConfig,
    seed: int,
    *,
    compile: bool | None = None,
    init: Tensor | None = None,
) -> NUTSOutput:
    """Sample ``density`` with batched NUTS, the chains split over ``config.num_workers`` processes.

    Chains start from ``density.init_positions`` (drawn with ``seed``) unless ``init`` is given. They
    are split into ``config.num_workers`` groups as evenly as possible, and the groups run side by
    side: this process runs the first and forked worker processes the others (one after another
    where ``fork`` does not exist, with the same draws). Every group runs on one torch thread with
    its chains batched: on small tensors a second thread makes each gradient several times slower
    (1.6 ms with one thread against 14 ms with two, 4 chains of an 8-50-1 BNN with 1000 points),
    while a second process on the second core nearly halves the time per gradient. Group ``g``
    samples with the ``g``-th seed spawned from ``seed`` (``numpy.random.SeedSequence``), so the
    draws depend on ``seed`` and ``num_workers``.

    Each group compiles its iterations as ``compile`` says (see :func:`sample_nuts`), in blocks
    when ``density.work`` is at least :data:`BLOCK_MIN_WORK`.

    :returns: the unconstrained draws ``(chain, draw, dim)``, the statistics, the adapted state and counts.
    """
    blocks = uses_blocks(density)
    with torch_threads(1):
        groups, seeds = chain_groups(density, config, seed, init)
        jobs = [
            partial(_sample, density.value_and_grad, group, config, group_seed, None, None, compile, blocks=blocks)
            for group, group_seed in zip(groups, seeds)
        ]
        with _progress(config, config.num_chains) as report:
            return _concatenate(run_jobs(jobs, report=report, merge=merge_status))


def uses_blocks(density: FlatLogDensity) -> bool:
    """Whether runs on ``density`` compile in blocks: one chain's gradient costs at least
    :data:`BLOCK_MIN_WORK` multiply-adds (the one rule for :func:`run_chains` and ``fit_nuts``'s jobs)."""
    return density.work >= BLOCK_MIN_WORK


def chain_groups(
    density: FlatLogDensity, config: NUTSConfig, seed: int, init: Tensor | None = None
) -> tuple[tuple[Tensor, ...], list[int]]:
    """The starting points of ``config.num_workers`` groups of chains and each group's seed: the points
    drawn with ``seed`` (unless ``init`` is given), split as evenly as possible, and group ``g`` seeded by
    the ``g``-th child of ``seed`` (``numpy.random.SeedSequence``). Whoever runs the groups (forked
    workers, an executor, the ranks of a job) gets the same draws from them."""
    if init is None:
        init = density.init_positions(config.num_chains, torch.Generator(density.device).manual_seed(seed))
    groups = init.tensor_split(config.num_workers)
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(len(groups))]
    return groups, seeds


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
        compiled=any(o.compiled for o in outputs),
    )
