"""A fit killed with SIGKILL at random moments leaves a checkpoint that loads and resumes exactly.

A child process runs ``fit_svi`` with a checkpoint after every step (``eval_every=1``), so most of
its time is spent inside ``SVIState.save``: a kill lands during a save in most trials. After each
kill the file on disk must load, and resuming from it must end bit for bit where an uninterrupted
run of the same length ends (losses, guide parameters, optimiser state), learning-rate schedule
included. The kill moments come from a seeded generator, so the test is repeatable up to the
scheduling of the child.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from probgen import SVIState, fit_svi

TOTAL_STEPS = 400

CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    import torch
    torch.set_default_dtype(torch.float64)  # as tests/conftest.py sets it for the parent
    torch.set_num_threads(1)
    from tests.test_kill import problem
    from probgen import fit_svi
    model, x, y = problem()
    fit_svi(model, x, y, **{options!r}, checkpoint={path!r})
    """
)


def problem():
    """A small BNN regression with a fixed initialisation, the same in the child and here."""
    from torch import nn

    from probgen import BNN

    generator = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, generator=generator)
    y = x.sum(-1) + 0.1 * torch.randn(64, generator=generator)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))
    return BNN(net), x, y


def options(num_steps: int) -> dict:
    # minibatches draw from the RNG every step, and final_lr makes the schedule part of the state
    return dict(
        num_steps=num_steps, seed=5, batch_size=16, lr=0.02, final_lr=1e-3, eval_every=1,
        num_samples=4, progress_bar=False,
    )  # fmt: skip


def _kill_during_fit(path: Path, delay: float) -> bool:
    """Start the child, wait for its first checkpoint, kill it ``delay`` s later; True if it was still running."""
    root = str(Path(__file__).resolve().parents[1])
    code = CHILD.format(root=root, options=options(TOTAL_STEPS), path=str(path))
    env = {**os.environ, "PYTHONPATH": root}
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not path.exists():
            if child.poll() is not None:
                raise AssertionError(f"the child ended before its first checkpoint: {child.stderr.read().decode()}")
            if time.monotonic() > deadline:
                raise AssertionError("no checkpoint after 300 s")
            time.sleep(0.005)
        time.sleep(delay)
        running = child.poll() is None
        child.send_signal(signal.SIGKILL)
        child.wait()
        return running
    finally:
        if child.poll() is None:
            child.kill()
        child.stderr.close()


@pytest.mark.slow
def test_a_killed_fit_resumes_to_the_uninterrupted_result(tmp_path):
    model, x, y = problem()
    whole = fit_svi(model, x, y, **options(TOTAL_STEPS))
    moments = random.Random(12).sample([i / 100 for i in range(1, 150)], 5)
    killed_midway = 0
    for trial, delay in enumerate(moments):
        path = tmp_path / f"trial{trial}" / "svi.pt"
        path.parent.mkdir()
        killed_midway += _kill_during_fit(path, delay)
        state = SVIState.load(path)  # must load: never a 0-byte or half-written file
        assert 1 <= state.step <= TOTAL_STEPS
        leftovers = [p.name for p in path.parent.iterdir() if p.name != "svi.pt"]
        model, x, y = problem()
        rest = TOTAL_STEPS - state.step
        if rest == 0:
            resumed_state = state
        else:
            resumed = fit_svi(model, x, y, **options(rest), init_state=state)
            resumed_state = resumed.state
        assert resumed_state.step == TOTAL_STEPS
        assert torch.equal(resumed_state.losses, whole.state.losses), (trial, state.step)
        for name, value in whole.state.guide_state.items():
            assert torch.equal(resumed_state.guide_state[name], value), (trial, name)
        # a kill during a save may leave the temporary file behind, never a damaged target
        assert all(name.startswith(".svi.pt") or name.startswith("svi.pt.") for name in leftovers), leftovers
    # most trials must really interrupt the run, or the test proves nothing about kills
    assert killed_midway >= 3, killed_midway
