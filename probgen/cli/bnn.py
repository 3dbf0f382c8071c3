"""``probgen bnn fit`` and ``probgen demo``: fit a BNN to a CSV file and write a report.

Inference options left unset take the library's defaults (``fit_svi``'s and ``fit_nuts``'s), so the
command line fits what ``fit_svi(BNN(net), x, y)`` would; the help text quotes them from the
functions' signatures. ``--test-size`` holds out a seeded random fraction of the rows,
standardises on the rest only, and reports the held-out RMSE (or accuracy) and the mixture
log-likelihood on the original scale (``test_metrics.json``).
"""

from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path
from typing import Any, Literal, get_args

import pandas as pd
import torch
from torch import Tensor, nn

from probgen._io import save_csv, save_text
from probgen._validate import as_tensor, check_choice
from probgen.cli._common import (
    DEFAULT_THREADS,
    non_negative_int,
    open_unit_interval,
    positive_float,
    positive_int,
    prepare_output_folder,
    read_numeric_csv,
    resume_hint_on_interrupt,
    resumed_state,
)
from probgen.cli._heldout import held_out_metrics
from probgen.cli._report import write_bnn_report
from probgen.datasets._base import DATA_DIR
from probgen.datasets.uci import Standardization
from probgen.infer.arviz import load_result
from probgen.infer.mcmc import fit_nuts
from probgen.infer import is_main_process as is_main
from probgen.infer.results import PosteriorResult, SVIState
from probgen.infer.svi import GUIDES, LR_DECAY, fit_svi
from probgen.likelihoods import Bernoulli, Categorical, Gaussian, Likelihood
from probgen.models.bnn import BNN
from probgen.priors import GaussianPrior

__all__ = ["register", "fit_from_csv", "predict_from_run", "build_model", "MODEL_FILE"]

#: The file beside ``posterior.nc`` that describes the fitted model, so that it can be rebuilt.
MODEL_FILE = "model.json"
MODEL_FORMAT = "probgen.bnn_cli_model"

Method = Literal["svi", "nuts"]
#: Inference methods of ``probgen bnn fit``, in the order of :data:`Method`.
METHODS: tuple[Method, ...] = get_args(Method)
LikelihoodName = Literal["gaussian", "bernoulli", "categorical"]
#: Observation models of ``probgen bnn fit --likelihood``, in the order of :data:`LikelihoodName`.
LIKELIHOODS: tuple[LikelihoodName, ...] = get_args(LikelihoodName)
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}


