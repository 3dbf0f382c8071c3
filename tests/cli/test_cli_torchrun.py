"""`torchrun --nproc-per-node 2 -m probgen ...`: two ranks fit, rank 0 alone writes and prints.

The commands run as a user types them, through torch's own launcher (``--standalone`` picks a free
port on loopback), with gloo on the CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")
needs_torchrun = pytest.mark.skipif(shutil.which(str(TORCHRUN)) is None, reason="torchrun is not installed next to this Python")


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "true", "PYTHONPATH": str(ROOT)}
    command = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "probgen", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@needs_torchrun
def test_bnn_fit_and_diffusion_fit_under_torchrun_write_one_run(tmp_path):
    data = ROOT / "data" / "cosine_train.csv"
    bnn = _torchrun("bnn", "fit", "--data", str(data), "--target", "y", "--method", "svi", "--num-steps", "30",
                    "--hidden", "5", "--out", "bnn", "--test-size", "0.2", cwd=tmp_path)  # fmt: skip
    assert bnn.returncode == 0, bnn.stderr[-3000:]
    assert bnn.stdout.count("verdict:") == 1  # rank 0 alone reports
    assert (tmp_path / "bnn" / "posterior.nc").is_file() and (tmp_path / "bnn" / "svi_state.pt").is_file()
    metrics = json.loads((tmp_path / "bnn" / "test_metrics.json").read_text())
    assert metrics["num_test"] == 20
    diffusion = _torchrun("diffusion", "fit", "--data", "8gaussians", "--out", "chain", "--num-steps", "10",
                          "--timesteps", "5", "--hidden", "8", "--num-samples", "20", cwd=tmp_path)  # fmt: skip
    assert diffusion.returncode == 0, diffusion.stderr[-3000:]
    assert diffusion.stdout.count("bound on") == 1
    assert {"model.pt", "bound.json", "checkpoint.pt"} <= {p.name for p in (tmp_path / "chain").iterdir()}
