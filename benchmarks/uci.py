"""Benchmark: the standard UCI regression protocol, probgen's defaults against the published baselines.

For every set present in ``--data`` (default ``../shared/uci`` beside the repository; a missing
set is skipped with a note) and every standard split asked for, a 1-50-1 ReLU BNN is fitted on
the training rows, standardised on them (:func:`probgen.datasets.load_uci`), with each method at
the library's defaults:

* ``svi``: ``fit_svi(BNN(net), x, y, seed=split)``;
* ``nuts``: ``fit_nuts(BNN(net), x, y, seed=split)``;
* ``map``: ``fit_svi(BNN(net), x, y, guide="delta", seed=split)`` (a point estimate, the MAP network);
* ``pyro``: a plain Pyro loop written here, the baseline a user would write first: ``PyroModule``
  layers with ``Normal(0, 1)`` weight priors, a ``HalfNormal(1)`` noise scale, ``AutoNormal``,
  ``Trace_ELBO`` and Adam(0.01) for ``--pyro-steps`` full-batch steps.

It prints, per set and method, the test RMSE and the mixture log-likelihood
``mean_i log (1/S) sum_s N(y_i | f_s(x_i), sigma_s^2)`` on the original target scale (mean and
standard error over splits), the wall time per split, and for NUTS the largest R-hat and the
smallest bulk ESS over the test predictive means ``E[y | x_i, theta]``, the divergences and the
tree depths; then the published PBP, MC-dropout, tuned MC-dropout and deep-ensemble numbers of
the data folder's README beside ours, with a verdict per column, and one ``case, baseline,
probgen, ratio`` line per comparison (for the log-likelihood the last column is the difference).

Splits: all 20 for energy, yacht and wine-quality-red. The three large sets (8192 to 11934 rows)
default to 5 splits for SVI and 1 for NUTS: one full-batch gradient on ~10^4 rows costs ten times
one on the small sets, and a NUTS run there takes about an hour on two shared cores.

    python benchmarks/uci.py                          # every set, default splits, svi + nuts
    python benchmarks/uci.py --sets energy yacht --splits 5 --methods svi map
    python benchmarks/uci.py --records runs/uci.jsonl --resume   # append per-split records; skip done ones
    python benchmarks/uci.py --records runs/uci.jsonl --report-only --markdown runs/uci.md
    python benchmarks/uci.py --quick                  # CI: yacht, split 0, tiny sizes
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI as PyroSVI
from pyro.infer import Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroSample
from torch import nn

from probgen import BNN, fit_nuts, fit_svi
from probgen._compat import import_arviz
from probgen.datasets import UCIDataset, load_uci
from probgen.metrics import mixture_log_likelihood, rmse

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "uci"
SETS = ("energy", "yacht", "wine-quality-red", "kin8nm", "power-plant", "naval-propulsion-plant")
SMALL_SETS = SETS[:3]
METHODS = ("svi", "nuts", "map", "pyro")
HIDDEN = 50
NUTS_MAX_TREE_DEPTH = inspect.signature(fit_nuts).parameters["max_tree_depth"].default
#: Splits run by default: all 20 on the small sets; on the large ones 5 (SVI, MAP, Pyro) or 1 (NUTS).
DEFAULT_SPLITS = {"svi": 5, "map": 5, "pyro": 5, "nuts": 1}

#: Published numbers, 1 x 50 network (mean, standard error over 20 splits; deep ensembles: +- SD),
#: from the data folder's README: PBP as reprinted in Lakshminarayanan et al. 2017 (Table 1), MC
#: dropout from Gal & Ghahramani 2016, "tuned" from the 2018 rerun in yaringal/DropoutUncertaintyExps,
#: deep ensembles from Lakshminarayanan et al. 2017 (Table 1).
BASELINES = ("PBP", "MC dropout", "MC dropout tuned", "deep ensembles")
PUBLISHED_RMSE: dict[str, tuple[tuple[float, float], ...]] = {
    "energy": ((1.80, 0.05), (1.66, 0.04), (0.54, 0.06), (2.09, 0.29)),
    "yacht": ((1.02, 0.05), (1.11, 0.09), (0.67, 0.05), (1.58, 0.48)),
    "wine-quality-red": ((0.64, 0.01), (0.62, 0.01), (0.62, 0.01), (0.64, 0.04)),
    "kin8nm": ((0.10, 0.00), (0.10, 0.00), (0.08, 0.00), (0.09, 0.00)),
    "power-plant": ((4.12, 0.03), (4.02, 0.04), (4.01, 0.04), (4.11, 0.17)),
    "naval-propulsion-plant": ((0.01, 0.00), (0.01, 0.00), (0.00, 0.00), (0.00, 0.00)),
}
PUBLISHED_LL: dict[str, tuple[tuple[float, float], ...]] = {
    "energy": ((-2.04, 0.02), (-1.99, 0.02), (-1.21, 0.01), (-1.38, 0.22)),
    "yacht": ((-1.63, 0.02), (-1.55, 0.03), (-1.25, 0.01), (-1.18, 0.21)),
    "wine-quality-red": ((-0.97, 0.01), (-0.93, 0.01), (-0.93, 0.01), (-0.94, 0.12)),
    "kin8nm": ((0.90, 0.01), (0.95, 0.01), (1.14, 0.01), (1.20, 0.02)),
    "power-plant": ((-2.84, 0.01), (-2.80, 0.01), (-2.80, 0.01), (-2.79, 0.04)),
    "naval-propulsion-plant": ((3.73, 0.01), (3.80, 0.01), (4.45, 0.00), (5.63, 0.05)),
}


# -- one fit ------------------------------------------------------------------------------------


def make_net(features: int) -> nn.Sequential:
    """The protocol's network: one hidden layer of 50 ReLU units."""
    return nn.Sequential(nn.Linear(features, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1))


