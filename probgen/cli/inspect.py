"""``probgen inspect FILE.nc``: the summary table and convergence checks of a saved posterior.

The file is one that :func:`probgen.to_arviz` wrote (``posterior.nc`` of ``probgen bnn fit``),
or any ArviZ NetCDF file with a posterior group. A diffusion run saved by a diffusion result's
``to_arviz()`` has no posterior; for it the command prints the run's configuration, its training
loss, its bound and the shape of its samples.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from probgen._compat import import_arviz
from probgen.diagnostics import BFMI_MIN, ESS_MIN, RHAT_MAX, check_convergence, identifiable_view

__all__ = ["register", "handler"]


def register(subparsers: Any) -> None:
    """Add ``probgen inspect`` to the top-level parser's subcommands."""
    parser = subparsers.add_parser(
        "inspect",
        help="print the summary table and convergence warnings of a saved posterior",
        description=(
            "Print ArviZ's summary table (mean, sd, HDI, MCSE, bulk and tail ESS, R-hat) of a posterior "
            "saved as NetCDF, the divergences and BFMI of every NUTS chain, and a plain-words warning for "
            f"each failed check: R-hat above {RHAT_MAX}, ESS below {ESS_MIN:.0f}, any divergence, "
            f"BFMI below {BFMI_MIN}."
        ),
    )
    parser.add_argument(
        "file", type=Path, metavar="FILE.nc", help="a posterior.nc written by probgen bnn fit or to_netcdf"
    )
    parser.add_argument(
        "--var-names", nargs="+", metavar="SITE",
        help="summarise only these sites (default: every site; for a BNN, the identified quantities, see --weights)",
    )  # fmt: skip
    parser.add_argument(
        "--weights", action="store_true",
        help="for a BNN, summarise and check every weight too; by default only the noise scale, the log density and "
        "the log-likelihood of a few data points, because hidden units can swap between chains and make "
        "weight-level R-hat meaningless",
    )  # fmt: skip
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when any check fails")
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    """Print the summary and the checks; returns 0, or 1 under ``--strict`` when a check fails, 2 for a bad file."""
    path: Path = args.file
    if not path.is_file():
        print(f"probgen inspect: error: no such file: {path}", file=sys.stderr)
        return 2
    az = import_arviz()
    try:
        idata = az.from_netcdf(str(path))
    except (OSError, ValueError) as err:
        print(f"probgen inspect: error: {path} is not a readable ArviZ NetCDF file ({err}).", file=sys.stderr)
        return 2
    if idata.attrs.get("inference_method") == "diffusion":
        print("\n".join(_diffusion_lines(path, idata)))
        return 0
    if "posterior" not in idata.groups():
        print(f"probgen inspect: error: {path} has no posterior group.", file=sys.stderr)
        return 2
    identified = idata.attrs.get("model_kind") == "bnn" and not args.weights and args.var_names is None
    report = check_convergence(identifiable_view(idata) if identified else idata, var_names=args.var_names, warn=False)
    print(f"{path}: {report.method} posterior, {report.num_chains} chain(s) x {report.num_draws} draws")
    if identified:
        print("showing the BNN's identified quantities (noise scale, log density, log-likelihood of 5 data points); "
              "--weights adds every weight")  # fmt: skip
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200):
        print(report.summary.round(3).to_string())
    if report.divergences:
        print("divergences per chain: " + ", ".join(str(d) for d in report.divergences))
    if report.bfmi:
        print("BFMI per chain: " + ", ".join(f"{b:.2f}" for b in report.bfmi))
    if report.num_chains < 2:
        print("R-hat needs two or more chains; it is NaN for one chain of draws (SVI).")
    if report.problems:
        print("warnings:")
        for problem in report.problems:
            print(f"  - {problem}")
    else:
        print("all checks passed.")
    return 1 if args.strict and report.problems else 0


#: The chain's and the fit's configuration, in the order ``probgen inspect`` prints them.
_DIFFUSION_KEYS = (
    "net", "schedule", "num_timesteps", "event_shape", "decoder", "variance", "prediction",
    "objective", "timestep_sampling", "num_steps", "batch_size", "lr", "final_lr", "ema_decay", "seed",
)  # fmt: skip


def _diffusion_lines(path: Path, idata: Any) -> list[str]:
    """What a saved diffusion run holds: configuration, final loss, bound, samples."""
    attrs = idata.attrs
    config = ", ".join(f"{key}={_value(attrs[key])}" for key in _DIFFUSION_KEYS if key in attrs)
    lines = [f"{path}: a diffusion run ({', '.join(idata.groups())})", f"configuration: {config}"]
    if "losses" in idata.groups():
        loss = idata.losses["loss"].values
        lines.append(f"training: {loss.size} steps, final loss {loss[-1]:.4g} ({attrs.get('objective', '?')})")
    if "bound" in idata.groups():
        bound = idata.bound.attrs
        lines.append(
            f"bound on {idata.bound['x_0'].sizes['obs_id']} points: {bound['nats']:.4f} +- {bound['nats_se']:.4f} "
            f"nats ({bound['bits_per_dim']:.4f} bits/dim), a negative ELBO: an upper bound on -log p(x), not a "
            "log-likelihood"
        )
    if "posterior_predictive" in idata.groups():
        draws = idata.posterior_predictive["x_0"]
        sampler = idata.posterior_predictive.attrs.get("sampler", "?")
        lines.append(f"samples: {sampler}, x_0 of shape {dict(draws.sizes)}")
    return lines


def _value(value: Any) -> str:
    return str(list(value)) if hasattr(value, "__len__") and not isinstance(value, str) else str(value)
