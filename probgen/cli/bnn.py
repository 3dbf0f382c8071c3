"""``probgen bnn fit`` and ``probgen demo``: fit a BNN to a CSV file and write a report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Literal, get_args

import pandas as pd
import torch
from torch import nn

from probgen._io import save_text
from probgen._validate import as_tensor, check_choice
from probgen.cli._common import (
    non_negative_int,
    positive_float,
    positive_int,
    prepare_output_folder,
    read_numeric_csv,
)
from probgen.cli._report import write_bnn_report
from probgen.datasets._base import DATA_DIR
from probgen.infer.mcmc import fit_nuts
from probgen.infer.results import PosteriorResult
from probgen.infer.svi import GUIDES, fit_svi
from probgen.likelihoods import Bernoulli, Categorical, Gaussian, Likelihood
from probgen.models.bnn import BNN
from probgen.priors import GaussianPrior

__all__ = ["register", "fit_from_csv"]

Method = Literal["svi", "nuts"]
#: Inference methods of ``probgen bnn fit``, in the order of :data:`Method`.
METHODS: tuple[Method, ...] = get_args(Method)
LikelihoodName = Literal["gaussian", "bernoulli", "categorical"]
#: Observation models of ``probgen bnn fit --likelihood``, in the order of :data:`LikelihoodName`.
LIKELIHOODS: tuple[LikelihoodName, ...] = get_args(LikelihoodName)
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}


def register(subparsers: Any) -> None:
    """Add ``bnn fit`` and ``demo`` to the top-level parser."""
    bnn = subparsers.add_parser("bnn", help="Bayesian neural networks", description="Bayesian neural networks.")
    bnn_sub = bnn.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    fit = bnn_sub.add_parser(
        "fit",
        help="fit a BNN to a CSV file by SVI or NUTS",
        description="Fit a one-hidden-layer BNN to columns of a CSV file and write the posterior "
        "(posterior.nc), a summary (summary.csv) and plots to --out.",
    )
    fit.add_argument("--data", required=True, type=Path, help="CSV file with a header row")
    fit.add_argument("--target", required=True, help="name of the target column")
    fit.add_argument("--features", nargs="+", help="feature columns (default: every other column)")
    fit.add_argument("--method", choices=METHODS, default="nuts", help="inference method (default: nuts)")
    fit.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    _add_model_options(fit)
    fit.set_defaults(func=_fit_command)
    bnn.set_defaults(func=lambda args: _print_help(bnn))

    demo = subparsers.add_parser(
        "demo",
        help="fit a BNN by SVI and by NUTS on a bundled data set",
        description="Fit a 1-50-1 tanh BNN by SVI and by NUTS to the bundled two-cluster cosine toy "
        "(data/cosine_train.csv) and write both reports to --out.",
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: runs/demo)")
    demo.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    demo.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    demo.set_defaults(func=_demo_command)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--likelihood", choices=LIKELIHOODS, default="gaussian", help="observation model (default: gaussian)")
    p.add_argument("--hidden", type=positive_int, default=50, help="hidden units (default: 50)")
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default="tanh", help="activation (default: tanh)")
    p.add_argument("--prior-scale", type=positive_float, default=1.0, help="prior scale before fan-in scaling (default: 1)")
    p.add_argument("--no-standardize", action="store_true", help="use features and a real target as given")
    p.add_argument("--guide", choices=sorted(GUIDES), default="normal", help="SVI guide (default: normal)")
    p.add_argument("--num-steps", type=positive_int, default=5000, help="SVI steps (default: 5000)")
    p.add_argument("--lr", type=positive_float, default=1e-2, help="SVI learning rate (default: 0.01)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="SVI minibatch size (default: all rows)")
    p.add_argument("--num-warmup", type=non_negative_int, default=500, help="NUTS warm-up iterations per chain (default: 500)")
    p.add_argument("--num-samples", type=positive_int, default=500, help="draws per chain (default: 500)")
    p.add_argument("--num-chains", type=positive_int, default=4, help="NUTS chains (default: 4)")
    p.add_argument(
        "--num-workers", type=positive_int, default=None, help="processes running the NUTS chains (default: one per core, at most one per chain)"
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _read_table(
    path: Path, target: str, features: list[str] | None, *, labels: bool = False
) -> tuple[pd.DataFrame, pd.Series]:
    """The feature and target columns, checked (``labels``: the target holds class labels, which may be text)."""
    header = read_numeric_csv(path, allow_text=_all_columns(path)).columns  # the file exists, has rows
    if target not in header:
        raise ValueError(f"target column {target!r} is not in {path.name}; columns are {list(header)}.")
    missing = [c for c in features or () if c not in header]
    if missing:
        raise ValueError(f"feature column(s) {missing} are not in {path.name}; columns are {list(header)}.")
    features = features or [c for c in header if c != target]
    if target in features:
        raise ValueError(f"the target column {target!r} cannot also be a feature.")
    frame = read_numeric_csv(path, [*features, target], allow_text=(target,) if labels else ())
    return frame[features], frame[target]


def _all_columns(path: Path) -> list[str]:
    """The header of a CSV file (read before the columns are checked one by one)."""
    try:
        return list(pd.read_csv(path, nrows=0).columns)
    except (pd.errors.EmptyDataError, FileNotFoundError):
        return []


def fit_from_csv(
    data: Path,
    target: str,
    features: list[str] | None,
    method: Method,
    out: Path,
    options: argparse.Namespace,
) -> tuple[PosteriorResult, dict[str, Path]]:
    """Read the CSV, build the BNN, fit it and write the report; returns the result and file paths."""
    check_choice("method", method, METHODS)
    out = prepare_output_folder(out)
    x_frame, y_series = _read_table(data, target, features, labels=options.likelihood != "gaussian")
    x = as_tensor("x", x_frame, dtype=torch.float32, ndim=2)
    likelihood: Likelihood
    scaling: dict[str, Any] = {"features": list(x_frame.columns), "target": target}
    if options.likelihood == "gaussian":
        likelihood = Gaussian()
        y = as_tensor("y", y_series, dtype=torch.float32, ndim=1)
    else:
        y = as_tensor("y", y_series, dtype=torch.long, ndim=1)
        likelihood = Bernoulli() if options.likelihood == "bernoulli" else Categorical(int(y.max()) + 1)
    if not options.no_standardize:
        mean, std = x.mean(0), x.std(0).clamp_min(1e-12)
        x = (x - mean) / std
        scaling.update(x_mean=mean.tolist(), x_std=std.tolist())
        if options.likelihood == "gaussian":
            y_mean, y_std = y.mean(), y.std().clamp_min(1e-12)
            y = (y - y_mean) / y_std
            scaling.update(y_mean=float(y_mean), y_std=float(y_std))
    outputs = likelihood.output_dim(1)
    activation = ACTIVATIONS[options.activation]
    torch.manual_seed(options.seed)
    net = nn.Sequential(nn.Linear(x.shape[1], options.hidden), activation(), nn.Linear(options.hidden, outputs))
    model = BNN(net, GaussianPrior(options.prior_scale, fan_in=True), likelihood)
    progress = not options.no_progress
    result: PosteriorResult
    if method == "svi":
        result = fit_svi(
            model, x, y, guide=options.guide, num_steps=options.num_steps, lr=options.lr,
            batch_size=options.batch_size, num_samples=options.num_samples * options.num_chains,
            seed=options.seed, progress_bar=progress,
        )  # fmt: skip
    else:
        result = fit_nuts(
            model, x, y, num_warmup=options.num_warmup, num_samples=options.num_samples,
            num_chains=options.num_chains, num_workers=options.num_workers, seed=options.seed,
            progress_bar=progress,
        )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    paths = write_bnn_report(result, out)
    scaling_path = out / "scaling.json"
    save_text(scaling_path, json.dumps(scaling, indent=2))
    paths["scaling"] = scaling_path
    return result, paths


def _fit_command(args: argparse.Namespace) -> int:
    _, paths = fit_from_csv(args.data, args.target, args.features, args.method, args.out, args)
    for kind, path in paths.items():
        print(f"{kind:>12}: {path}")
    return 0


def _demo_command(args: argparse.Namespace) -> int:
    data = DATA_DIR / "cosine_train.csv"
    if not data.exists():
        raise FileNotFoundError(f"{data} is missing; run data/make_data.py from the repository root.")
    parser = argparse.ArgumentParser()
    _add_model_options(parser)
    options = parser.parse_args(["--seed", str(args.seed)])
    if args.quick:
        options.num_steps, options.num_warmup, options.num_samples, options.num_chains = 50, 20, 20, 2
    for method in METHODS:
        print(f"== {method}")
        result, paths = fit_from_csv(data, "y", ["x"], method, args.out / method, options)
        for kind, path in paths.items():
            print(f"{kind:>12}: {path}")
        print(f"{'wall time':>12}: {result.wall_time:.1f} s")
    return 0
