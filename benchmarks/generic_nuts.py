"""Benchmark: NUTS on Pyro programs a user writes, probgen's ``fit_nuts`` against stock Pyro and NumPyro.

Three models, each written once for Pyro (what probgen and stock Pyro run) and once for NumPyro:

* ``eight_schools``: the non-centred eight schools (10 unconstrained dimensions);
* ``logistic``: Bayesian logistic regression, N = 1000 points, D = 10 features (11 dimensions);
* ``hierarchical``: varying intercepts, 10 groups, N = 200 points, non-centred (14 dimensions).

Every engine runs 4 chains of 500 warm-up iterations and 1000 draws, target acceptance 0.8,
maximum tree depth 10, in float32 (NumPyro's default), one torch thread per process:

* probgen: ``probgen.fit_nuts(model, *data)`` with its defaults (the chains split over one process
  per core; the sampler's iteration and the model's log density compiled when the run repays it);
* NumPyro, when installed (``pip install -e ".[bench]"``): ``chain_method="sequential"`` (its CPU
  default) and ``"parallel"`` with one XLA host device per chain (``numpyro-par``);
* stock Pyro: ``pyro.infer.NUTS``, chains one after another (fewer draws: ``--pyro-samples``;
  ESS/s is a rate, so the column is comparable, if noisier).

Effective samples are the bulk ESS of every scalar latent coordinate (constrained), median and
minimum; ESS/s divides by the whole wall time of the fit, compilation included. Each engine runs
once first on the same model (a warm-up repetition: imports, caches; not reported), then
``--repeats`` times; medians are reported. probgen keeps its compiled code in TorchInductor's disk
cache, so these runs load it; NumPyro compiles anew for every ``MCMC`` object. ``--cold-start``
adds a column with probgen's first fit in a fresh process with an empty compile cache (the
first fit on a fresh machine).

    python benchmarks/generic_nuts.py              # full run (about 30 minutes on 2 shared cores)
    python benchmarks/generic_nuts.py --quick      # well under a minute (CI)
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
from collections.abc import Callable
from typing import Any, NamedTuple
from unittest.mock import patch

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer.mcmc import MCMC, NUTS

from probgen import fit_nuts
from probgen.infer import nuts
from probgen._compat import import_arviz

az = import_arviz()


# -- the models, in Pyro ---------------------------------------------------------------------


def eight_schools(sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("J", len(sigma)):
        theta_raw = pyro.sample("theta_raw", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * theta_raw, sigma), obs=y)


def logistic(x, y=None):
    beta = pyro.sample("beta", dist.Normal(torch.zeros(x.shape[1]), 1.0).to_event(1))
    alpha = pyro.sample("alpha", dist.Normal(0.0, 2.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dist.Bernoulli(logits=x @ beta + alpha), obs=y)


def hierarchical(group, x, num_groups, y=None):
    mu_a = pyro.sample("mu_a", dist.Normal(0.0, 5.0))
    sigma_a = pyro.sample("sigma_a", dist.HalfNormal(2.0))
    b = pyro.sample("b", dist.Normal(0.0, 2.0))
    sigma_y = pyro.sample("sigma_y", dist.HalfNormal(2.0))
    with pyro.plate("groups", num_groups):
        a_raw = pyro.sample("a_raw", dist.Normal(0.0, 1.0))
    a = mu_a + sigma_a * a_raw
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dist.Normal(a[group] + b * x, sigma_y), obs=y)


class Case(NamedTuple):
    name: str
    model: Callable[..., Any]
    args: tuple[Any, ...]
    sites: tuple[str, ...]


def make_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(0)
    sigma = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
    y8 = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    x = torch.randn(1000, 10, generator=gen)
    beta = torch.randn(10, generator=gen)
    y_log = torch.bernoulli(torch.sigmoid(x @ beta - 0.5), generator=gen)
    groups = torch.arange(200) % 10
    xh = torch.randn(200, generator=gen)
    a = 1.0 + 0.8 * torch.randn(10, generator=gen)
    y_h = a[groups] + 0.5 * xh + 0.7 * torch.randn(200, generator=gen)
    return [
        Case("eight_schools", eight_schools, (sigma, y8), ("mu", "tau", "theta_raw")),
        Case("logistic", logistic, (x, y_log), ("beta", "alpha")),
        Case("hierarchical", hierarchical, (groups, xh, 10, y_h), ("mu_a", "sigma_a", "b", "sigma_y", "a_raw")),
    ]


# -- the same models, in NumPyro -------------------------------------------------------------


def numpyro_models() -> dict[str, Callable[..., Any]] | None:
    try:
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as nd
    except ImportError:
        return None

    def n_eight_schools(sigma, y=None):
        mu = numpyro.sample("mu", nd.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", nd.HalfCauchy(5.0))
        with numpyro.plate("J", len(sigma)):
            theta_raw = numpyro.sample("theta_raw", nd.Normal(0.0, 1.0))
            numpyro.sample("obs", nd.Normal(mu + tau * theta_raw, sigma), obs=y)

    def n_logistic(x, y=None):
        beta = numpyro.sample("beta", nd.Normal(jnp.zeros(x.shape[1]), 1.0).to_event(1))
        alpha = numpyro.sample("alpha", nd.Normal(0.0, 2.0))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("obs", nd.Bernoulli(logits=x @ beta + alpha), obs=y)

    def n_hierarchical(group, x, num_groups, y=None):
        mu_a = numpyro.sample("mu_a", nd.Normal(0.0, 5.0))
        sigma_a = numpyro.sample("sigma_a", nd.HalfNormal(2.0))
        b = numpyro.sample("b", nd.Normal(0.0, 2.0))
        sigma_y = numpyro.sample("sigma_y", nd.HalfNormal(2.0))
        with numpyro.plate("groups", num_groups):
            a_raw = numpyro.sample("a_raw", nd.Normal(0.0, 1.0))
        a = mu_a + sigma_a * a_raw
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("obs", nd.Normal(a[group] + b * x, sigma_y), obs=y)

    return {"eight_schools": n_eight_schools, "logistic": n_logistic, "hierarchical": n_hierarchical}


# -- engines: each returns (wall seconds, draws per site (chain, draw, ...)) -----------------------

Draws = dict[str, np.ndarray]


class Config(NamedTuple):
    num_warmup: int
    num_samples: int
    num_chains: int
    max_tree_depth: int = 10


def run_probgen(case: Case, config: Config, seed: int) -> tuple[float, Draws]:
    start = time.perf_counter()
    result = fit_nuts(
        case.model, *case.args, num_warmup=config.num_warmup, num_samples=config.num_samples,
        num_chains=config.num_chains, max_tree_depth=config.max_tree_depth, seed=seed, progress_bar=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    return wall, {k: v.numpy() for k, v in result.get_samples(group_by_chain=True).items()}


def run_probgen_single(case: Case, config: Config, seed: int) -> tuple[float, Draws]:
    """probgen with the compiled iteration called once per leapfrog step (no compiled blocks)."""
    with patch.object(nuts, "BLOCK_MIN_WORK", sys.maxsize):  # no density is that costly; forked workers inherit it
        return run_probgen(case, config, seed)


def run_pyro(case: Case, config: Config, seed: int) -> tuple[float, Draws]:
    per_chain = []
    start = time.perf_counter()
    for chain in range(config.num_chains):
        pyro.set_rng_seed(seed + chain)
        kernel = NUTS(case.model, max_tree_depth=config.max_tree_depth)
        mcmc = MCMC(kernel, num_samples=config.num_samples, warmup_steps=config.num_warmup, disable_progbar=True)
        mcmc.run(*case.args)
        per_chain.append({k: v.detach().numpy() for k, v in mcmc.get_samples().items()})
    wall = time.perf_counter() - start
    return wall, {k: np.stack([c[k] for c in per_chain]) for k in per_chain[0]}


def numpyro_runner(chain_method: str) -> Callable[[Case, Config, int], tuple[float, Draws]] | None:
    models = numpyro_models()
    if models is None:
        return None
    import jax
    import jax.numpy as jnp
    from numpyro.infer import MCMC as NMCMC
    from numpyro.infer import NUTS as NNUTS

    def run(case: Case, config: Config, seed: int) -> tuple[float, Draws]:
        args = tuple(jnp.asarray(a.numpy()) if isinstance(a, torch.Tensor) else a for a in case.args)
        start = time.perf_counter()
        mcmc = NMCMC(
            NNUTS(models[case.name], max_tree_depth=config.max_tree_depth), num_warmup=config.num_warmup, num_samples=config.num_samples,
            num_chains=config.num_chains, chain_method=chain_method, progress_bar=False,
        )  # fmt: skip
        mcmc.run(jax.random.PRNGKey(seed), *args)
        draws = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
        return time.perf_counter() - start, draws

    return run


def cold_start(case: Case, config: Config, seed: int) -> float:
    """probgen's wall time for this fit in a fresh process with an empty TorchInductor cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        command = [sys.executable, __file__, "--child", case.name, "--child-config", json.dumps([*config, seed])]
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


