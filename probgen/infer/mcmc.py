"""NUTS for any static Pyro program: several chains, per-draw sampler statistics, one result type.

:func:`fit_nuts` takes a model the way Pyro's ``MCMC.run`` does (``fit_nuts(model, *args,
model_kwargs=...)``), runs ``num_chains`` chains and returns an
:class:`~probgen.infer.results.MCMCResult` whose draws and statistics are shaped
``(chain, draw, ...)``. The model is any callable Pyro program or a :class:`~probgen.models.bnn.BNN`;
both reach the sampler through the same seam (:mod:`probgen.infer._model`). The NUTS
implementation is chosen by ``backend``; every backend records the same statistics under ArviZ's
names, so diagnostics never depend on it:

``diverging``, ``lp`` (log joint density), ``energy`` (for BFMI: the Hamiltonian at the start of
the transition for ``"pyro"``; at the draw, with its momentum, for ``"flat"``, as Stan and NumPyro
record it), ``step_size``, ``tree_depth``, ``n_steps`` (leapfrog steps) and
``acceptance_rate``.

Backends are registered in :data:`BACKENDS` (a dict of name -> runner):

* ``"flat"`` (the default for continuous models, through ``"auto"``): probgen's own NUTS
  (:mod:`probgen.infer.nuts`) on the model's log density as a function of one flat unconstrained
  vector, with all chains of a process advanced by the same tensor operations and the chains split
  over one process per core (``num_workers``). A BNN's density is hand-differentiated for MLPs; a
  Pyro program's is its trace, captured once and, on long runs, compiled
  (:mod:`probgen.infer._flat_trace`). Measured on an 8-50-1 tanh BNN with 1000 points and 4 chains
  on 2 cores (``benchmarks/bnn_nuts.py``), it gives 23-29 times the effective samples per second of
  ``"pyro"``; ``benchmarks/generic_nuts.py`` measures Pyro programs.
* ``"pyro"``: Pyro's own NUTS, the reference; ``"auto"`` takes it for models with discrete latent
  sites, which it enumerates (their draws are not recorded).

Scaling out: the chains are split into ``num_workers`` groups, and each group is one job. By default
this process and forked workers run them; ``executor=`` hands them to any
``concurrent.futures.Executor`` instead, and inside a torch.distributed job (``torchrun``, see
:mod:`probgen.infer._distributed`) the ranks share them out and gather the results, so every rank
returns the whole result. A group is seeded as it is in this process, so chain ``k``'s draws depend
on ``seed`` and ``num_workers`` alone (on ``seed`` alone for ``"pyro"``), wherever its group runs.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from functools import partial
from typing import Any, Literal, get_args

import pyro
import torch
from pyro.infer.autoguide.initialization import init_to_sample, init_to_uniform, init_to_value
from pyro.infer.mcmc import MCMC, NUTS
from torch import Tensor, nn

from probgen._device import check_device, device_of, move
from probgen._types import DeviceLike, Samples, SeedLike
from probgen._validate import (
    check_choice,
    check_positive_int,
    check_probability,
    check_seed,
    reject_unknown_options,
)
from probgen.infer import _distributed
from probgen.infer._dispatch import as_inference_model
from probgen.infer._flat import FlatLogDensity
from probgen.infer._model import InferenceModel, ModelData
from probgen.infer._progress import progress_enabled
from probgen.infer._workers import Status, available_cores, run_jobs
from probgen.infer.nuts import (
    STAT_NAMES,
    NUTSConfig,
    chain_groups,
    run_chains,
    sample_nuts,
    torch_threads,
    typed_stats,
    uses_blocks,
)
from probgen.infer.results import MCMCResult

__all__ = ["fit_nuts", "BACKENDS", "Backend", "TREE_DEPTH_WARN_FRACTION", "DIVERGENCE_ADVICE", "warn_about_draws"]

Backend = Literal["auto", "flat", "pyro"]
#: Warn when more than this fraction of draws reach ``max_tree_depth``.
TREE_DEPTH_WARN_FRACTION = 0.05

Chains = tuple[Samples, dict[str, Tensor]]
#: Runs jobs ``job(report) -> result`` (groups of chains) and returns their results in job order.
Dispatch = Callable[[Sequence[Callable[..., Any]]], list[Any]]


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


def _run_pyro(
    spec: InferenceModel,
    data: ModelData,
    config: NUTSConfig,
    seed: int,
    compile: bool | None,
    dispatch: Dispatch | None,
    init: Mapping[str, Tensor] | None = None,
) -> Chains:
    """Pyro's NUTS. Chain ``c`` is seeded with ``seed + c``; the chains are split over ``config.num_workers``
    processes (see :mod:`probgen.infer._workers`), or groups run by ``dispatch``, so the draws do not
    depend on that number. Pyro's progress bar shows only when everything runs in this process."""
    groups = [chains.tolist() for chains in torch.arange(config.num_chains).tensor_split(config.num_workers)]
    show_bar = dispatch is None and config.num_workers == 1 and progress_enabled(config.progress_bar)
    jobs = [partial(_run_pyro_chains, spec, data, config, seed, chains, show_bar, init) for chains in groups]
    per_chain = [chain for group in (dispatch or run_jobs)(jobs) for chain in group]
    samples = {k: torch.stack([c[0][k] for c in per_chain]) for k in per_chain[0][0]}
    stats = {k: torch.stack([c[1][k] for c in per_chain]) for k in STAT_NAMES}
    return spec.complete(samples, data), typed_stats(stats)


