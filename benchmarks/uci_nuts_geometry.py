"""Benchmark: how well conditioned a UCI posterior is for NUTS, and why its trees are as deep as they are.

``benchmarks/uci.py`` shows NUTS at its defaults mixing on wine-quality-red (R-hat 1.005, mean
tree depth 8) and not on yacht or energy (R-hat 1.65-2.30, every tree at the depth limit of 10,
step sizes near 1e-3). This script measures the reason, per set: the curvature of the posterior
as the sampler sees it.

For each set (split ``--split``, the protocol's 1-50-1 ReLU BNN at the library's default prior and
likelihood, the flat log density ``fit_nuts`` samples) ``--chains`` chains start from prior draws
and run ``--warmup`` iterations of NUTS warm-up (dual averaging of the step size, the diagonal
metric in Stan's windows, as ``fit_nuts``) and ``--draws`` draws. At each chain's last position
the Hessian ``H`` of the negative log joint is computed in float64 by autograd, and scaled by the
adapted diagonal inverse metric ``D``: the leapfrog integrator sees ``D^1/2 H D^1/2``, whose
eigenvalues ``lambda`` are printed as

* ``lam max``: the stiffest direction. A leapfrog step is stable only below ``2 / sqrt(lam max)``,
  which is why the adapted step size sits just under it (``step``, ``2/sqrt``).
* ``lam 1%``: the first percentile of the positive eigenvalues, the widest directions that the
  data and prior still pin down (the few near zero are the ReLU net's flat directions).
* ``negative``: directions of negative curvature (the posterior is not log-concave).
* ``steps``: ``sqrt(lam max / lam 1%)``, about the leapfrog steps a trajectory takes to cross a wide
  direction at a stable step, and ``depth``, its base-2 logarithm: the tree depth NUTS needs
  before its U-turn check ends a trajectory there. Against it ``tree`` is the mean depth the
  sampler used in its draws and ``at max`` the share of them at ``--max-tree-depth``.

With ``--laplace`` each chain then runs the warm-up and draws again with a dense metric fixed
at that position: the density is sampled in ``z`` with ``u = u0 + L z``, ``L = V |lambda_H|^-1/2``
from ``H``'s eigenvectors (eigenvalues floored at 1, the prior's precision scale), so the sampler
starts with the local Hessian's inverse as its metric. This is the test of whether a dense mass
matrix is the missing lever: if the trees stay at the limit, the curvature changes across the
posterior faster than any fixed metric can follow.

    python benchmarks/uci_nuts_geometry.py                                # every set present
    python benchmarks/uci_nuts_geometry.py --sets yacht wine-quality-red --laplace
    python benchmarks/uci_nuts_geometry.py --quick                        # CI: a small set it writes itself
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from probgen import BNN
from probgen.datasets import load_uci
from probgen.infer._flat import AutogradLogDensity, BNNLogDensity, compile_bnn
from probgen.infer.nuts import NUTSConfig, NUTSOutput, sample_nuts
from uci import DEFAULT_DATA, SETS, make_net  # the protocol's sets and network, as benchmarks/uci.py fits them

#: Eigenvalues of ``H`` are floored here for the Laplace metric: the weights' prior precision is
#: of this order in the unconstrained space, so no direction is wider than the prior allows.
LAPLACE_FLOOR = 1.0


def hessian(density: AutogradLogDensity, u: Tensor) -> Tensor:
    """The Hessian of the negative log joint at one point ``u`` (``(dim,)``), by autograd."""
    return torch.autograd.functional.hessian(lambda v: -density._log_joint(v), u, vectorize=True)


def run(density: Any, init: Tensor, args: argparse.Namespace, seed: int) -> tuple[NUTSOutput, float]:
    config = NUTSConfig(num_warmup=args.warmup, num_samples=args.draws, num_chains=init.shape[0],
                        target_accept_prob=0.8, max_tree_depth=args.max_tree_depth, progress_bar=False)
    start = time.perf_counter()
    out = sample_nuts(density, init, config, seed=seed, compile=not args.quick)
    return out, time.perf_counter() - start


def tree_stats(out: NUTSOutput, max_depth: int) -> dict[str, float]:
    depth = out.sample_stats["tree_depth"].double()
    return {
        "step": float(out.state.step_size.double().median()),
        "tree": float(depth.mean()),
        "at_max": float((depth >= max_depth).double().mean()),
        "divergent": int(out.sample_stats["diverging"].sum()),
    }


def curvature(h: Tensor, inverse_mass: Tensor) -> dict[str, float]:
    """The spectrum of ``D^1/2 H D^1/2`` in the terms of the module docstring."""
    scale = inverse_mass.sqrt()
    lam = torch.linalg.eigvalsh(scale[:, None] * (0.5 * (h + h.T)) * scale[None, :])
    positive = lam[lam > 0]
    low = float(torch.quantile(positive, 0.01))
    top = float(lam[-1])
    steps = math.sqrt(top / low)
    return {"lam_max": top, "bound": 2 / math.sqrt(top), "lam_1": low, "negative": int((lam < 0).sum()),
            "steps": steps, "depth": math.log2(steps)}


def laplace_rerun(density: BNNLogDensity, hessians: list[Tensor], out: NUTSOutput, args: argparse.Namespace) -> dict[str, float]:
    """Warm-up and draws again from the last positions, with ``H^-1`` there (``hessians``, one per
    chain) as a fixed dense metric."""
    factors = []
    for h, position in zip(hessians, out.state.position):
        lam, vectors = torch.linalg.eigh(h)
        factors.append((vectors * lam.abs().clamp(min=LAPLACE_FLOOR).rsqrt()).to(position.dtype))
    factor = torch.stack(factors)  # (chains, dim, dim): u = u0 + factor @ z
    origin = out.state.position.clone()

    def value_and_grad(z: Tensor) -> tuple[Tensor, Tensor]:
        logp, grad = density.value_and_grad(origin + torch.einsum("cij,cj->ci", factor, z))
        return logp, torch.einsum("cij,ci->cj", factor, grad)

    again, seconds = run(value_and_grad, torch.zeros_like(origin), args, seed=args.seed + 1)
    return {**tree_stats(again, args.max_tree_depth), "seconds": seconds}


def measure(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    data = load_uci(folder, split=args.split)
    exact_data = load_uci(folder, split=args.split, dtype=torch.float64)
    torch.manual_seed(args.seed)
    net = make_net(data.x_train.shape[1])
    density = compile_bnn(BNN(net), data.x_train, data.y_train)
    exact = AutogradLogDensity(BNN(copy.deepcopy(net).double()), exact_data.x_train, exact_data.y_train)
    init = density.init_positions(args.chains, torch.Generator().manual_seed(args.seed))
    out, seconds = run(density.value_and_grad, init, args, seed=args.seed)
    hessians = [hessian(exact, u.double()) for u in out.state.position]  # once: the rerun's metric uses them too
    chains = [curvature(h, m.double()) for h, m in zip(hessians, out.state.inverse_mass)]
    record: dict[str, Any] = {"n": data.x_train.shape[0], "dim": density.dim, "seconds": seconds,
                              **tree_stats(out, args.max_tree_depth)}
    for key in chains[0]:
        record[key] = statistics.median(c[key] for c in chains)
    if args.laplace:
        record["laplace"] = laplace_rerun(density, hessians, out, args)
    return record


def write_small_set(folder: Path) -> None:
    """A UCI-layout folder of 80 rows (3 inputs, a smooth target) for ``--quick``."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3))
    y = np.sin(2 * x[:, 0]) + 0.3 * x[:, 1] + 0.1 * rng.normal(size=80)
    folder.mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / "data.txt", np.column_stack([x, y]))
    np.savetxt(folder / "index_features.txt", [0, 1, 2], fmt="%d")
    np.savetxt(folder / "index_target.txt", [3], fmt="%d")