# -- reporting -------------------------------------------------------------------------------------


class Row(NamedTuple):
    engine: str
    wall: float
    ess_median: float
    ess_min: float
    ess_per_s: float
    ess_per_s_min: float
    note: str


def ess_of(draws: Draws, sites: tuple[str, ...]) -> np.ndarray:
    values = []
    for site in sites:
        x = draws[site].reshape(draws[site].shape[:2] + (-1,))
        values += [float(az.ess(x[..., k], method="bulk")) for k in range(x.shape[-1])]
    return np.array(values)


def summarise(engine: str, runs: list[tuple[float, Draws]], sites: tuple[str, ...], note: str = "") -> Row:
    med = statistics.median
    ess = [ess_of(d, sites) for _, d in runs]
    return Row(
        engine=engine,
        wall=med([w for w, _ in runs]),
        ess_median=med([float(np.median(e)) for e in ess]),
        ess_min=med([float(e.min()) for e in ess]),
        ess_per_s=med([float(np.median(e)) / w for e, (w, _) in zip(ess, runs)]),
        ess_per_s_min=med([float(e.min()) / w for e, (w, _) in zip(ess, runs)]),
        note=note,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes for CI")
    parser.add_argument("--cases", nargs="+", default=None, help="eight_schools, logistic, hierarchical")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--num-warmup", type=int, default=500)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--max-tree-depth", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pyro-chains", type=int, default=2)
    parser.add_argument("--pyro-warmup", type=int, default=200)
    parser.add_argument("--pyro-samples", type=int, default=200)
    parser.add_argument("--skip-pyro", action="store_true")
    parser.add_argument("--cold-start", action="store_true", help="also time probgen's first fit with an empty compile cache")
    parser.add_argument("--single", action="store_true",
                        help="also run probgen calling its compiled iteration once per step (row probgen-single)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_default_dtype(torch.float32)
    torch.set_num_threads(1)
    cases = {case.name: case for case in make_cases()}
    if args.child:  # the cold-start subprocess: one fit, print its wall time
        warmup, samples, chains, depth, seed = json.loads(args.child_config)
        print(run_probgen(cases[args.child], Config(warmup, samples, chains, depth), seed)[0])
        return
    if args.quick:  # a short warm-up adapts badly, so the trees are capped too
        args.num_warmup, args.num_samples, args.repeats, args.max_tree_depth = 30, 30, 1, 5
        args.pyro_warmup, args.pyro_samples, args.pyro_chains = 10, 10, 1
    # XLA reads this when jax is first imported (in numpyro_runner): one host device per chain
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={args.chains}".strip()
    config = Config(args.num_warmup, args.num_samples, args.chains, args.max_tree_depth)
    engines: dict[str, Callable[[Case, Config, int], tuple[float, Draws]]] = {"probgen": run_probgen}
    if args.single:
        engines["probgen-single"] = run_probgen_single
    for engine, method in (("numpyro", "sequential"), ("numpyro-par", "parallel")):
        runner = numpyro_runner(method)
        if runner is not None:
            engines[engine] = runner
    if "numpyro" not in engines:
        print("numpyro is not installed: skipping its columns (pip install -e '.[bench]').")
    print(
        f"{args.chains} chains, {args.num_warmup} warm-up + {args.num_samples} draws, max_tree_depth={args.max_tree_depth}, "
        f"float32, 1 torch thread per "
        f"process, {args.repeats} repeats (median); stock Pyro {args.pyro_chains} chain(s) of "
        f"{args.pyro_warmup} + {args.pyro_samples}"
    )
    ratios = []
    for name in args.cases or list(cases):
        case = cases[name]
        rows = []
        for engine, run in engines.items():
            if not args.quick:
                run(case, config._replace(num_warmup=20, num_samples=20), args.seed + 99)  # warm-up repetition
            runs = [run(case, config, args.seed + r) for r in range(args.repeats)]
            rows.append(summarise(engine, runs, case.sites))
        if not args.skip_pyro:
            pyro_config = Config(args.pyro_warmup, args.pyro_samples, args.pyro_chains, args.max_tree_depth)
            runs = [run_pyro(case, pyro_config, args.seed)]
            rows.append(summarise("pyro", runs, case.sites, f"{args.pyro_chains} chain(s), {args.pyro_warmup}+{args.pyro_samples}"))
        cold = cold_start(case, config, args.seed) if args.cold_start and not args.quick else None
        print(f"\n{name}")
        print(f"{'engine':<13}{'wall s':>8}{'ESS med':>9}{'ESS min':>9}{'ESS/s':>9}{'min/s':>9}  note")
        for r in rows:
            print(f"{r.engine:<13}{r.wall:>8.1f}{r.ess_median:>9.0f}{r.ess_min:>9.0f}{r.ess_per_s:>9.1f}{r.ess_per_s_min:>9.1f}  {r.note}")
        if cold is not None:
            print(f"probgen first fit in a fresh process with an empty compile cache: {cold:.1f} s")
        ours = rows[0]
        for base in rows[1:]:
            ratios.append((f"{name}: ESS/s (median) vs {base.engine}", base.ess_per_s, ours.ess_per_s))
            ratios.append((f"{name}: ESS/s (worst) vs {base.engine}", base.ess_per_s_min, ours.ess_per_s_min))
    print("\ncase, baseline, probgen, ratio")
    for label, base, ours in ratios:
        print(f"{label}, {base:.2f}, {ours:.2f}, {ours / base:.2f}")
    if args.quick:
        print("(--quick: tiny runs, no warm-up repetition; the numbers mean nothing)")


if __name__ == "__main__":
    main()
