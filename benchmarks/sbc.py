"""Simulation-based calibration of NUTS and of mean-field SVI, on the same simulated data sets.

For a Bayesian linear regression (``BNN(nn.Linear(d, 1))``: Gaussian weights, HalfNormal noise
scale) and a tiny 1-3-1 tanh BNN (ranked on its function values at three inputs and its noise
scale, which are identified where its weights are not), every simulation draws parameters from
the prior and data from the model, fits it by NUTS and by mean-field SVI, and ranks the truth among
the posterior draws (:mod:`probgen.calibration`). It prints, per method and quantity, the
chi-square p-value of uniform ranks and the coverage of the central 90% interval (0.90 if
calibrated; with ``S`` simulations its Monte Carlo sd is ``sqrt(0.09 / S)``), and saves the rank
histograms as ``sbc_<model>_<method>.png`` in ``--out``.

NUTS should pass; mean-field SVI is expected to fail (its guide ignores posterior correlations
and under-disperses), and the coverage says by how much.

    python benchmarks/sbc.py                      # 100 simulations per model
    python benchmarks/sbc.py --simulations 200 --out runs/sbc
    python benchmarks/sbc.py --quick              # CI: 4 simulations, tiny fits, numbers not meaningful
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from probgen import BNN, fit_nuts, fit_svi  # noqa: E402
from probgen.calibration import prior_simulator, simulation_based_calibration  # noqa: E402


def _models():
    x_lin = torch.randn(15, 3, generator=torch.Generator().manual_seed(0))
    x_bnn = torch.linspace(-2, 2, 12).unsqueeze(-1)
    x_fixed = torch.tensor([[-1.5], [0.0], [1.5]])

    def tiny():
        return nn.Sequential(nn.Linear(1, 3), nn.Tanh(), nn.Linear(3, 1))

    reference = BNN(tiny())

    def function_values(values):
        weights = {name: value for name, value in values.items() if name != "noise_scale"}
        mean = reference.forward_batched(weights, x_fixed, batch_dims=1).squeeze(-1)
        return {"f(x)": mean, "noise_scale": values["noise_scale"]}

    return {
        "linear": (lambda: nn.Linear(3, 1), x_lin, None),
        "tiny_bnn": (tiny, x_bnn, function_values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("runs/sbc"))
    parser.add_argument("--models", nargs="+", default=["linear", "tiny_bnn"], choices=["linear", "tiny_bnn"])
    parser.add_argument("--quick", action="store_true", help="CI size: the script runs, the numbers mean nothing")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    warnings.filterwarnings("ignore", message=".*max_tree_depth")
    simulations = 4 if args.quick else args.simulations
    num_draws = 9 if args.quick else 99
    nuts = dict(num_warmup=20, num_samples=10, num_chains=1) if args.quick else dict(num_warmup=300, num_samples=100, num_chains=4)
    svi = dict(num_steps=50) if args.quick else dict(num_steps=3000, final_lr=1e-3)
    args.out.mkdir(parents=True, exist_ok=True)

    for model_name, (factory, x, quantities) in _models().items():
        if model_name not in args.models:
            continue

        def simulate(seed, factory=factory, x=x):
            torch.manual_seed(seed)
            return prior_simulator(BNN(factory()), x, None, observed={"obs": 1})(seed)

        def by_nuts(data, seed, factory=factory):
            torch.manual_seed(seed)
            return fit_nuts(BNN(factory()), *data[0], seed=seed, progress_bar=False, **nuts)

        def by_svi(data, seed, factory=factory):
            torch.manual_seed(seed)
            return fit_svi(BNN(factory()), *data[0], guide="normal", num_samples=num_draws, seed=seed, progress_bar=False, **svi)

        for method, fit in [("nuts", by_nuts), ("svi-meanfield", by_svi)]:
            start = time.perf_counter()
            result = simulation_based_calibration(
                simulate, fit, num_simulations=simulations, num_draws=num_draws, quantities=quantities, progress_bar=False
            )
            seconds = (time.perf_counter() - start) / simulations
            tests = result.chi_square(num_bins=2 if args.quick else 10)
            coverage = result.coverage(0.9)
            sd = math.sqrt(0.09 / simulations)
            print(flush=True)
            print(f"== {model_name}, {method}: {simulations} simulations, {num_draws} draws each, {seconds:.2f} s per fit")
            for name, (statistic, p) in tests.items():
                print(f"   {name:>12}: chi-square {statistic:7.2f}  p = {p:.2g}  90% coverage {coverage[name]:.2f} (sd {sd:.2f})")
            worst, smallest = min(coverage.values()), min(p for _, p in tests.values())
            # a 1% false-alarm budget over the quantities of this model (Bonferroni)
            verdict = "uniform ranks" if smallest > 0.01 / len(tests) else "NOT uniform ranks"
            print(f"   lowest 90% coverage: {worst:.2f}; smallest p: {smallest:.2g} -> {verdict} at 1% over {len(tests)} tests")
            axes = result.plot(num_bins=2 if args.quick else 10)
            figure = axes.ravel()[0].figure
            figure.suptitle(f"SBC ranks: {model_name}, {method}")
            figure.tight_layout()
            figure.savefig(args.out / f"sbc_{model_name}_{method}.png", dpi=90)
            plt.close(figure)


if __name__ == "__main__":
    main()