def register(subparsers: Any) -> None:
    """Add ``bnn fit``, ``bnn predict`` and ``demo`` to the top-level parser."""
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
    fit.add_argument(
        "--test-size", type=open_unit_interval, default=None,
        help="hold out this fraction of the rows (random, seeded by --seed), standardise on the rest and "
        "report test RMSE and log-likelihood on the original scale (default: fit every row)",
    )  # fmt: skip
    fit.add_argument(
        "--test", type=Path, default=None, metavar="FILE",
        help="score the fit on this CSV file (same columns) instead of holding out rows; see --test-size",
    )  # fmt: skip
    fit.add_argument(
        "--resume", action="store_true",
        help=f"SVI: continue the interrupted fit saved in --out ({SVI_CHECKPOINT}) up to --num-steps in all",
    )  # fmt: skip
    _add_model_options(fit)
    fit.set_defaults(func=_fit_command)

    predict = bnn_sub.add_parser(
        "predict",
        help="predict on a new CSV file with a fitted run",
        description="Rebuild the BNN of a 'probgen bnn fit' run from its folder (model.json, scaling.json, "
        "posterior.nc) and write the posterior predictive for every row of a CSV file, in the data's units.",
    )
    predict.add_argument("--model", required=True, type=Path, help="the --out folder of 'probgen bnn fit'")
    predict.add_argument("--data", required=True, type=Path, help="CSV file with the run's feature columns")
    predict.add_argument("--out", required=True, type=Path, help="the predictions CSV file to write")
    predict.add_argument("--level", type=open_unit_interval, default=0.9, help="central interval level (default: 0.9)")
    predict.add_argument("--seed", type=non_negative_int, default=0, help="seed of the predictive draws (default: 0)")
    predict.set_defaults(func=_predict_command)
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
    p.add_argument(
        "--layer-prior-scale", type=_layer_scale, action="append", metavar="LAYER=SCALE",
        help="a layer's own prior scale, by module path: 0 is the hidden layer, 2 the output layer "
        "(e.g. --layer-prior-scale 0=5; repeatable; default: --prior-scale for every layer)",
    )  # fmt: skip
    p.add_argument("--no-standardize", action="store_true", help="use features and a real target as given")
    p.add_argument("--guide", choices=sorted(GUIDES), default="normal", help="SVI guide (default: normal)")
    library = "(default: the library's, %s)"
    p.add_argument("--num-steps", type=positive_int, default=None, help="SVI steps " + library % _default(fit_svi, "num_steps"))
    p.add_argument("--lr", type=positive_float, default=None, help="SVI learning rate " + library % _default(fit_svi, "lr"))
    p.add_argument(
        "--final-lr", type=positive_float, default=None,
        help="SVI learning rate at the last step, reached by exponential decay (default: the library's, --lr / %g)" % LR_DECAY,
    )  # fmt: skip
    p.add_argument("--batch-size", type=positive_int, default=None, help="SVI minibatch size (default: all rows)")
    p.add_argument(
        "--target-accept-prob", type=open_unit_interval, default=None,
        help="NUTS step-size adaptation target " + library % _default(fit_nuts, "target_accept_prob"),
    )  # fmt: skip
    p.add_argument(
        "--max-tree-depth", type=positive_int, default=None,
        help="NUTS maximum tree depth " + library % _default(fit_nuts, "max_tree_depth"),
    )  # fmt: skip
    p.add_argument(
        "--num-warmup", type=non_negative_int, default=None,
        help="NUTS warm-up iterations per chain " + library % _default(fit_nuts, "num_warmup"),
    )  # fmt: skip
    p.add_argument(
        "--num-samples", type=positive_int, default=None,
        help="draws per chain (SVI: draws from the guide, times --num-chains) " + library % _default(fit_nuts, "num_samples"),
    )  # fmt: skip
    p.add_argument("--num-chains", type=positive_int, default=None, help="NUTS chains " + library % _default(fit_nuts, "num_chains"))
    p.add_argument(
        "--num-workers", type=positive_int, default=None, help="processes running the NUTS chains (default: one per core, at most one per chain)"
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--threads", type=positive_int, default=DEFAULT_THREADS,
        help="torch threads per process (default: %d; on small tensors more threads contend and run slower)" % DEFAULT_THREADS,
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


#: The module paths of the command line's network: Linear, activation, Linear.
LAYER_PATHS = ("0", "2")


def _layer_scale(text: str) -> tuple[str, float]:
    """An argparse type: ``LAYER=SCALE`` with a layer path of the network and a positive scale."""
    path, sep, value = text.partition("=")
    if not sep or path not in LAYER_PATHS:
        raise argparse.ArgumentTypeError(f"must be LAYER=SCALE with LAYER one of {', '.join(LAYER_PATHS)}, got {text!r}")
    return path, positive_float(value)


def _default(function: Any, name: str) -> Any:
    """A keyword's default in ``function``'s signature: the command line quotes the library, never a copy."""
    return inspect.signature(function).parameters[name].default


def _given(**options: Any) -> dict[str, Any]:
    """The options the user set (``None`` means: the library's default)."""
    return {key: value for key, value in options.items() if value is not None}


def _held_out(n: int, test_size: float, seed: int) -> tuple[Tensor, Tensor]:
    """Training and test rows of a seeded random split that holds out ``round(test_size * n)`` rows."""
    num_test = round(test_size * n)
    if not 1 <= num_test < n:
        raise ValueError(f"--test-size {test_size} holds out {num_test} of {n} rows; it must leave at least one row on each side.")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[num_test:], perm[:num_test]


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
    is_regression = options.likelihood == "gaussian"
    if is_regression:
        likelihood = Gaussian()
        y = as_tensor("y", y_series, dtype=torch.float32, ndim=1)
    else:
        y = as_tensor("y", y_series, dtype=torch.long, ndim=1)
        likelihood = Bernoulli() if options.likelihood == "bernoulli" else Categorical(int(y.max()) + 1)
    test_size, test_file = getattr(options, "test_size", None), getattr(options, "test", None)
    if test_size is not None and test_file is not None:
        raise ValueError("pass either --test-size (hold out rows of --data) or --test FILE (a separate file), not both.")
    x_test = y_test = None
    if test_file is not None:
        test_x, test_y = _read_table(Path(test_file), target, list(x_frame.columns), labels=options.likelihood != "gaussian")
        x_test = as_tensor("x", test_x, dtype=torch.float32, ndim=2)
        y_test = as_tensor("y", test_y, dtype=torch.float32 if is_regression else torch.long, ndim=1)
        scaling.update(test_file=str(Path(test_file).resolve()))
    if test_size is not None:
        train_rows, test_rows = _held_out(x.shape[0], test_size, options.seed)
        x, x_test, y, y_test = x[train_rows], x[test_rows], y[train_rows], y[test_rows]
        scaling.update(test_size=test_size, test_rows=sorted(test_rows.tolist()))
    scaler: Standardization | None = None
    if not options.no_standardize:
        # statistics of the training rows only, so that held-out rows stay unseen
        mean, std = x.mean(0), x.std(0).clamp_min(1e-12)
        x = (x - mean) / std
        scaling.update(x_mean=mean.tolist(), x_std=std.tolist())
        y_mean, y_std = 0.0, 1.0
        if is_regression:
            y_mean, y_std = float(y.mean()), float(y.std().clamp_min(1e-12))
            y = (y - y_mean) / y_std
            scaling.update(y_mean=y_mean, y_std=y_std)
        scaler = Standardization(mean, std, y_mean, y_std)
        if x_test is not None and y_test is not None:
            x_test = scaler.scale_x(x_test)
            y_test = scaler.scale_y(y_test) if is_regression else y_test
    config = {
        "format": MODEL_FORMAT, "version": 1, "features": list(x_frame.columns), "target": target,
        "hidden": options.hidden, "activation": options.activation, "likelihood": options.likelihood,
        "num_classes": getattr(likelihood, "num_classes", None), "prior_scale": options.prior_scale,
        "layer_scales": dict(getattr(options, "layer_prior_scale", None) or []), "method": method,
    }  # fmt: skip
    torch.manual_seed(options.seed)
    model = build_model(config)
    progress = not options.no_progress and is_main()  # under torchrun: one bar, rank 0's
    result: PosteriorResult
    if method == "svi":
        draws = None
        if options.num_samples is not None:
            draws = options.num_samples * (options.num_chains or _default(fit_nuts, "num_chains"))
        checkpoint = out / SVI_CHECKPOINT
        total = options.num_steps if options.num_steps is not None else _default(fit_svi, "num_steps")
        resume = getattr(options, "resume", False)
        init_state, steps = resumed_state(checkpoint, total, SVIState.load) if resume else (None, total)
        result = fit_svi(
            model, x, y, guide=options.guide, seed=options.seed, progress_bar=progress, num_steps=steps,
            init_state=init_state, checkpoint=str(checkpoint),
            **_given(
                lr=options.lr, final_lr=getattr(options, "final_lr", None), batch_size=options.batch_size, num_samples=draws,
            ),
        )  # fmt: skip
    else:
        result = fit_nuts(
            model, x, y, num_workers=options.num_workers, seed=options.seed, progress_bar=progress,
            **_given(
                num_warmup=options.num_warmup, num_samples=options.num_samples, num_chains=options.num_chains,
                target_accept_prob=getattr(options, "target_accept_prob", None),
                max_tree_depth=getattr(options, "max_tree_depth", None),
            ),
        )  # fmt: skip
    if not is_main():  # under torchrun every rank fits; rank 0 alone writes the report
        return result, {}
    out.mkdir(parents=True, exist_ok=True)
    labels = (str(x_frame.columns[0]), str(target))
    held_out = (x_test, y_test) if x_test is not None and y_test is not None else None
    paths = write_bnn_report(result, out, scaling=scaler if is_regression else None, labels=labels, held_out=held_out)
    scaling_path = out / "scaling.json"
    save_text(scaling_path, json.dumps(scaling, indent=2))
    paths["scaling"] = scaling_path
    model_path = out / MODEL_FILE
    save_text(model_path, json.dumps(config, indent=2))
    paths["model"] = model_path
    if x_test is not None and y_test is not None:
        num_classes = None if is_regression else int(getattr(likelihood, "num_classes", 2))
        metrics = held_out_metrics(result, x, y, x_test, y_test, scaler if is_regression else None, num_classes=num_classes)
        metrics_path = out / "test_metrics.json"
        save_text(metrics_path, json.dumps(metrics, indent=2))
        paths["test_metrics"] = metrics_path
        _append_to_summary(paths["summary"], metrics)
    return result, paths


#: The prefix of the rows that ``bnn fit`` adds to ``summary.csv`` for its held-out scores.
HELD_OUT_PREFIX = "held_out."


def _append_to_summary(path: Path, metrics: dict[str, Any]) -> None:
    """The numeric held-out scores (and the baseline's) as rows ``held_out.<name>`` of summary.csv, value in ``mean``."""
    summary = pd.read_csv(path, index_col=0)
    for key, value in metrics.items():
        if isinstance(value, (int, float)):
            summary.loc[f"{HELD_OUT_PREFIX}{key}", "mean"] = float(value)  # the other columns stay empty
    save_csv(summary, path)


#: Where ``probgen bnn fit --method svi`` keeps the state of its fit (every 50 steps and at the end).
SVI_CHECKPOINT = "svi_state.pt"


def build_model(config: dict[str, Any]) -> BNN:
    """The BNN a run's ``model.json`` describes (weights initialised at random: a posterior replaces them)."""
    if config.get("format") != MODEL_FORMAT:
        raise ValueError(f"this is not a model description written by 'probgen bnn fit' (format {config.get('format')!r}).")
    if config.get("version", 0) > 1:
        raise ValueError(f"the model description is version {config['version']}, newer than this probgen reads (1).")
    name = check_choice("likelihood", config["likelihood"], LIKELIHOODS)
    likelihood: Likelihood
    if name == "gaussian":
        likelihood = Gaussian()
    elif name == "bernoulli":
        likelihood = Bernoulli()
    else:
        likelihood = Categorical(int(config["num_classes"]))
    activation = ACTIVATIONS[check_choice("activation", config["activation"], tuple(ACTIVATIONS))]
    width, outputs = int(config["hidden"]), likelihood.output_dim(1)
    net = nn.Sequential(nn.Linear(len(config["features"]), width), activation(), nn.Linear(width, outputs))
    layer_scales = {str(path): float(scale) for path, scale in config.get("layer_scales", {}).items()}
    return BNN(net, GaussianPrior(float(config["prior_scale"]), fan_in=True, layer_scales=layer_scales), likelihood)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}; pass the --out folder of 'probgen bnn fit' as --model.")
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}).") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} does not hold a JSON object.")
    return value


