"""SVI time per step on a 1-H-1 tanh BNN: probgen against two baselines written here.

Cases, all with Adam, full-batch (or --batch-size) steps on the same data and seed:

* ``torch``: a deterministic training loop of the same network (Gaussian NLL): the floor.
* ``handwritten``: mean-field Gaussian VI written by hand in plain torch (closed-form KL for the
  weights, one reparameterised draw, a Monte Carlo term for the noise scale), default Adam.
* ``handwritten-fused``: the same loop with ``Adam(fused=True)``, the optimiser probgen uses,
  so that the optimiser's share of the difference is visible.
* ``probgen``: ``probgen.SVI`` with the mean-field guide (its fast path, the default).
* ``probgen-pyro``: ``probgen.SVI(fast_path=False)``, Pyro's ``TraceMeanField_ELBO``.

Repetitions of the cases are interleaved so that load on the machine hits all of them alike;
the first repetition is a warm-up and is dropped. One line per case: case, baseline ms/step,
probgen ms/step, ratio (probgen / baseline), medians over repetitions.

    python benchmarks/bnn_svi.py            # N=1000, H=50, 7 repetitions of 200 steps
    python benchmarks/bnn_svi.py --quick    # a smoke run for CI
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from probgen import BNN, SVI, GaussianPrior


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=gen) * 2 - 1
    y = torch.sin(3 * x[:, 0]) + 0.1 * torch.randn(n, generator=gen)
    return x, y


def torch_loop(x: torch.Tensor, y: torch.Tensor, hidden: int, batch: int | None) -> Callable[[], None]:
    net = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, 1))
    log_sigma = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([*net.parameters(), log_sigma], lr=1e-2)

    def step() -> None:
        xb, yb = _batch(x, y, batch)
        loss = -torch.distributions.Normal(net(xb)[:, 0], log_sigma.exp()).log_prob(yb).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def handwritten_vi(
    x: torch.Tensor, y: torch.Tensor, hidden: int, batch: int | None, fused: bool = False
) -> Callable[[], None]:
    """Mean-field VI by hand: the same prior (fan-in scaled Normal), likelihood and KL as probgen's."""
    shapes = {"w1": (hidden, 1), "b1": (hidden,), "w2": (1, hidden), "b2": (1,)}
    prior_sd = {"w1": 1.0, "b1": 1.0, "w2": 1.0 / math.sqrt(hidden), "b2": 1.0}
    loc = {k: (0.1 * torch.randn(s)).requires_grad_() for k, s in shapes.items()}
    rho = {k: torch.full(s, math.log(math.expm1(0.1))).requires_grad_() for k, s in shapes.items()}
    noise_loc = torch.zeros((), requires_grad=True)
    noise_rho = torch.tensor(math.log(math.expm1(0.1)), requires_grad=True)
    opt = torch.optim.Adam([*loc.values(), *rho.values(), noise_loc, noise_rho], lr=1e-2, fused=fused)
    n = x.shape[0]

    def step() -> None:
        xb, yb = _batch(x, y, batch)
        w, kl = {}, 0.0
        for k in shapes:
            sd = F.softplus(rho[k])
            w[k] = loc[k] + sd * torch.randn_like(sd)
            p = prior_sd[k]
            kl = kl + (torch.log(p / sd) + (sd**2 + loc[k] ** 2) / (2 * p**2) - 0.5).sum()
        nsd = F.softplus(noise_rho)
        u = noise_loc + nsd * torch.randn(())
        sigma = u.exp()
        # log q(u) - log HalfNormal(sigma; 1) - log|d sigma / du|
        mc = (-0.5 * ((u - noise_loc) / nsd) ** 2 - nsd.log()) - (
            0.5 * math.log(2 / math.pi) - 0.5 * sigma**2
        ) - u
        f = F.linear(torch.tanh(F.linear(xb, w["w1"], w["b1"])), w["w2"], w["b2"])[:, 0]
        ll = torch.distributions.Normal(f, sigma).log_prob(yb).sum() * (n / xb.shape[0])
        loss = kl + mc - ll
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def probgen_svi(x: torch.Tensor, y: torch.Tensor, hidden: int, batch: int | None, fast: bool) -> Callable[[], None]:
    net = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, 1))
    svi = SVI(BNN(net, GaussianPrior(1.0, fan_in=True)), lr=1e-2, batch_size=batch, fast_path=fast)
    svi.init(x, y, seed=0)
    if svi.fast_path != fast:
        raise RuntimeError("the fast path did not engage as asked")
    return lambda: svi.update(x, y)


def _batch(x: torch.Tensor, y: torch.Tensor, batch: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    if batch is None or batch >= x.shape[0]:
        return x, y
    idx = torch.randperm(x.shape[0])[:batch]
    return x[idx], y[idx]


def time_per_step(step: Callable[[], None], num_steps: int) -> float:
    start = time.perf_counter()
    for _ in range(num_steps):
        step()
    return (time.perf_counter() - start) / num_steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-points", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--num-steps", type=int, default=200, help="steps per repetition")
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest here)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for CI")
    args = parser.parse_args()
    if args.quick:
        args.num_steps, args.repeats = 20, 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, y = make_data(args.num_points, seed=0)
    cases = {
        "torch": torch_loop(x, y, args.hidden, args.batch_size),
        "handwritten": handwritten_vi(x, y, args.hidden, args.batch_size),
        "handwritten-fused": handwritten_vi(x, y, args.hidden, args.batch_size, fused=True),
        "probgen": probgen_svi(x, y, args.hidden, args.batch_size, fast=True),
        "probgen-pyro": probgen_svi(x, y, args.hidden, args.batch_size, fast=False),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for rep in range(args.repeats + 1):
        for name, step in cases.items():
            t = time_per_step(step, args.num_steps)
            if rep > 0:
                times[name].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"# 1-{args.hidden}-1 tanh BNN, N={args.num_points}, batch={args.batch_size or 'full'}, "
          f"{args.num_steps} steps x {args.repeats} repetitions, {args.threads} thread(s); medians in ms/step")
    print("case, baseline, probgen, ratio")
    for base in ("torch", "handwritten", "handwritten-fused"):
        for ours in ("probgen", "probgen-pyro"):
            print(f"{ours} vs {base}, {med[base]:.3f}, {med[ours]:.3f}, {med[ours] / med[base]:.2f}")


if __name__ == "__main__":
    main()