def original_scale_metrics(data: UCIDataset, mean: torch.Tensor, log_lik: torch.Tensor) -> dict[str, float]:
    """RMSE of the predictive mean and the mixture log-likelihood, both on the original scale.

    :param mean: the predictive mean of the standardised target at the test inputs, ``(n,)``.
    :param log_lik: per-draw log densities of the standardised test targets, ``(*draws, n)``.
    """
    s = data.standardization
    y = s.unscale_y(data.y_test)
    ll = float(mixture_log_likelihood(log_lik)) + s.log_likelihood_offset
    return {"rmse": rmse(s.unscale_y(mean), y), "ll": ll}


def nuts_diagnostics(result: Any, pred: Any, max_tree_depth: int) -> dict[str, float]:
    """R-hat and bulk ESS of the test predictive means ``E[y | x_i, theta]`` (identifiable, unlike
    the weights), divergences and tree depths."""
    az = import_arviz()
    f = pred.f[..., 0].double().numpy()  # (chain, draw, n)
    ds = az.convert_to_dataset({"f": f})
    rhat = float(az.rhat(ds)["f"].max())
    ess = float(az.ess(ds, method="bulk")["f"].min())
    stats = result.get_sample_stats()
    depth = stats["tree_depth"].double()
    return {
        "rhat_max": rhat,
        "ess_min": ess,
        "divergences": int(stats["diverging"].sum()),
        "tree_depth_mean": float(depth.mean()),
        "tree_depth_max_frac": float((depth >= max_tree_depth).double().mean()),
        "step_size": float(stats["step_size"].double().mean()),
        "num_chains": int(depth.shape[0]),
        "num_samples": int(depth.shape[1]),
        "num_warmup": int(result.num_warmup),
        "leapfrog_steps": int(stats["n_steps"].double().sum()),
    }


def fit_probgen(method: str, data: UCIDataset, split: int, sizes: argparse.Namespace) -> dict[str, Any]:
    """Fit one of probgen's methods with the library's defaults (sizes only where asked) and score it."""
    torch.manual_seed(split)
    model = BNN(make_net(data.x_train.shape[1]))
    options: dict[str, Any] = {"seed": split, "progress_bar": False}
    record: dict[str, Any] = {}
    if method in ("svi", "map"):
        if sizes.svi_steps is not None:
            options["num_steps"] = sizes.svi_steps
        options.update(sizes.svi_options)
        if method == "map":
            options.update(guide="delta", num_samples=1)
        result = fit_svi(model, data.x_train, data.y_train, **options)
        record["steps"] = int(result.state.step)
    else:
        for key, value in (("num_warmup", sizes.nuts_warmup), ("num_samples", sizes.nuts_samples),
                           ("num_chains", sizes.nuts_chains), ("max_tree_depth", sizes.nuts_max_depth)):
            if value is not None:
                options[key] = value
        options.update(sizes.nuts_options)
        result = fit_nuts(model, data.x_train, data.y_train, **options)
    pred = result.predict(data.x_test)
    record.update(original_scale_metrics(data, pred.mean, result.log_likelihood(data.x_test, data.y_test)))
    record["wall_s"] = float(result.wall_time)
    if method == "nuts":
        record.update(nuts_diagnostics(result, pred, options.get("max_tree_depth", NUTS_MAX_TREE_DEPTH)))
    return record