def print_table(records: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nsplit {args.split}, {args.chains} chains, {args.warmup} warm-up + {args.draws} draws, max tree depth "
          f"{args.max_tree_depth}; curvature under the adapted diagonal metric, median over chains")
    head = (f"{'set':24}{'n':>6}{'dim':>5}{'step':>9}{'2/sqrt':>9}{'lam max':>10}{'lam 1%':>9}{'negative':>9}"
            f"{'steps':>8}{'depth':>7}{'tree':>6}{'at max':>8}{'s':>6}")
    print(head)
    for name, r in records.items():
        print(f"{name:24}{r['n']:>6}{r['dim']:>5}{r['step']:>9.2g}{r['bound']:>9.2g}{r['lam_max']:>10.3g}"
              f"{r['lam_1']:>9.3g}{r['negative']:>9.0f}{r['steps']:>8.0f}{r['depth']:>7.1f}{r['tree']:>6.1f}"
              f"{r['at_max']:>8.0%}{r['seconds']:>6.0f}")
    laplace = {name: r["laplace"] for name, r in records.items() if "laplace" in r}
    if laplace:
        print("\nagain from the last positions, with the Hessian's inverse there as a fixed dense metric")
        print(f"{'set':24}{'step':>9}{'tree':>6}{'at max':>8}{'divergent':>10}{'s':>6}")
        for name, r in laplace.items():
            print(f"{name:24}{r['step']:>9.2g}{r['tree']:>6.1f}{r['at_max']:>8.0%}{r['divergent']:>10}{r['seconds']:>6.0f}")
    print("\ncase, baseline, probgen, ratio")
    limit = 2**args.max_tree_depth
    for name, r in records.items():
        print(f"{name}: leapfrog steps to cross a wide direction vs the depth limit's, {limit}, {r['steps']:.0f}, {r['steps'] / limit:.2f}")
        if name in laplace:
            print(f"{name}: mean tree depth, diagonal metric vs dense Laplace metric, {r['tree']:.2f}, "
                  f"{laplace[name]['tree']:.2f}, {laplace[name]['tree'] / r['tree']:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"folder of UCI sets (default: {DEFAULT_DATA})")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS, metavar="SET", help="sets to measure (default: all present)")
    parser.add_argument("--split", type=int, default=0, help="the standard split (default: 0)")
    parser.add_argument("--chains", type=int, default=2, help="chains (default: 2)")
    parser.add_argument("--warmup", type=int, default=150, help="warm-up iterations per chain (default: 150)")
    parser.add_argument("--draws", type=int, default=50, help="draws per chain (default: 50)")
    parser.add_argument("--max-tree-depth", type=int, default=10, help="NUTS's maximum tree depth (default: 10, the library's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--laplace", action="store_true", help="also rerun with the local Hessian's inverse as a dense metric")
    parser.add_argument("--quick", action="store_true", help="CI: a small set written here, tiny sizes, eager")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    records: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        if args.quick:
            args.data, args.sets = Path(scratch), ["small"]
            args.warmup, args.draws, args.max_tree_depth, args.laplace = 30, 10, 6, True
            write_small_set(args.data / "small")
        for name in args.sets:
            folder = args.data / name
            if not folder.is_dir():
                print(f"note: {name} skipped: no folder {folder} (see the data README for the layout)")
                continue
            records[name] = record = measure(folder, args)
            print(f"{name}: {json.dumps(record)}", flush=True)  # each set as it is measured: a long run can be cut
    if not records:
        print(f"note: no UCI set found under {args.data}; nothing to measure (pass --data FOLDER).")
        return 0
    print_table(records, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
