"""Benchmark: one process against two on torch.distributed, for an SVI fit and a diffusion fit.

Each case trains the same model for the same number of steps with the same *global* batch: one
process with batch ``2B``, and two processes (``torchrun --standalone --nproc-per-node 2``, gloo on
loopback) with ``B`` each, whose gradients are averaged, so both take the same kind of step. The
driver runs every configuration as a fresh subprocess (a job needs its own processes), several
times, interleaved, and prints medians:

* throughput, in data points per second (steps times global batch over the training's wall time,
  measured inside the fit, so imports and process start-up are left out);
* the ratio (two processes over one) and the parallel efficiency (the ratio over 2);
* the final loss, and the loss reached per wall-second (how much of the loss's drop from its first
  step each second buys).

The SVI case is a 10-100-100-1 tanh BNN, mean-field, on 40,000 rows. In a job the SVI steps run
Pyro's traced ELBO (probgen's fused mean-field path draws its own minibatch and is not sharded), so
the single process is timed both ways: on the traced ELBO (the like-for-like baseline) and on the
fused path that a single process gets by default. The diffusion case is an MLP denoiser (width 256,
3 blocks) on 8 gaussians, trained by the ELBO with uniform timesteps.

Lines read ``case, baseline, probgen, ratio``. On a machine with two cores both processes compete
with the driver and the other rank for the cores, so the efficiency measured here is a floor.

    python benchmarks/scale.py            # full run (a few minutes)
    python benchmarks/scale.py --quick    # tiny sizes, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def worker(case: str, batch: int, steps: int, fast_path: bool, out: str) -> None:
    """One rank's (or the single process's) fit; rank 0 writes its timing to ``out``."""
    import torch
    from torch import nn

    import probgen

    torch.set_num_threads(1)
    if case == "svi":
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(40_000, 10, generator=gen)
        y = torch.tanh(x @ torch.randn(10, generator=gen)) + 0.1 * torch.randn(40_000, generator=gen)
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(10, 100), nn.Tanh(), nn.Linear(100, 100), nn.Tanh(), nn.Linear(100, 1))
        start = time.perf_counter()
        fit = probgen.fit_svi(probgen.BNN(net), x, y, num_steps=steps, batch_size=batch, num_samples=1,
                              fast_path=fast_path, seed=0, progress_bar=False)  # fmt: skip
        wall = time.perf_counter() - start
        losses = fit.losses
    else:
        from probgen.models.diffusion import get_schedule

        data = probgen.datasets.load_8gaussians().train
        torch.manual_seed(0)
        chain = probgen.DiffusionChain(probgen.MLPDenoiser(2, hidden_dim=256, num_blocks=3), get_schedule("linear", 100), event_shape=(2,))
        start = time.perf_counter()
        fit = probgen.fit_diffusion(chain, data, num_steps=steps, batch_size=batch, seed=0, progress_bar=False)
        wall = time.perf_counter() - start
        losses = fit.losses
    if probgen.is_main_process():
        world = int(os.environ.get("WORLD_SIZE", "1"))
        first, last = float(losses[: max(len(losses) // 20, 1)].mean()), float(losses[-max(len(losses) // 20, 1) :].mean())
        Path(out).write_text(json.dumps({"wall": wall, "points": steps * batch * world, "first": first, "last": last}))


def run(case: str, processes: int, batch: int, steps: int, fast_path: bool) -> dict[str, float]:
    """One configuration in fresh processes; its timing record."""
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "timing.json")
        args = [str(Path(__file__).resolve()), "--worker", case, str(batch), str(steps), str(int(fast_path)), out]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "CI": "true"}
        if processes == 1:
            command = [sys.executable, *args]
        else:
            command = [str(TORCHRUN), "--standalone", "--nproc-per-node", str(processes), *args]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{case} on {processes} process(es) failed:\n{done.stderr[-3000:]}")
        return json.loads(Path(out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        case, batch, steps, fast, out = args.worker
        worker(case, int(batch), int(steps), bool(int(fast)), out)
        return
    repeats = 1 if args.quick else args.repeats
    sizes = {"svi": (50, 20), "diffusion": (32, 20)} if args.quick else {"svi": (2000, 300), "diffusion": (1024, 300)}
    print("case, baseline, probgen, ratio")
    for case, (global_batch, steps) in sizes.items():
        configs = {"1 process": (1, global_batch, False), "2 processes": (2, global_batch // 2, False)}
        if case == "svi":
            configs["1 process, fused mean-field path"] = (1, global_batch, True)
        records: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
        for _ in range(repeats):  # interleaved, so a busy moment hits every configuration alike
            for name, (processes, batch, fast) in configs.items():
                records[name].append(run(case, processes, batch, steps, fast))
        rate = {name: statistics.median(r["points"] / r["wall"] for r in rs) for name, rs in records.items()}
        for name, rs in records.items():
            last = statistics.median(r["last"] for r in rs)
            drop = statistics.median((r["first"] - r["last"]) / r["wall"] for r in rs)
            print(f"# {case}, {name}: {rate[name]:.0f} points/s, final loss {last:.4g}, loss drop {drop:.4g} per second")
        ratio = rate["2 processes"] / rate["1 process"]
        print(f"{case} throughput (points/s) 2 vs 1 process, {rate['1 process']:.0f}, {rate['2 processes']:.0f}, {ratio:.2f}")
        print(f"# {case}: parallel efficiency {ratio / 2:.2f} (the ratio over 2 processes)")
        if case == "svi":
            fused = rate["1 process, fused mean-field path"]
            print(f"svi throughput 2 processes vs 1 on the fused path, {fused:.0f}, {rate['2 processes']:.0f}, {rate['2 processes'] / fused:.2f}")


if __name__ == "__main__":
    main()
