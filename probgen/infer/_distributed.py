"""Data-parallel runs on ``torch.distributed``: finding the job, per-rank seeds, collectives, teardown.

A script started by ``torchrun`` runs once per process (a *rank*); :func:`~probgen.infer.svi.fit_svi`
and :func:`~probgen.infer.mcmc.fit_nuts` notice the job and share the work: SVI averages the
gradients of every rank's own minibatch, NUTS spreads its chains over the ranks. This module holds
what both need. :func:`join` finds the job, from a process group the user has already initialised
or from the variables ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``,
and ``LOCAL_RANK`` for the GPU), and otherwise returns ``None``: a single process initialises
nothing, and every caller then keeps its single-process code path. The backend is gloo for CPU
tensors and nccl for CUDA ones, so no dependency beyond torch is needed.

Randomness: every rank must draw other random numbers (the same seed everywhere would give every
rank the same minibatch and the same Monte Carlo noise), yet a run must be reproducible from its
seed. :func:`rank_seed` derives rank ``r``'s seed as the ``r``-th child of the run's seed
(``numpy.random.SeedSequence``), the scheme :func:`~probgen.infer.nuts.run_chains` uses for groups
of chains. Minibatches come from disjoint shards: :class:`ShardPlates` makes rank ``r`` draw the
rows of a subsampled plate of size ``N`` from its own shard ``r, r + W, r + 2W, ...`` (``W`` ranks).

Teardown: a gloo process group still alive when the interpreter exits aborts the process now and
then ("terminate called without an active exception", exit code 134): its threads release their
last tensors while the interpreter is being torn down (about one two-process run in five, torch
2.13). A group that probgen initialised is therefore destroyed by :func:`shutdown`, which
:func:`join` registers with ``atexit``: at exit rather than at the end of each fit, so that a
script can fit several times (or run its own collectives) in one group, and before the interpreter
starts its teardown. Calling :func:`shutdown` earlier is allowed. A group the user initialised is
theirs to destroy.

Scaling out
-----------
One machine, several processes (one per core, or per GPU)::

    torchrun --nproc-per-node 2 script.py

Several machines: the same command on each, with the number of machines and one rendezvous
address (any free port on the first machine)::

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint host0:29500 --rdzv-id run1 script.py

or, with fixed ranks, ``--node-rank 0`` on ``host0`` and ``--node-rank 1`` on the other::

    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --master-addr host0 --master-port 29500 script.py

The script itself is the single-process one; every rank runs it with the same model, data and
seed, and only the main rank (:func:`is_main`) should write files.
"""

from __future__ import annotations

import atexit
import datetime
import importlib
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import Message
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from probgen._types import DeviceLike

__all__ = [
    "Job", "ENV_VARS", "TIMEOUT", "current", "join", "shutdown", "rank", "world_size", "is_main", "rank_seed",
    "shard_size", "agree", "gather", "average", "average_gradients", "broadcast_parameters", "barrier", "own_rng_state",
    "write_on_main", "ShardPlates",
]  # fmt: skip

T = TypeVar("T")

#: The variables ``torchrun`` sets in every process it starts; all must be set for :func:`join` to start a job.
ENV_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
#: How long a collective waits for the other ranks before failing (instead of hanging for torch's 10-30 min).
TIMEOUT = datetime.timedelta(minutes=5)

_owned = False  # whether probgen initialised the process group (and so destroys it)


class Job(NamedTuple):
    """This process's place in a torch.distributed job.

    :ivar int rank: this process's rank, ``0 <= rank < world_size``; rank 0 is the main one.
    :ivar int world_size: how many processes the job has (more than one: a job of one is no job).
    """

    rank: int
    world_size: int