def _run_pyro_chains(
    spec: InferenceModel,
    data: ModelData,
    config: NUTSConfig,
    seed: int,
    chains: list[int],
    show_bar: bool,
    init: Mapping[str, Tensor] | None,
    report: Callable[[int], None],
) -> list[Chains]:
    """Pyro's NUTS on ``chains``, one after another; each chain's draws ``(draw, ...)``.

    A chain starts at its row of ``init`` (constrained values) where given, elsewhere where the
    ``"flat"`` backend's chains start (a prior draw for a BNN, uniform in ``[-2, 2]`` unconstrained
    for a Pyro program)."""
    out = []
    default = init_to_sample if spec.kind == "bnn" else init_to_uniform  # the "flat" backend's starting points
    for chain in chains:
        pyro.set_rng_seed(seed + chain)
        strategy = default
        if init:
            strategy = init_to_value(values={name: value[chain] for name, value in init.items()}, fallback=default)
        kernel = _RecordingNUTS(
            spec.program(),
            target_accept_prob=config.target_accept_prob,
            max_tree_depth=config.max_tree_depth,
            init_strategy=strategy,
            adapt_step_size=True,
            adapt_mass_matrix=True,
        )
        mcmc = MCMC(kernel, num_samples=config.num_samples, warmup_steps=config.num_warmup, num_chains=1, disable_progbar=not show_bar)
        mcmc.run(*data.args, **data.kwargs)
        kept = kernel.records[config.num_warmup :]
        samples = {k: v.detach() for k, v in mcmc.get_samples().items()}
        out.append((samples, {name: torch.tensor([r[name] for r in kept]) for name in STAT_NAMES}))
        report(config.num_warmup + config.num_samples)
    return out


def _run_flat(
    spec: InferenceModel,
    data: ModelData,
    config: NUTSConfig,
    seed: int,
    compile: bool | None,
    dispatch: Dispatch | None,
    init: Mapping[str, Tensor] | None = None,
) -> Chains:
    """probgen's batched NUTS on the model's flat log density, its groups of chains run by ``dispatch`` if given.

    The chains start at ``init`` (constrained values, ``(chains, *shape)``) where given, and at the
    density's own starting points (drawn with ``seed``) for the sites it leaves out."""
    density = spec.flat_density(data)
    start = _flat_start(density, init, config.num_chains, seed)
    if dispatch is None:
        out = run_chains(density, config, seed, compile=compile, init=start)
        return spec.unpack(density, out.draws), out.sample_stats
    draws, stats = _run_flat_groups(density, config, seed, compile, dispatch, start)
    return spec.unpack(density, draws), stats


def _flat_start(density: FlatLogDensity, init: Mapping[str, Tensor] | None, num_chains: int, seed: int) -> Tensor | None:
    """The flat backend's starting points for ``init`` (checked values, ``{site: (chains, *shape)}``), ``None``
    without it: the sites it leaves out keep the points that :func:`~probgen.infer.nuts.chain_groups` would
    draw with ``seed``."""
    if not init:
        return None
    fallback = density.init_positions(num_chains, torch.Generator(density.device).manual_seed(seed))
    return density.start_from(init, fallback)