def predict_from_run(run: Path, data: Path, *, level: float = 0.9, seed: int = 0) -> pd.DataFrame:
    """The posterior predictive of a ``probgen bnn fit`` run for every row of ``data``, in the data's units.

    Regression: ``mean``, ``sd``, the central ``level`` interval (``lower``, ``upper``) and the two
    parts of the sd (``epistemic_sd``: over functions; ``aleatoric_sd``: the noise). Classifiers:
    one probability column per class (``p_0``, ``p_1``, ...). The feature columns come first.
    """
    run = Path(run)
    config = _read_json(run / MODEL_FILE, "model description (model.json)")
    scaling = _read_json(run / "scaling.json", "standardisation (scaling.json)")
    features = list(config["features"])
    frame = read_numeric_csv(data, features)
    x = as_tensor("x", frame[features], dtype=torch.float32, ndim=2)
    # the standardisation the fit wrote (none under --no-standardize): its maps, not copies of them
    scaler = Standardization(
        torch.tensor(scaling.get("x_mean", [0.0] * len(features))), torch.tensor(scaling.get("x_std", [1.0] * len(features))),
        float(scaling.get("y_mean", 0.0)), float(scaling.get("y_std", 1.0)),
    )  # fmt: skip
    x = scaler.scale_x(x)
    model = build_model(config)
    result = load_result(run / "posterior.nc", model)
    pred = result.predict(x.to(torch.get_default_dtype()), seed=seed)
    out = frame[features].reset_index(drop=True).copy()
    if config["likelihood"] == "gaussian":
        lower, upper = pred.interval(level)
        columns = {
            "mean": scaler.unscale_y(pred.mean), "sd": scaler.unscale_sd(pred.std),
            "lower": scaler.unscale_y(lower), "upper": scaler.unscale_y(upper),
            "epistemic_sd": scaler.unscale_sd(pred.epistemic_var.sqrt()),
            "aleatoric_sd": scaler.unscale_sd(pred.aleatoric_var.sqrt()),
        }  # fmt: skip
        for name, value in columns.items():
            out[name] = value.detach().reshape(len(out)).cpu().numpy()
    else:
        probs = pred.mean.detach()
        if probs.ndim == 1:  # Bernoulli: the probability of class 1
            probs = torch.stack([1 - probs, probs], -1)
        for k in range(probs.shape[-1]):
            out[f"p_{k}"] = probs[:, k].cpu().numpy()
    return out


