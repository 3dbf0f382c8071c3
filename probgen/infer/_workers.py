"""Independent jobs on several CPU cores: the calling process runs the first, forked workers the rest.

NUTS chains share nothing once they have started, so the chains of one fit can be split into
groups and the groups run side by side, one per core, each on a single torch thread. A thread
per group does not work: the sampler's Python bookkeeping holds the GIL, and two threads ran
*slower* than one (0.30 against 0.19 ms per gradient, 8-50-1 BNN). Processes do: two forked
workers of two chains each took 0.10-0.11 ms per gradient against 0.19-0.22 ms for four chains
in one process (see ``benchmarks/README.md``).

Why ``fork`` and why the caller runs the first job itself:

* A forked worker starts in milliseconds with the caller's imports, data and ``torch.compile``
  caches, so a model compiled by an earlier fit in the same session is not compiled again.
* The caller's own job compiles in the caller, where the compiled code stays for later fits;
  the workers of a first fit compile the same graph at the same time on the other cores.
* Workers use no global random state: each job carries its own seed, so the draws are the
  same whether the jobs run in workers or one after another (where ``fork`` does not exist).

Each job is a callable ``job(report) -> result``; it calls ``report(n)`` as it completes ``n``
more units of work (progress), or ``report(n, status)`` to say where it stands as well (a small
picklable mapping, such as a sampler's phase and step size). ``run_jobs`` adds up the counts of
all jobs for one progress bar, and merges the latest status of each job with ``merge``. A worker sends back its result, the warnings it raised (re-issued here) or its
exception (re-raised here, with the worker's traceback as a note).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol, TypeVar

import torch

__all__ = ["Report", "Status", "available_cores", "can_fork", "run_jobs"]

T = TypeVar("T")
#: Where one job stands, beyond its count: a small picklable mapping (a phase, a step size, ...).
Status = Mapping[str, Any]


class Report(Protocol):
    """``report(n)`` hears of ``n`` more finished units of work; ``report(n, status)`` also of where the job stands."""

    def __call__(self, n: int, status: Status | None = None, /) -> None: ...


Job = Callable[[Report], T]
#: Merges the latest status of every job (``None`` for a job that has sent none) into one.
Merge = Callable[[list[Status | None]], Status]

#: A worker reports progress at most this often (seconds).
REPORT_INTERVAL = 0.25


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return max(os.cpu_count() or 1, 1)


def can_fork() -> bool:
    """Whether worker processes can be forked here (Linux and macOS; not Windows)."""
    return "fork" in multiprocessing.get_all_start_methods()


def run_jobs(jobs: Sequence[Job[T]], *, report: Report | None = None, merge: Merge | None = None) -> list[T]:
    """Run ``jobs[1:]`` in forked workers while this process runs ``jobs[0]``; return the results in order.

    Where ``fork`` does not exist the jobs run one after another in this process.

    :param jobs: callables ``job(report) -> result``; a result must be picklable.
    :param report: receives the progress increments of every job, as ``report(n)``; with ``merge``
        given, as ``report(n, merge(statuses))`` once some job has sent a status.
    :param merge: combines the latest status of each job (in job order) into the one ``report`` hears.
    """
    tell = _Merged(report, merge, len(jobs))
    if len(jobs) < 2 or not can_fork():
        return [job(tell.of(index)) for index, job in enumerate(jobs)]
    context = multiprocessing.get_context("fork")
    workers: list[tuple[Any, Connection]] = []
    try:
        for job in jobs[1:]:
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=_work, args=(job, sender))
            process.start()
            sender.close()  # the worker holds its own copy; closing ours lets us see it exit
            workers.append((process, receiver))
        results: list[Any] = [None] * len(jobs)
        pending = {receiver: index for index, (_, receiver) in enumerate(workers, start=1)}

        own = tell.of(0)

        def poll_then_tell(n: int, status: Status | None = None) -> None:  # while this process works, keep up with the workers
            own(n, status)
            _collect(pending, workers, results, tell, timeout=0.0)

        mine = _Throttled(poll_then_tell)
        results[0] = jobs[0](mine)
        mine.flush()
        while pending:
            _collect(pending, workers, results, tell, timeout=None)
        return results
    finally:
        for process, receiver in workers:
            if process.is_alive():
                process.terminate()
            process.join()
            receiver.close()


def _collect(
    pending: dict[Connection, int],
    workers: list[tuple[Any, Connection]],
    results: list[Any],
    tell: _Merged,
    timeout: float | None,
) -> None:
    """Read every message that has arrived (waiting up to ``timeout`` for one); raise a worker's error."""
    for receiver in wait(list(pending), timeout=timeout):
        assert isinstance(receiver, Connection)
        index = pending[receiver]
        try:
            kind, payload = pickle.loads(receiver.recv_bytes())
        except EOFError:
            process = workers[index - 1][0]
            process.join()
            raise RuntimeError(
                f"worker process {index} exited (code {process.exitcode}) without returning its result; "
                "it may have run out of memory. Run with num_workers=1 to see the error in this process."
            ) from None
        if kind == "progress":
            tell.of(index)(*payload)
        elif kind == "error":
            error, trace = payload
            error.add_note(f"raised in worker process {index}:\n{trace}")
            raise error
        else:
            result, caught = payload
            for message, category in caught:
                warnings.warn(message, category, stacklevel=2)
            results[index] = result
            del pending[receiver]


class _Merged:
    """The caller's ``report`` behind every job's: counts pass through, statuses are kept per job and merged."""

    def __init__(self, report: Report | None, merge: Merge | None, num_jobs: int) -> None:
        self.report, self.merge = report, merge
        self.statuses: list[Status | None] = [None] * num_jobs

    def of(self, index: int) -> Report:
        def tell(n: int, status: Status | None = None) -> None:
            if status is not None:
                self.statuses[index] = status
            if self.report is None:
                return
            if self.merge is not None and any(s is not None for s in self.statuses):
                self.report(n, self.merge(self.statuses))
            else:
                self.report(n)

        return tell


class _Throttled:
    """``report`` called at most every :data:`REPORT_INTERVAL` seconds, with the summed increments and the latest status."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.owed = 0
        self.status: Status | None = None
        self.last = time.monotonic()

    def __call__(self, n: int, status: Status | None = None) -> None:
        self.owed += n
        if status is not None:
            self.status = status
        now = time.monotonic()
        if now - self.last >= REPORT_INTERVAL:
            self.flush()
            self.last = now

    def flush(self) -> None:
        if self.owed or self.status is not None:
            self.report(self.owed, self.status)
            self.owed, self.status = 0, None


def _work(job: Job[Any], sender: Connection) -> None:
    """A worker's whole life: run ``job`` on one torch thread and send back what happened."""
    torch.set_num_threads(1)

    def send(kind: str, payload: Any) -> None:
        sender.send_bytes(pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL))

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            progress = _Throttled(lambda n, status=None: send("progress", (n, status)))
            result = job(progress)
            progress.flush()
        send("done", (result, [(str(w.message), w.category) for w in caught]))
    except BaseException as error:  # a worker reports every failure, KeyboardInterrupt included
        trace = traceback.format_exc()
        try:
            pickle.dumps(error)
        except Exception:  # an unpicklable exception travels as text
            error = RuntimeError(f"{type(error).__name__}: {error}")
        send("error", (error, trace))
    finally:
        sender.close()
