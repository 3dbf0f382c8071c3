"""Chains split over forked worker processes: same draws as in one process, errors and warnings come home."""

from __future__ import annotations

import warnings

import pytest
import torch

from probgen import fit_nuts, load_result
from probgen.infer import _workers
from probgen.infer._workers import can_fork, run_jobs
from tests._blr import make_blr

needs_fork = pytest.mark.skipif(not can_fork(), reason="fork does not exist on this platform")


def _square(value: int, report) -> int:
    report(1)
    report(2)
    return value * value


def _fail(report) -> None:
    raise ValueError("bad input in a worker")


def _warn(report) -> str:
    warnings.warn("a worker's warning", UserWarning)
    return "done"


@needs_fork
def test_jobs_return_in_order_and_report_all_progress():
    from functools import partial

    seen: list[int] = []
    results = run_jobs([partial(_square, k) for k in range(4)], report=seen.append)
    assert results == [0, 1, 4, 9]
    assert sum(seen) == 4 * 3  # every unit of every job arrives, whether sent by a worker or not


def _with_status(value: int, report) -> int:
    report(1, {"value": value})
    return value


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "in-process"])
def test_each_jobs_latest_status_reaches_the_merge(fork, monkeypatch):
    from functools import partial

    if fork and not can_fork():
        pytest.skip("fork does not exist on this platform")
    monkeypatch.setattr(_workers, "can_fork", lambda: fork)
    heard: list[tuple] = []
    results = run_jobs(
        [partial(_with_status, k) for k in range(3)],
        report=lambda n, status=None: heard.append((n, status)),
        merge=lambda statuses: {"values": sorted(s["value"] for s in statuses if s is not None)},
    )
    assert results == [0, 1, 2]
    assert sum(n for n, _ in heard) == 3
    assert heard[-1][1] == {"values": [0, 1, 2]}  # the last report knows every job's status


def test_the_nuts_bar_text_gives_phase_step_size_and_divergences():
    from probgen.infer.nuts import describe_status, merge_status

    groups = [{"warmup": False, "step_size": 0.1, "divergences": 2}, {"warmup": True, "step_size": 0.3, "divergences": 1}]
    assert describe_status(merge_status(groups)) == "warm-up, step 0.2, 3 divergent"
    assert describe_status(merge_status(groups[:1])) == "sampling, step 0.1, 2 divergent"
    assert merge_status([groups[0], None])["warmup"]  # a group not heard from yet counts as warming up


@needs_fork
def test_a_workers_exception_is_raised_here_with_its_traceback():
    with pytest.raises(ValueError, match="bad input in a worker") as info:
        run_jobs([lambda report: 1, _fail])
    assert any("worker process 1" in note for note in info.value.__notes__)


@needs_fork
def test_a_workers_warnings_are_issued_here():
    with pytest.warns(UserWarning, match="a worker's warning"):
        assert run_jobs([lambda report: "here", _warn]) == ["here", "done"]


@needs_fork
@pytest.mark.parametrize("backend", ["flat", "pyro"])
def test_forked_workers_give_the_draws_of_one_process(backend, monkeypatch):
    """Group seeds are fixed by ``seed`` and ``num_workers`` alone, so forking changes nothing."""
    problem = make_blr(num_points=10)
    kwargs = dict(num_warmup=30, num_samples=20, num_chains=3, seed=5, backend=backend, progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # short warm-up: divergences are not the point
        forked = fit_nuts(problem.model, problem.x, problem.y, num_workers=2, **kwargs)
        monkeypatch.setattr(_workers, "can_fork", lambda: False)
        here = fit_nuts(problem.model, problem.x, problem.y, num_workers=2, **kwargs)
        single = fit_nuts(problem.model, problem.x, problem.y, num_workers=1, **kwargs)
    assert forked.num_workers == 2 and single.num_workers == 1
    assert forked.samples["weight"].shape == (3, 20, 1, 2)
    for name in forked.samples:
        assert torch.equal(forked.samples[name], here.samples[name]), name
    for name in forked.sample_stats:
        assert torch.equal(forked.sample_stats[name], here.sample_stats[name]), name
    if backend == "pyro":  # chain c is seeded with seed + c wherever it runs
        assert torch.equal(forked.samples["weight"], single.samples["weight"])


def test_num_workers_is_checked_and_recorded(tmp_path):
    problem = make_blr(num_points=10)
    with pytest.raises(ValueError, match="num_workers=3 exceeds num_chains=2"):
        fit_nuts(problem.model, problem.x, problem.y, num_chains=2, num_workers=3)
    with pytest.raises(ValueError, match="num_workers must be a positive int"):
        fit_nuts(problem.model, problem.x, problem.y, num_workers=0)
    with pytest.raises(TypeError, match="num_workers must be an int"):
        fit_nuts(problem.model, problem.x, problem.y, num_workers=1.5)
    result = fit_nuts(
        problem.model, problem.x, problem.y,
        num_warmup=50, num_samples=10, num_chains=2, num_workers=2, seed=0, progress_bar=False,
    )  # fmt: skip
    idata = result.to_arviz()
    assert idata.attrs["num_workers"] == 2
    path = tmp_path / "fit.nc"
    idata.to_netcdf(path)
    assert load_result(str(path), problem.model).num_workers == 2
