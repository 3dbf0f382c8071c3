"""NUTS for probgen models: several chains, per-draw sampler statistics, one result type.

:func:`fit_nuts` runs ``num_chains`` chains and returns an
:class:`~probgen.infer.results.MCMCResult` whose draws and statistics are shaped
``(chain, draw, ...)``. The NUTS implementation is chosen by ``backend``; every backend
records the same statistics under ArviZ's names, so diagnostics never depend on it:

``diverging``, ``lp`` (log joint density), ``energy`` (for BFMI: the Hamiltonian at the start of
the transition for ``"pyro"``; at the draw, with its momentum, for ``"flat"``, as Stan and NumPyro
record it), ``step_size``, ``tree_depth``, ``n_steps`` (leapfrog steps) and
``acceptance_rate``.

Backends are registered in :data:`BACKENDS` (a dict of name -> runner):

* ``"flat"`` (the default, through ``"auto"``): probgen's own NUTS (:mod:`probgen.infer.nuts`).
  It compiles the BNN once to a log-density of one flat unconstrained vector
  (:mod:`probgen.infer._flat`), hand-differentiated for MLPs, and advances all chains with the
  same tensor operations on one torch thread, with the chains split over one process per core
  (``num_workers``). Measured on an 8-50-1 tanh BNN with 1000 points and 4 chains on 2 cores
  (``benchmarks/bnn_nuts.py``), it gives 23-26 times the effective samples per second of
  ``"pyro"`` (and 1.8 times NumPyro's with its default sequential chains).
* ``"pyro"``: Pyro's own NUTS, the reference; it runs any static Pyro model, slowly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Literal, NamedTuple

import pyro
import torch
from pyro.infer.mcmc import MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_sample
from torch import Tensor

from probgen._types import SeedLike
from probgen._validate import check_positive_int, check_probability, check_seed, lookup
from probgen.infer._progress import progress_enabled
from probgen.infer._workers import available_cores, run_jobs
from probgen.infer.results import MCMCResult
from probgen.models.bnn import BNN

__all__ = ["fit_nuts", "NUTSConfig", "ChainOutput", "BACKENDS", "Backend"]

Backend = Literal["auto", "flat", "pyro"]
STAT_NAMES = ("diverging", "lp", "energy", "step_size", "tree_depth", "n_steps", "acceptance_rate")


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


class ChainOutput(NamedTuple):
    """What a backend returns: draws per site and statistics, each ``(chain, draw, ...)``."""

    samples: dict[str, Tensor]
    sample_stats: dict[str, Tensor]


class _RecordingNUTS(NUTS):
    """Pyro's NUTS, recording the statistics of each transition under ArviZ's names.

    It reads what Pyro's ``NUTS.sample`` already computes: the top-level ``_build_tree`` calls
    give the tree depth and divergence, the cached potential energy gives ``lp``, and the first
    kinetic energy of a transition (that of the fresh momentum) gives the energy.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.records: list[dict[str, float]] = []
        self._depth = 0
        self._energy_pending = False  # set only inside sample(); step-size search also calls _kinetic_energy
        self._accept_sum = 0.0
        self._proposals = 0.0
        self._current: dict[str, float] = {}

    def sample(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        self._current = {"diverging": 0.0, "tree_depth": 0.0, "n_steps": 0.0, "energy": math.nan}
        self._accept_sum = 0.0
        self._proposals = 0.0
        self._energy_pending = True
        step_size = float(self.step_size)
        z = super().sample(params)
        record = self._current
        record["step_size"] = step_size
        record["lp"] = -float(self._potential_energy_last)  # type: ignore[arg-type]
        record["acceptance_rate"] = self._accept_sum / self._proposals if self._proposals else math.nan
        self.records.append(record)
        return z

    def _kinetic_energy(self, r_unscaled: dict[str, Tensor]) -> Tensor:
        ke = super()._kinetic_energy(r_unscaled)
        if self._energy_pending:
            self._energy_pending = False
            self._current["energy"] = float(ke) + float(self._potential_energy_last)  # type: ignore[arg-type]
        return ke

    def _build_basetree(self, *args: Any, **kwargs: Any) -> Any:
        self._current["n_steps"] += 1
        return super()._build_basetree(*args, **kwargs)

    def _build_tree(self, z, r, z_grads, log_slice, direction, tree_depth, energy_current):
        top = self._depth == 0
        self._depth += 1
        try:
            tree = super()._build_tree(z, r, z_grads, log_slice, direction, tree_depth, energy_current)
        finally:
            self._depth -= 1
        if top:
            self._current["tree_depth"] = float(tree_depth + 1)
            self._current["diverging"] = float(bool(tree.diverging))
            self._accept_sum += float(tree.sum_accept_probs)
            self._proposals += float(tree.num_proposals)
        return tree


def _run_pyro(model: Callable[..., Any], x: Tensor, y: Tensor, config: NUTSConfig, seed: int) -> ChainOutput:
    """Chain ``c`` seeded with ``seed + c``; the chains are split over ``config.num_workers``
    processes (see :mod:`probgen.infer._workers`), so the draws do not depend on that number.
    Pyro's progress bar shows only when everything runs in this process."""
    groups = [chains.tolist() for chains in torch.arange(config.num_chains).tensor_split(config.num_workers)]
    show_bar = config.num_workers == 1 and progress_enabled(config.progress_bar)
    jobs = [partial(_run_pyro_chains, model, x, y, config, seed, chains, show_bar) for chains in groups]
    per_chain = [chain for group in run_jobs(jobs) for chain in group]
    samples = {k: torch.stack([c.samples[k] for c in per_chain]) for k in per_chain[0].samples}
    stats = {k: torch.stack([c.sample_stats[k] for c in per_chain]) for k in STAT_NAMES}
    return ChainOutput(samples, typed_stats(stats))


def _run_pyro_chains(
    model: Callable[..., Any],
    x: Tensor,
    y: Tensor,
    config: NUTSConfig,
    seed: int,
    chains: list[int],
    show_bar: bool,
    report: Callable[[int], None],
) -> list[ChainOutput]:
    """Pyro's NUTS on ``chains``, one after another; each chain's draws ``(draw, ...)``."""
    out = []
    for chain in chains:
        pyro.set_rng_seed(seed + chain)
        kernel = _RecordingNUTS(
            model,
            target_accept_prob=config.target_accept_prob,
            max_tree_depth=config.max_tree_depth,
            init_strategy=init_to_sample,
            adapt_step_size=True,
            adapt_mass_matrix=True,
        )
        mcmc = MCMC(kernel, num_samples=config.num_samples, warmup_steps=config.num_warmup, num_chains=1, disable_progbar=not show_bar)
        mcmc.run(x, y)
        kept = kernel.records[config.num_warmup :]
        samples = {k: v.detach() for k, v in mcmc.get_samples().items()}
        out.append(ChainOutput(samples, {name: torch.tensor([r[name] for r in kept]) for name in STAT_NAMES}))
        report(config.num_warmup + config.num_samples)
    return out


def _run_flat(model: BNN, x: Tensor, y: Tensor, config: NUTSConfig, seed: int) -> ChainOutput:
    """probgen's batched NUTS; imported here because :mod:`probgen.infer.nuts` imports this module."""
    from probgen.infer.nuts import run_flat_nuts

    return run_flat_nuts(model, x, y, config, seed)


Runner = Callable[[BNN, Tensor, Tensor, NUTSConfig, int], ChainOutput]

#: NUTS implementations by name. ``"auto"`` resolves to the fastest registered backend that is correct for the model.
BACKENDS: dict[str, Runner] = {"flat": _run_flat, "pyro": _run_pyro}


def _resolve_backend(backend: str) -> str:
    if backend == "auto":
        return "flat"  # the fast backend serves every BNN (its autograd kernel covers any architecture)
    lookup("backend", backend, BACKENDS)
    return backend


def fit_nuts(
    model: BNN,
    x: Any,
    y: Any,
    *,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 4,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    backend: str = "auto",
    seed: SeedLike = None,
    num_workers: int | None = None,
    progress_bar: bool = True,
) -> MCMCResult:
    """Sample a BNN's posterior with the No-U-Turn Sampler.

    Deterministic parameters (those the prior leaves out) are held at their current values.

    :param BNN model: the model.
    :param x: inputs ``(n, features)``.
    :param y: targets ``(n,)``.
    :param int num_warmup: warm-up iterations per chain (discarded).
    :param int num_samples: draws kept per chain.
    :param int num_chains: independent chains (default 4, so that R-hat means something).
    :param float target_accept_prob: step-size adaptation target in (0, 1).
    :param int max_tree_depth: maximum number of tree doublings per draw.
    :param str backend: ``"auto"`` (the fastest correct backend: ``"flat"``), or a name in
        :data:`BACKENDS`: ``"flat"`` (probgen's batched NUTS) or ``"pyro"`` (Pyro's NUTS, the reference).
    :param int seed: seeds the chains (recorded on the result); ``None`` draws one.
    :param int num_workers: processes that run the chains side by side, one per CPU core; each
        takes an even share of the chains and runs it on one torch thread. ``None`` (default):
        one per available core, at most one per chain; ``1``: everything in this process. With
        ``"flat"`` the draws depend on ``seed`` and ``num_workers`` (recorded on the result), so
        pass both to reproduce a run on another machine; with ``"pyro"`` on ``seed`` only.
    :param bool progress_bar: show a progress bar (off when the ``CI`` environment variable is set).
    :returns: an :class:`~probgen.infer.results.MCMCResult`.
    :raises ValueError: if ``num_workers`` exceeds ``num_chains``.

    References:
        Hoffman, M. D. and Gelman, A. (2014). The No-U-Turn Sampler. JMLR 15.
    """
    if not isinstance(model, BNN):
        raise TypeError(f"model must be a probgen.BNN, got {type(model).__name__}.")
    x_t, y_opt = model.check_data(x, y)
    if y_opt is None:
        raise ValueError("y is required to fit a model.")
    config = NUTSConfig(
        num_warmup=check_positive_int("num_warmup", num_warmup, allow_zero=True),
        num_samples=check_positive_int("num_samples", num_samples),
        num_chains=check_positive_int("num_chains", num_chains),
        target_accept_prob=check_probability("target_accept_prob", target_accept_prob),
        max_tree_depth=check_positive_int("max_tree_depth", max_tree_depth),
        progress_bar=bool(progress_bar),
    )
    if num_workers is None:
        num_workers = min(config.num_chains, available_cores())
    elif check_positive_int("num_workers", num_workers) > config.num_chains:
        raise ValueError(
            f"num_workers={num_workers} exceeds num_chains={config.num_chains}; each worker runs at least one chain."
        )
    config = config._replace(num_workers=int(num_workers))
    name = _resolve_backend(backend)
    seed = check_seed(seed)
    start = time.perf_counter()
    out = BACKENDS[name](model, x_t, y_opt, config, seed)
    return MCMCResult(
        model=model,
        samples=out.samples,
        x=x_t,
        y=y_opt,
        seed=seed,
        wall_time=time.perf_counter() - start,
        sample_stats=out.sample_stats,
        num_warmup=config.num_warmup,
        backend=name,
        num_workers=config.num_workers,
    )