class PyroBNN(PyroModule):
    """The plain Pyro baseline: N(0, 1) priors on every weight and bias, HalfNormal(1) noise scale."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.hidden = PyroModule[nn.Linear](features, HIDDEN)
        self.hidden.weight = PyroSample(dist.Normal(0.0, 1.0).expand([HIDDEN, features]).to_event(2))
        self.hidden.bias = PyroSample(dist.Normal(0.0, 1.0).expand([HIDDEN]).to_event(1))
        self.out = PyroModule[nn.Linear](HIDDEN, 1)
        self.out.weight = PyroSample(dist.Normal(0.0, 1.0).expand([1, HIDDEN]).to_event(2))
        self.out.bias = PyroSample(dist.Normal(0.0, 1.0).expand([1]).to_event(1))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        mean = pyro.deterministic("mean", self.out(torch.relu(self.hidden(x)))[..., 0])
        sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("obs", dist.Normal(mean, sigma), obs=y)


def fit_pyro(data: UCIDataset, split: int, num_steps: int, num_samples: int = 1000) -> dict[str, Any]:
    """The plain Pyro AutoNormal loop, scored like probgen's methods."""
    pyro.clear_param_store()
    pyro.set_rng_seed(split)
    start = time.perf_counter()
    model = PyroBNN(data.x_train.shape[1])
    guide = AutoNormal(model)
    svi = PyroSVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    for _ in range(num_steps):
        svi.step(data.x_train, data.y_train)
    with torch.no_grad():
        draws = Predictive(model, guide=guide, num_samples=num_samples, return_sites=("mean", "sigma"))(data.x_test)
    mean, sigma = draws["mean"].reshape(num_samples, -1), draws["sigma"].reshape(num_samples, 1)
    log_lik = dist.Normal(mean, sigma).log_prob(data.y_test)
    record = original_scale_metrics(data, mean.mean(0), log_lik)
    record["wall_s"] = time.perf_counter() - start
    record["steps"] = num_steps
    pyro.clear_param_store()
    return record


# -- bookkeeping --------------------------------------------------------------------------------