def _predict_command(args: argparse.Namespace) -> int:
    frame = predict_from_run(args.model, args.data, level=args.level, seed=args.seed)
    if args.out.parent != Path(""):
        prepare_output_folder(args.out.parent)
    save_csv(frame, args.out, index=False)
    print(f"{'predictions':>12}: {args.out} ({len(frame)} rows, in the units of {args.data.name})")
    return 0


def _fit_command(args: argparse.Namespace) -> int:
    checkpoint = args.out / SVI_CHECKPOINT if args.method == "svi" else None
    with resume_hint_on_interrupt(checkpoint, SVIState.load):
        _, paths = fit_from_csv(args.data, args.target, args.features, args.method, args.out, args)
    _print_paths(paths)
    return 0


def _print_paths(paths: dict[str, Path]) -> None:
    """Each file written, then the held-out scores and the verdict when rows were held out."""
    for kind, path in paths.items():
        print(f"{kind:>12}: {path}")
    if "test_metrics" in paths:
        metrics = json.loads(paths["test_metrics"].read_text())
        scores = ", ".join(
            f"{key.removeprefix('test_').replace('_', ' ')} {value:.4g}"
            for key, value in metrics.items()
            if key.startswith("test_") and isinstance(value, float)
        )
        print(f"{'test':>12}: {metrics['num_test']} held-out rows; {scores} (original scale)")
        print(f"{'verdict':>12}: {metrics['verdict']}")


