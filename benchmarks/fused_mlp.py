"""Benchmark: the C++ "fused" MLP density kernel against the torch "mlp" kernel compiled by TorchInductor.

NUTS spends most of its time in the log density and its gradient. probgen has two hand-written
kernels for MLP BNNs: ``"mlp"``, torch operations that the sampler compiles with TorchInductor,
and ``"fused"``, one C++ pass over blocks of data rows (``probgen/infer/_mlp_kernel.cpp``), which
``compile_bnn`` takes by default where a C++ compiler can build it. This script times, interleaved
in one process on one thread, the log density and gradient of one worker's chains (2 chains, as
``fit_nuts`` splits 4 over 2 cores) of the 8-50-1 tanh BNN of ``bnn_nuts.py``:

* ``mlp compiled``: the ``"mlp"`` kernel captured and compiled as the sampler does (``_capture``);
* ``fused``: the C++ pass called directly (the operator ``probgen::fused_mlp``);
* ``fused compiled``: the same operator inside a compiled graph, as the sampler calls it.

It prints each one's median time per call and the ratios, and checks that the two kernels agree
(float32 rounding). ``bnn_nuts.py --mlp`` measures what this is worth to a whole NUTS run.

    python benchmarks/fused_mlp.py             # 8-50-1 tanh, N = 1000, 2 chains, float32
    python benchmarks/fused_mlp.py --quick     # CI: N = 200, few repeats
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

from probgen.infer import _native
from probgen.infer._capture import capture, compile_graph
from probgen.infer._flat import compile_bnn

from bnn_nuts import make_data, make_model  # the 8-50-1 tanh BNN and data of the NUTS benchmark


def mean_us(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 200 and few repeats (CI)")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=50)
    parser.add_argument("--chains", type=int, default=2, help="chains per call (one worker's share of fit_nuts's 4)")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved repeats; medians are printed")
    parser.add_argument("--calls", type=int, default=200, help="calls per timed repeat")
    args = parser.parse_args()
    if args.quick:
        args.n, args.repeats, args.calls = 200, 3, 20
    if not _native.available():
        sys.exit("fused_mlp.py: the C++ pass cannot be built here (no C++ compiler: $CXX or g++), so nothing was measured.")
    torch.set_num_threads(1)  # as the sampler's workers run
    torch.set_default_dtype(torch.float32)
    x, y, _ = make_data(args.n, args.features, seed=0)
    model = make_model(args.features, args.hidden)
    mlp, fused = compile_bnn(model, x, y, kernel="mlp"), compile_bnn(model, x, y, kernel="fused")
    u = fused.init_positions(args.chains, torch.Generator().manual_seed(1))
    compiled = {}
    for name, density in (("mlp", mlp), ("fused", fused)):
        graph = capture(density.value_and_grad, [u])
        fn = None if graph is None else compile_graph(graph, [u])
        if fn is None:
            sys.exit(f"fused_mlp.py: the {name!r} kernel could not be compiled here.")
        compiled[name] = fn
    value, grad = fused.value_and_grad(u)
    ref_value, ref_grad = mlp.value_and_grad(u)
    print(
        f"agreement in float32, 'fused' vs 'mlp': log density {float(((value - ref_value) / ref_value).abs().max()):.1e} relative, "
        f"gradient {float((grad - ref_grad).abs().max() / ref_grad.abs().max()):.1e} of its largest entry"
    )
    engines = {
        "mlp compiled": lambda: compiled["mlp"](u),
        "fused": lambda: fused.value_and_grad(u),
        "fused compiled": lambda: compiled["fused"](u),
    }
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.repeats):
        for name, fn in engines.items():
            times[name].append(mean_us(fn, args.calls))
    med = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"\n{args.features}-{args.hidden}-1 tanh, N = {args.n}, {args.chains} chains, float32, one thread; "
        f"microseconds per call, median of {args.repeats} interleaved repeats of {args.calls} calls"
    )
    for name, value_us in med.items():
        print(f"{name:15s} {value_us:8.1f}")
    base = med["mlp compiled"]
    print("\ncase, baseline, probgen, ratio")
    print(f"density us, compiled 'mlp' kernel vs 'fused' kernel, {base:.1f}, {med['fused']:.1f}, {base / med['fused']:.2f}")
    print(f"density us, compiled 'mlp' kernel vs 'fused' kernel in a compiled graph, {base:.1f}, {med['fused compiled']:.1f}, "
          f"{base / med['fused compiled']:.2f}")


if __name__ == "__main__":
    main()