def parse_splits(text: str | None, method: str, name: str) -> list[int]:
    """``None``: the default count; ``"N"``: splits 0..N-1; ``"0,3,7"``: those splits."""
    if text is None:
        count = 20 if name in SMALL_SETS else DEFAULT_SPLITS[method]
        return list(range(count))
    if "," in text:
        return [int(s) for s in text.split(",") if s.strip()]
    return list(range(int(text)))


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error over splits (``nan`` for the error of a single split)."""
    if not values:
        return math.nan, math.nan
    m = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return m, se


def fmt(m: float, se: float, digits: int) -> str:
    if math.isnan(se):
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {se:.{digits}f}"


def digits_for(name: str) -> int:
    return 4 if name in ("kin8nm", "naval-propulsion-plant") else 2


def summarise(records: list[dict[str, Any]], name: str, method: str) -> dict[str, Any] | None:
    rows = sorted((r for r in records if r["set"] == name and r["method"] == method), key=lambda r: r["split"])
    if not rows:
        return None
    out: dict[str, Any] = {
        "splits": len(rows),
        "rmse": mean_se([r["rmse"] for r in rows]),
        "ll": mean_se([r["ll"] for r in rows]),
        "wall_s": statistics.fmean(r["wall_s"] for r in rows),
    }
    if method == "nuts":
        out.update(
            rhat_max=max(r["rhat_max"] for r in rows),
            ess_min=min(r["ess_min"] for r in rows),
            divergences=sum(r["divergences"] for r in rows),
            draws=sum(r["num_chains"] * r["num_samples"] for r in rows),
            tree_depth_mean=statistics.fmean(r["tree_depth_mean"] for r in rows),
            tree_depth_max_frac=max(r["tree_depth_max_frac"] for r in rows),
            config=f"{rows[0]['num_chains']} chains x ({rows[0]['num_warmup']} warm-up + {rows[0]['num_samples']} draws)",
        )
    return out


def verdicts(name: str, summary: dict[str, Any]) -> tuple[list[str], list[str]]:
    """'beats' / 'loses' per published column, on RMSE (lower is better) and LL (higher is better)."""
    rmse_m, ll_m = summary["rmse"][0], summary["ll"][0]
    rmse_v = ["beats" if rmse_m < pub[0] else "loses" for pub in PUBLISHED_RMSE[name]]
    ll_v = ["beats" if ll_m > pub[0] else "loses" for pub in PUBLISHED_LL[name]]
    return rmse_v, ll_v


def print_report(records: list[dict[str, Any]], sets: Sequence[str], methods: Sequence[str]) -> None:
    ratios: list[str] = []
    for name in sets:
        digits = digits_for(name)
        summaries = {m: summarise(records, name, m) for m in methods}
        if not any(summaries.values()):
            continue
        print(f"\n== {name}")
        print(f"{'method':<8}{'splits':>7}  {'RMSE':<18}{'test LL':<18}{'s/split':>8}  NUTS: R-hat max, ESS min, divergences, tree depth")
        for method, s in summaries.items():
            if s is None:
                continue
            extra = ""
            if method == "nuts":
                extra = (f"  {s['rhat_max']:.3f}, {s['ess_min']:.0f}, {s['divergences']}/{s['draws']}, "
                         f"mean {s['tree_depth_mean']:.1f} ({s['tree_depth_max_frac']:.0%} at max); {s['config']}")
            print(f"{method:<8}{s['splits']:>7}  {fmt(*s['rmse'], digits):<18}{fmt(*s['ll'], digits):<18}{s['wall_s']:>8.1f}{extra}")
        for label, table in (("RMSE", PUBLISHED_RMSE), ("test LL", PUBLISHED_LL)):
            cells = ", ".join(f"{b} {fmt(m, se, digits)}" for b, (m, se) in zip(BASELINES, table[name]))
            print(f"published {label}: {cells}")
        for method, s in summaries.items():
            if s is None:
                continue
            rmse_v, ll_v = verdicts(name, s)
            print(f"verdict {method}: RMSE " + ", ".join(f"{v} {b}" for v, b in zip(rmse_v, BASELINES))
                  + "; LL " + ", ".join(f"{v} {b}" for v, b in zip(ll_v, BASELINES)))
            for b, (pub_r, _), (pub_l, _) in zip(BASELINES, PUBLISHED_RMSE[name], PUBLISHED_LL[name]):
                ratio = s["rmse"][0] / pub_r if pub_r > 0 else math.inf
                ratios.append(f"{name} {method} RMSE vs {b}, {pub_r}, {s['rmse'][0]:.{digits}f}, {ratio:.2f}")
                ratios.append(f"{name} {method} LL vs {b}, {pub_l}, {s['ll'][0]:.{digits}f}, {s['ll'][0] - pub_l:+.2f} (difference)")
    if ratios:
        print("\ncase, baseline, probgen, ratio")
        print("\n".join(ratios))


def markdown(records: list[dict[str, Any]], sets: Sequence[str], methods: Sequence[str]) -> str:
    """The results as Markdown tables (what benchmarks/README.md quotes)."""
    lines = [
        "| set | method | splits | RMSE | test LL | s / split | PBP | MC dropout | MC dropout tuned | deep ensembles |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    nuts_lines = [
        "| set | splits | chains x (warm-up + draws) | R-hat max | ESS min | divergences | mean tree depth | at max depth |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in sets:
        digits = digits_for(name)
        for method in methods:
            s = summarise(records, name, method)
            if s is None:
                continue
            rmse_v, ll_v = verdicts(name, s)
            marks = [f"{'✓' if r == 'beats' else '✗'} / {'✓' if ll == 'beats' else '✗'}" for r, ll in zip(rmse_v, ll_v)]
            lines.append(
                f"| {name} | {method} | {s['splits']} | {fmt(*s['rmse'], digits)} | {fmt(*s['ll'], digits)} | "
                f"{s['wall_s']:.0f} | " + " | ".join(marks) + " |"
            )
            if method == "nuts":
                nuts_lines.append(
                    f"| {name} | {s['splits']} | {s['config'].replace(' chains x ', ' x ')} | {s['rhat_max']:.3f} | "
                    f"{s['ess_min']:.0f} | {s['divergences']} / {s['draws']} | {s['tree_depth_mean']:.1f} | "
                    f"{s['tree_depth_max_frac']:.0%} |"
                )
    return "\n".join(lines) + "\n\n" + "\n".join(nuts_lines) + "\n"


def load_records(path: Path | None) -> list[dict[str, Any]]:
    if path is None or not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"folder of UCI sets (default: {DEFAULT_DATA})")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS, metavar="SET", help=f"sets to run (default: all of {', '.join(SETS)})")
    parser.add_argument("--methods", nargs="+", default=["svi", "nuts"], choices=METHODS, help="methods (default: svi nuts)")
    parser.add_argument("--splits", default=None, help="N (splits 0..N-1) or a list '0,3,7' (default: 20 on the small sets; 5, or 1 for NUTS, on the large ones)")
    parser.add_argument("--svi-steps", type=int, default=None, help="SVI/MAP steps (default: the library's)")
    parser.add_argument("--nuts-warmup", type=int, default=None, help="NUTS warm-up per chain (default: the library's)")
    parser.add_argument("--nuts-samples", type=int, default=None, help="NUTS draws per chain (default: the library's)")
    parser.add_argument("--nuts-chains", type=int, default=None, help="NUTS chains (default: the library's)")
    parser.add_argument("--nuts-max-depth", type=int, default=None, help="NUTS maximum tree depth (default: the library's)")
    parser.add_argument("--svi-options", type=json.loads, default={}, help="extra fit_svi keywords as JSON, for measuring defaults, e.g. '{\"kl_warmup\": 0}'")
    parser.add_argument("--nuts-options", type=json.loads, default={}, help="extra fit_nuts keywords as JSON")
    parser.add_argument("--tag", default="", help="a label stored with each record (e.g. the options measured)")
    parser.add_argument("--pyro-steps", type=int, default=8000, help="steps of the plain Pyro loop (default: 8000)")
    parser.add_argument("--records", type=Path, default=None, help="append one JSON line per split here")
    parser.add_argument("--resume", action="store_true", help="skip (set, method, split) already in --records")
    parser.add_argument("--report-only", action="store_true", help="print the report of --records without fitting")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables as Markdown here")
    parser.add_argument("--quick", action="store_true", help="CI: yacht, split 0, tiny sizes")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        args.sets, args.splits = ["yacht"], "1"
        args.svi_steps, args.pyro_steps = 200, 100
        args.nuts_warmup, args.nuts_samples, args.nuts_chains, args.nuts_max_depth = 20, 20, 2, 5
        if "map" not in args.methods:
            args.methods = [*args.methods, "map"]
    records = [r for r in load_records(args.records) if r.get("tag", "") == args.tag]
    if not args.report_only:
        done = {(r["set"], r["method"], r["split"]) for r in records if r.get("tag", "") == args.tag} if args.resume else set()
        if not args.resume:
            records = []
        for name in args.sets:
            folder = args.data / name
            if not folder.is_dir():
                print(f"note: {name} skipped: no folder {folder} (see the data README for the layout)")
                continue
            for method in args.methods:
                for split in parse_splits(args.splits, method, name):
                    if (name, method, split) in done:
                        continue
                    data = load_uci(folder, split=split)
                    record = fit_pyro(data, split, args.pyro_steps) if method == "pyro" else fit_probgen(method, data, split, args)
                    record.update(set=name, method=method, split=split, tag=args.tag)
                    records.append(record)
                    print(f"{name} {method} split {split}: RMSE {record['rmse']:.4g}, LL {record['ll']:.4g}, "
                          f"{record['wall_s']:.1f} s" + (f", R-hat {record['rhat_max']:.3f}, ESS {record['ess_min']:.0f}, "
                          f"{record['divergences']} divergent" if method == "nuts" else ""), flush=True)
                    if args.records is not None:
                        args.records.parent.mkdir(parents=True, exist_ok=True)
                        with args.records.open("a") as handle:
                            handle.write(json.dumps(record) + "\n")
    if not records:
        print(f"note: no UCI set found under {args.data}; nothing to report (pass --data FOLDER).")
        return 0
    print_report(records, args.sets, args.methods)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(records, args.sets, args.methods))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