def _run_flat_groups(
    density: FlatLogDensity,
    config: NUTSConfig,
    seed: int,
    compile: bool | None,
    dispatch: Dispatch,
    init: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The groups of :func:`~probgen.infer.nuts.run_chains`, as jobs for ``dispatch``: the same starting
    points (``init``, or drawn with ``seed``), the same ``config.num_workers`` groups and the same seed
    per group (the ``g``-th spawned from ``seed``), so the draws are those of ``run_chains``."""
    with torch_threads(1):
        groups, seeds = chain_groups(density, config, seed, init)
    quiet = config._replace(progress_bar=False)
    jobs = [
        partial(_run_flat_group, density.value_and_grad, group, quiet, group_seed, compile, uses_blocks(density))
        for group, group_seed in zip(groups, seeds)
    ]
    with torch_threads(1):  # for jobs on threads of this process
        outputs = dispatch(jobs)
    draws = torch.cat([draws for draws, _ in outputs])
    stats = {name: torch.cat([stats[name] for _, stats in outputs]) for name in outputs[0][1]}
    return draws, stats


def _run_flat_group(
    log_density: Callable[[Tensor], tuple[Tensor, Tensor]],
    init: Tensor,
    config: NUTSConfig,
    seed: int,
    compile: bool | None,
    blocks: bool,
    report: Callable[..., None],
) -> tuple[Tensor, dict[str, Tensor]]:
    """One group of chains on one torch thread, as a forked worker of ``run_chains`` runs it: the draws and statistics."""
    with torch_threads(1):
        out = sample_nuts(log_density, init, config, seed=seed, compile=compile, blocks=blocks)
    return out.draws, out.sample_stats


def _ignore_progress(n: int, status: Status | None = None) -> None:
    """The report of a job that runs on an executor: its progress has nowhere to go."""


#: Held by a job that runs on an executor, so that the jobs on threads of one process run one at a time.
_JOB_LOCK = threading.Lock()


def _one_at_a_time(job: Callable[..., Any], report: Callable[..., None]) -> Any:
    """Run ``job`` alone in this process: Pyro's stack of effect handlers and the random state that
    Pyro's NUTS seeds are global to a process, so two jobs on its threads would interleave them.
    (Threads would not run the chains faster anyway: the sampler holds the GIL, see
    :mod:`probgen.infer._workers`.) Jobs in other processes, such as a process pool's, do not wait."""
    with _JOB_LOCK:
        return job(report)


def _dispatch(
    jobs: Sequence[Callable[..., Any]], *, executor: Executor | None, job: _distributed.Job | None, device: torch.device
) -> list[Any]:
    """Run ``jobs`` and return their results in order: on ``executor`` if given, else in this process
    and forked workers; in a torch.distributed job rank ``r`` runs the ``r``-th of ``world_size``
    contiguous shares of the jobs, and every rank receives every result (``all_gather_object``),
    which travel through the CPU and arrive on ``device`` (each rank's GPU may be another)."""
    if job is None:
        return _run_here(jobs, executor)
    shares = [share.tolist() for share in torch.arange(len(jobs), device="cpu").tensor_split(job.world_size)]
    mine = _run_here([jobs[index] for index in shares[job.rank]], executor)
    gathered = _distributed.gather(move(mine, torch.device("cpu")))
    return [move(result, device) for share in gathered for result in share]


def _run_here(jobs: Sequence[Callable[..., Any]], executor: Executor | None) -> list[Any]:
    if executor is None:
        return run_jobs(jobs) if jobs else []
    futures = [executor.submit(_one_at_a_time, job, _ignore_progress) for job in jobs]
    try:
        return [future.result() for future in futures]
    finally:
        for future in futures:  # after an error, the jobs not yet started
            future.cancel()


Runner = Callable[
    [InferenceModel, ModelData, NUTSConfig, int, "bool | None", "Dispatch | None", "Mapping[str, Tensor] | None"], Chains
]

#: NUTS implementations by name. ``"auto"`` resolves to the fastest registered backend that is correct for the model.
BACKENDS: dict[str, Runner] = {"flat": _run_flat, "pyro": _run_pyro}
BACKEND_CHOICES: tuple[str, ...] = get_args(Backend)


def _resolve_backend(backend: str, spec: InferenceModel, data: ModelData) -> str:
    check_choice("backend", backend, BACKEND_CHOICES)
    if backend == "auto":
        return "pyro" if spec.discrete_latents(data) else "flat"
    return backend


def _initial_values(
    init_params: Any, shapes: Mapping[str, tuple[int, ...]], num_chains: int, device: torch.device
) -> dict[str, Tensor] | None:
    """``init_params`` as ``{site: (num_chains, *shape)}`` float tensors on ``device``; ``None`` for none.

    A fit (anything with ``get_samples``) gives ``num_chains`` evenly spaced draws of its latent sites.
    """
    if init_params is None:
        return None
    from_fit = hasattr(init_params, "get_samples") and callable(init_params.get_samples)
    if from_fit:
        draws = init_params.get_samples()
        values: dict[str, Any] = {}
        for name in shapes:
            if name in draws:
                count = int(draws[name].shape[0])
                index = torch.linspace(0, count - 1, num_chains, device=draws[name].device).round().long()
                values[name] = draws[name][index]
    elif isinstance(init_params, Mapping):
        unknown = sorted(set(init_params) - set(shapes))
        if unknown:
            raise ValueError(
                f"init_params names {', '.join(map(repr, unknown))}, which the model does not sample; its latent "
                f"sites are {', '.join(map(repr, shapes))}."
            )
        values = dict(init_params)
    else:
        raise TypeError(
            "init_params must be a dict {site: value} or a result of fit_svi or fit_nuts, got "
            f"{type(init_params).__name__}."
        )
    out = {}
    for name, value in values.items():
        value = torch.as_tensor(value, device=device)
        if not value.is_floating_point():
            raise TypeError(f"init_params[{name!r}] must hold floats, got {value.dtype}.")
        shape = tuple(shapes[name])
        if tuple(value.shape) == shape:
            value = value.expand(num_chains, *shape)
        elif tuple(value.shape) != (num_chains, *shape):
            raise ValueError(
                f"init_params[{name!r}] has shape {tuple(value.shape)}; expected {shape} (every chain) or "
                f"{(num_chains, *shape)} (one row per chain)."
            )
        if not torch.isfinite(value).all():
            raise ValueError(f"init_params[{name!r}] is not finite.")
        out[name] = value.detach().clone()
    return out


#: What to do about divergent transitions; the sampler's warning and the convergence report both give it.
DIVERGENCE_ADVICE = (
    "Raise target_accept_prob (e.g. to 0.95), standardise the data, use a tighter prior or reparametrise the model."
)


def warn_about_draws(stats: Mapping[str, Tensor], max_tree_depth: int, *, stacklevel: int = 2) -> None:
    """Warn about divergent draws and draws whose trees reached ``max_tree_depth``.

    :param int stacklevel: as for ``warnings.warn``, counted from the caller of this function.
    """
    divergences = int(stats["diverging"].sum())
    if divergences:
        warnings.warn(
            f"{divergences} of {stats['diverging'].numel()} draws diverged; the posterior is not "
            f"explored reliably. {DIVERGENCE_ADVICE}",
            RuntimeWarning,
            stacklevel=stacklevel + 1,
        )
    saturated = float((stats["tree_depth"] >= max_tree_depth).double().mean())
    if saturated > TREE_DEPTH_WARN_FRACTION:
        warnings.warn(
            f"{saturated:.0%} of draws reached max_tree_depth={max_tree_depth}, so their "
            "trajectories were cut short. Raise max_tree_depth, or run longer warm-up.",
            RuntimeWarning,
            stacklevel=stacklevel + 1,
        )


_OPTIONS = (
    "model_kwargs", "num_warmup", "num_samples", "num_chains", "target_accept_prob", "max_tree_depth",
    "backend", "seed", "num_workers", "executor", "compile", "device", "progress_bar", "init_params",
)  # fmt: skip


def fit_nuts(
    model: Any,
    *args: Any,
    model_kwargs: Mapping[str, Any] | None = None,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 4,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    backend: Backend = "auto",
    seed: SeedLike = None,
    num_workers: int | None = None,
    executor: Executor | None = None,
    compile: bool | None = None,
    device: DeviceLike | None = None,
    progress_bar: bool = True,
    init_params: Mapping[str, Any] | Any | None = None,
    **unknown: Any,
) -> MCMCResult:
    """Sample a model's posterior with the No-U-Turn Sampler.

    The model is any static Pyro program with continuous latent sites, or a
    :class:`~probgen.models.bnn.BNN`. Its data are passed as its signature takes them, like Pyro's
    ``MCMC.run``: positionally (``fit_nuts(model, x, y)``), keyword data through ``model_kwargs``.
    Observed sites are those with ``obs=``. The model is copied where it has state; its
    ``pyro.param`` values and a BNN's deterministic parameters are held at their current values.

    :param model: a BNN or a callable Pyro program.
    :param args: the model's positional data.
    :param dict model_kwargs: the model's keyword data.
    :param int num_warmup: warm-up iterations per chain (discarded).
    :param int num_samples: draws kept per chain.
    :param int num_chains: independent chains (default 4, so that R-hat means something).
    :param float target_accept_prob: step-size adaptation target in (0, 1).
    :param int max_tree_depth: maximum number of tree doublings per draw.
    :param str backend: ``"auto"`` (the fastest correct backend: ``"flat"``, or ``"pyro"`` for a
        model with discrete latent sites), ``"flat"`` (probgen's batched NUTS) or ``"pyro"`` (Pyro's
        NUTS, the reference).
    :param int seed: seeds the chains (recorded on the result); ``None`` draws one.
    :param int num_workers: processes that run the chains side by side, one per CPU core; each
        takes an even share of the chains and runs it on one torch thread. ``None`` (default):
        one per available core, at most one per chain; ``1``: everything in this process. With
        ``"flat"`` the draws depend on ``seed`` and ``num_workers`` (recorded on the result), so
        pass both to reproduce a run on another machine; with ``"pyro"`` on ``seed`` only. With
        ``executor`` or in a torch.distributed job it is the number of groups of chains (jobs):
        by default one per chain with an executor, one per process (at most one per chain) in a job.
    :param executor: a ``concurrent.futures.Executor`` that runs the groups of chains, one job each,
        instead of this process and its forked workers; the result is the same as without it for
        the same ``num_workers``. A process pool must be able to pickle the model and its data;
        jobs on threads of one process run one at a time (Pyro's state is global to a process).
        Jobs on an executor show no progress.
    :param bool compile: compile a Pyro program's captured log density with TorchInductor;
        ``None`` (default) decides from the measured cost of one gradient and the run's length.
    :param device: where the chains run (``"cpu"``, ``"cuda"``, a ``torch.device``): the data and the
        model's copy move there, and the draws stay there; ``None`` (the default) runs where the data
        are. Off the CPU every chain runs batched in this process (forked workers cannot share a
        GPU), so ``num_workers`` above 1 needs an ``executor`` or a torch.distributed job.
    :param bool progress_bar: show a progress bar (off when the ``CI`` environment variable is set).
    :param init_params: where the chains start, in the sites' own (constrained) values: a dict
        ``{site: value}`` with each value shaped ``(num_chains, *site_shape)`` (one start per chain) or
        ``site_shape`` (the same start for every chain), or a result of :func:`~probgen.fit_svi` or
        :func:`fit_nuts`, whose draws start the chains (``num_chains`` of them, evenly spaced; its
        other sites, such as deterministic ones, are ignored). Sites left out start where they would
        without it. ``None`` (the default): a BNN's chains start from prior draws, a Pyro program's
        uniformly in ``[-2, 2]`` on the unconstrained scale. Starting from a fit's draws is a warm
        start; R-hat then compares chains that began in the region that fit found, so it can no
        longer tell whether chains from far apart would have agreed.
    :returns: an :class:`~probgen.infer.results.MCMCResult`.
    :raises TypeError: for data the model does not take, an unknown option, or an ``executor``
        that is not a ``concurrent.futures.Executor``.
    :raises ValueError: for bad option values, data the model cannot condition on, a model that
        observes nothing, a dynamic model, discrete latent sites with ``backend="flat"``, or
        ``init_params`` that name an unknown site, have the wrong shape, lie outside a site's support or
        give a log density that is not finite.

    Started by ``torchrun``, every process runs the same call with the same model and data; rank
    ``r`` runs its share of the groups of chains (the ``r``-th of ``world_size`` contiguous ones),
    the shares are gathered, and every rank returns the same result, with every chain in the
    ``(chain, draw)`` layout and every sample statistic. Rank 0's ``seed`` is the run's; rank 0
    alone warns about divergences, and no progress bar shows.

    Example: eight schools, non-centred.

    >>> import pyro, pyro.distributions as dist
    >>> def eight_schools(sigma, y=None):
    ...     mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    ...     tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    ...     with pyro.plate("J", len(sigma)):
    ...         theta_raw = pyro.sample("theta_raw", dist.Normal(0.0, 1.0))
    ...         theta = pyro.deterministic("theta", mu + tau * theta_raw)
    ...         pyro.sample("obs", dist.Normal(theta, sigma), obs=y)
    >>> sigma = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
    >>> y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    >>> res = fit_nuts(eight_schools, sigma, y, num_warmup=50, num_samples=50, num_chains=2,
    ...                seed=0, progress_bar=False)  # doctest: +SKIP
    >>> res.get_samples(group_by_chain=True)["theta"].shape  # doctest: +SKIP
    torch.Size([2, 50, 8])

    References:
        Hoffman, M. D. and Gelman, A. (2014). The No-U-Turn Sampler. JMLR 15.
    """
    reject_unknown_options("fit_nuts", unknown, _OPTIONS)
    device = check_device(device)
    spec = as_inference_model(model)
    if device is not None and isinstance(spec.model, nn.Module):
        spec.model.to(device)  # the run's own copy of the model
    data = spec.bind_on(device, args, model_kwargs, fit=True)
    here = device_of(*data.args, *data.kwargs.values())
    config = NUTSConfig(
        num_warmup=check_positive_int("num_warmup", num_warmup, allow_zero=True),
        num_samples=check_positive_int("num_samples", num_samples),
        num_chains=check_positive_int("num_chains", num_chains),
        target_accept_prob=check_probability("target_accept_prob", target_accept_prob),
        max_tree_depth=check_positive_int("max_tree_depth", max_tree_depth),
        progress_bar=bool(progress_bar),
    )
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(f"executor must be a concurrent.futures.Executor or None, got {type(executor).__name__}.")
    job = _distributed.join()
    if num_workers is None:
        if executor is not None:
            num_workers = config.num_chains
        elif job is not None:
            num_workers = min(config.num_chains, job.world_size)
        else:
            num_workers = 1 if here.type != "cpu" else min(config.num_chains, available_cores())
    elif here.type != "cpu" and executor is None and job is None and check_positive_int("num_workers", num_workers) > 1:
        raise ValueError(
            f"num_workers={num_workers} forks worker processes, which cannot use the {here.type} device the data "
            "are on; leave num_workers=None (one process runs every chain, batched) or pass executor=."
        )
    elif check_positive_int("num_workers", num_workers) > config.num_chains:
        raise ValueError(
            f"num_workers={num_workers} exceeds num_chains={config.num_chains}; each worker runs at least one chain."
        )
    if compile is not None and not isinstance(compile, bool):
        raise TypeError(f"compile must be True, False or None, got {type(compile).__name__}.")
    config = config._replace(num_workers=int(num_workers))
    name = _resolve_backend(backend, spec, data)
    subsampled = spec.subsampled_plates(data)
    if subsampled:
        plate, (size, total) = next(iter(subsampled.items()))
        raise ValueError(
            f"plate {plate!r} draws {size} of its {total} indices per run (subsample_size); NUTS needs the log "
            "density of all the data. Make the subsample size an argument of the model, left None for fit_nuts "
            "and given to fit_svi through model_kwargs."
        )
    seed = check_seed(seed)
    if job is not None:
        seed = _distributed.agree(seed)  # a seed drawn at random differs between ranks
    dispatch = None if executor is None and job is None else partial(_dispatch, executor=executor, job=job, device=here)
    start = time.perf_counter()
    init = _initial_values(init_params, spec.latent_shapes(data), config.num_chains, here)
    samples, stats = BACKENDS[name](spec, data, config, seed, compile, dispatch, init)
    if job is None or job.rank == 0:
        warn_about_draws(stats, config.max_tree_depth, stacklevel=2)
    return MCMCResult(
        spec=spec,
        samples=samples,
        data=data,
        seed=seed,
        wall_time=time.perf_counter() - start,
        sample_stats=stats,
        num_warmup=config.num_warmup,
        backend=name,
        num_workers=config.num_workers,
    )