#: The fraction of the demo's rows held out for its test metrics.
DEMO_TEST_SIZE = 0.2
#: The demo's weight-prior scale (before fan-in scaling). The toy's function, cos(4x + 0.8), turns
#: 3.4 radians per standard deviation of x; first-layer weights drawn from N(0, 1) rarely make a
#: tanh unit that steep, and mean-field SVI then explains the data as noise (a flat fit). Measured
#: on the demo's 20 held-out rows (the noise sd is 0.1; least squares scores RMSE 0.32): with 1,
#: RMSE 0.28 (SVI) and 0.34 (NUTS); with 5, 0.13 (SVI) and 0.09 (NUTS).
DEMO_PRIOR_SCALE = 5.0


def _demo_command(args: argparse.Namespace) -> int:
    data = DATA_DIR / "cosine_train.csv"
    if not data.exists():
        raise FileNotFoundError(f"{data} is missing; run data/make_data.py from the repository root.")
    parser = argparse.ArgumentParser()
    _add_model_options(parser)
    options = parser.parse_args(["--seed", str(args.seed), "--prior-scale", str(DEMO_PRIOR_SCALE)])
    options.test_size = DEMO_TEST_SIZE  # held-out rows, so the report can say whether the model fits
    if args.quick:
        options.num_steps, options.num_warmup, options.num_samples, options.num_chains = 50, 20, 20, 2
    for method in METHODS:
        print(f"== {method}")
        result, paths = fit_from_csv(data, "y", ["x"], method, args.out / method, options)
        _print_paths(paths)
        print(f"{'wall time':>12}: {result.wall_time:.1f} s")
    return 0