def current() -> Job | None:
    """The job this process belongs to, without initialising anything; ``None`` for a single process."""
    if dist.is_available() and dist.is_initialized():
        job = Job(dist.get_rank(), dist.get_world_size())
    elif all(name in os.environ for name in ENV_VARS):
        job = Job(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    else:
        return None
    return job if job.world_size > 1 else None


def join(device: DeviceLike | None = None) -> Job | None:
    """The job this process belongs to, initialising the process group if nobody has yet.

    :param device: where the tensors that travel between ranks live: nccl for a CUDA device
        (each process on the GPU ``LOCAL_RANK``), gloo otherwise (the default, CPU).
    :returns: the :class:`Job`, or ``None`` for a single process (then nothing is initialised).
    :raises RuntimeError: if the environment describes a job but torch was built without distributed support.
    """
    global _owned
    job = current()
    if job is None:
        return None
    if not dist.is_available():
        raise RuntimeError(
            f"the environment describes a job of {job.world_size} processes (WORLD_SIZE), but this torch "
            "build has no torch.distributed; install a torch with distributed support or run one process."
        )
    if dist.is_initialized():
        return job
    # torch.distributed.nn's functions default to group=group.WORLD, evaluated when it is imported.
    # Imported after the group exists (torch._dynamo imports it, and Adam's constructor imports
    # torch._dynamo), it keeps the group alive past destroy_process_group: the gloo threads then
    # outlive the interpreter's teardown, and about 2% of the processes aborted at exit.
    importlib.import_module("torch.distributed.nn")
    cuda = device is not None and torch.device(device).type == "cuda" and dist.is_nccl_available()
    if cuda:
        local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", init_method="env://", timeout=TIMEOUT, device_id=local)
    else:
        dist.init_process_group("gloo", init_method="env://", timeout=TIMEOUT)
    _owned = True
    atexit.register(shutdown)
    return job


def shutdown() -> None:
    """Destroy the process group if probgen initialised it (see the module docstring); otherwise do nothing."""
    global _owned
    if _owned and dist.is_initialized():
        dist.destroy_process_group()
    _owned = False


def rank() -> int:
    """This process's rank (0 for a single process)."""
    job = current()
    return 0 if job is None else job.rank


def world_size() -> int:
    """How many processes the job has (1 for a single process)."""
    job = current()
    return 1 if job is None else job.world_size


def is_main() -> bool:
    """Whether this process is rank 0, the one that writes files (always true for a single process)."""
    return rank() == 0


def rank_seed(seed: int, rank: int) -> int:
    """Rank ``rank``'s seed: the ``rank``-th child of ``seed`` (``numpy.random.SeedSequence``), in ``[0, 2**32)``.

    The children of one seed are statistically independent streams, and each is a function of
    ``(seed, rank)`` alone, so a job reproduces with its seed and number of processes.

    >>> rank_seed(0, 0) != rank_seed(0, 1)
    True
    """
    return int(np.random.SeedSequence(seed, spawn_key=(rank,)).generate_state(1)[0])


def shard_size(size: int, rank: int, world_size: int) -> int:
    """How many of the indices ``0..size-1`` rank ``rank``'s shard ``rank, rank + W, ...`` holds.

    >>> [shard_size(10, r, 3) for r in range(3)]
    [4, 3, 3]
    """
    return len(range(rank, size, world_size))


def agree(value: T) -> T:
    """Rank 0's ``value`` (picklable) on every rank, such as a seed drawn at random; a collective."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: T) -> list[T]:
    """Every rank's ``value`` (picklable), in rank order, on every rank; a collective."""
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def _all_reduce_sum(flat: Tensor) -> Tensor:
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    return flat


def average(value: float, *, weight: float | None = None) -> float:
    """The average of every rank's ``value``: ``sum_r weight_r * value_r`` with weights that sum to one
    over the ranks, or the plain mean when ``weight`` is ``None``; a collective."""
    return float(_all_reduce_sum(torch.tensor([_weigh(value, weight)], dtype=torch.float64, device=_collective_device()))[0])


def _collective_device() -> torch.device:
    """Where a tensor made for a collective must be: this process's GPU under NCCL, the CPU under gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _weigh(value: float, weight: float | None) -> float:
    return value * (1.0 / dist.get_world_size() if weight is None else weight)


def average_gradients(parameters: Sequence[Tensor], *, weight: float | None = None, value: float = 0.0) -> float:
    """Replace every parameter's ``.grad`` by its average over the ranks, in one all-reduce per dtype.

    The average is ``sum_r weight_r * grad_r``, with this rank's ``weight`` (the weights of all
    ranks must sum to one), or the plain mean when ``weight`` is ``None``. A parameter without a
    gradient on this rank counts as a zero gradient, so that every rank reduces the same tensors.

    :param parameters: the parameters, in the same order on every rank (an optimiser's list).
    :param float value: a number averaged the same way in the same all-reduce, such as the loss.
    :returns: the average of ``value``.
    """
    scale = _weigh(1.0, weight)
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    groups: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
    for p in parameters:
        groups.setdefault((p.dtype, p.device), []).append(p)
    averaged = value * scale
    for index, ((dtype, device), members) in enumerate(groups.items()):
        parts = [p.grad.reshape(-1) for p in members if p.grad is not None]
        if index == 0:  # the value travels with the first group
            parts.append(torch.tensor([value], dtype=dtype, device=device))
        flat = _all_reduce_sum(torch.cat(parts) * scale)
        if index == 0:
            averaged = float(flat[-1])
        offset = 0
        for p in members:
            assert p.grad is not None
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
    if not groups:
        averaged = average(value, weight=weight)
    return averaged


def barrier() -> None:
    """Wait until every rank gets here; a collective. After rank 0 writes a file, so that no rank reads it too early."""
    dist.barrier()


def own_rng_state(saved: Tensor, job: Job | None) -> Tensor:
    """This process's random state in a saved state: a run on W processes saves W of them, ``(W, ...)``, in rank order.

    :raises ValueError: if the state was saved by a run on another number of processes.
    """
    saved_world = saved.shape[0] if saved.dim() == 2 else 1
    world = 1 if job is None else job.world_size
    if saved_world != world:
        raise ValueError(
            f"init_state was saved by a run on {saved_world} process(es) but this run has {world}; resume "
            f"it on {saved_world} (torchrun --nproc-per-node {saved_world}, or a plain python for one), "
            "since every process's random stream and shard of the data are part of the state."
        )
    # a copy: torch.set_rng_state crashes on a view that does not start its storage (torch 2.13)
    return saved if job is None else saved[job.rank].clone()


def write_on_main(write: Callable[[], None], job: Job | None) -> None:
    """Run ``write`` on rank 0 only (on the one process outside a job); in a job every rank then waits
    for it, so that no rank returns (and reads the file) before it exists."""
    if job is None or job.rank == 0:
        write()
    if job is not None:
        barrier()


def broadcast_parameters(parameters: Sequence[Tensor]) -> None:
    """Copy rank 0's values of ``parameters`` (the same list on every rank) to every rank; a collective."""
    with torch.no_grad():
        for p in parameters:
            dist.broadcast(p.data, src=0)


class ShardPlates(Messenger):
    """Make every subsampled plate of a program draw this rank's rows from this rank's shard.

    A plate ``pyro.plate(name, N, subsample_size=B)`` draws ``B`` of its ``N`` indices at random. In
    this handler rank ``r`` of ``W`` draws them, without replacement, from its shard
    ``r, r + W, r + 2W, ...`` instead, so the ranks' minibatches of one step are disjoint, and a
    rank whose ``B`` is its shard's size takes the whole shard. The plate still scales the
    likelihood by ``N / B``; :attr:`weight` is what the rank's gradient must weigh in the average
    over ranks for the estimate to stay unbiased.

    A plate nested inside a subsampled plate subsamples as usual (from all its indices), and so
    does a plate that takes all its indices: a program that does not subsample then sees all its
    data on every rank. Indices replayed from the guide's trace are left alone.

    :param Job job: this process's place in the job.
    """

    def __init__(self, job: Job) -> None:
        super().__init__()
        self.job = job
        self._fractions: list[float] = []

    def __enter__(self) -> ShardPlates:
        self._fractions = []
        super().__enter__()
        return self

    @property
    def weight(self) -> float:
        """This rank's weight in the gradient average of the last run: ``n_r / N``, its shard's share
        of the plate it sharded, which makes the weighted average over ranks an unbiased estimate
        of the full-data gradient even where ``W`` does not divide ``N``; ``1 / W`` when the run
        sharded no plate or plates of different sizes."""
        if self._fractions and all(f == self._fractions[0] for f in self._fractions):
            return self._fractions[0]
        return 1.0 / self.job.world_size

    def _pyro_sample(self, msg: Message) -> None:
        if not site_is_subsample(msg) or msg["value"] is not None:
            return
        plate: Any = msg["fn"]
        size, batch = plate.size, plate.subsample_size
        if batch is None or batch >= size or any(f.size != f.full_size for f in msg["cond_indep_stack"]):
            return
        shard = torch.arange(self.job.rank, size, self.job.world_size, device=plate.device)
        if batch > len(shard):
            raise ValueError(
                f"plate {msg['name']!r} draws {batch} of its {size} indices per step, more than the {len(shard)} "
                f"of rank {self.job.rank}'s shard ({self.job.world_size} processes share them); lower its "
                "subsample_size or run fewer processes."
            )
        msg["value"] = shard if batch == len(shard) else shard[torch.randperm(len(shard), device=plate.device)[:batch]]
        self._fractions.append(len(shard) / size)
