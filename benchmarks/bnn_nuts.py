"""Benchmark: NUTS on a UCI-size BNN, probgen's "flat" backend against stock Pyro and NumPyro.

One 8-50-1 tanh BNN (Gaussian priors scaled by fan-in, learned noise scale with a HalfNormal(1)
prior), N = 1000 synthetic UCI-like points, 4 chains, the same warm-up, draws, maximum tree
depth, initialisation (a prior draw) and seeds for every engine, all in float32 (NumPyro's default):

* probgen: :func:`probgen.infer.nuts.run_chains` on the BNN's flat density, exactly what ``fit_nuts(backend="flat")`` runs,
  with ``fit_nuts``'s default ``num_workers`` (one process per core, at most one per chain;
  ``--workers`` sets it);
* ``--mlp`` adds ``probgen-mlp``: the same sampler on the torch ``"mlp"`` density kernel instead
  of the C++ ``"fused"`` one that ``compile_bnn`` takes by default on the CPU;
* Pyro: stock ``pyro.infer.mcmc.NUTS`` on the same model (its traced potential energy), chains one
  after another in one process, which is what Pyro's ``MCMC`` does by default on a 2-core machine
  (it reserves one core and runs chains in parallel only when ``num_chains <= cpu_count - 1``);
* NumPyro: ``numpyro.infer.NUTS`` on the same model written in NumPyro, when ``numpyro`` is
  installed (``pip install -e ".[bench]"``), twice: ``chain_method="sequential"`` (its CPU
  default) and ``"parallel"`` over ``--chains`` XLA host devices (``numpyro-par``), its best use
  of several cores.

Each engine runs once at a tiny size first (a warm-up repetition, not reported), then
``--repeats`` times with seeds ``seed, seed + 1, ...``; medians are reported. Effective samples
are the bulk ESS of identifiable quantities: the posterior predictive mean ``E[y | x, theta]``
at 10 fixed test inputs, the noise scale and the log density (weights are not identifiable,
because of sign and permutation symmetries). ``ESS/s`` divides by the whole wall time, compilation
included; ``ESS/s excl. compile`` subtracts the compilation time, measured as the wall time of a run
with one warm-up iteration and one draw. Gradient evaluations are leapfrog steps per chain,
summed over chains, warm-up included. NumPyro's single ``run`` does not expose the warm-up's
steps, so they come from an untimed re-run of the same seed with the warm-up collected
(``warmup(collect_warmup=True)``, then ``run``); if that re-run's kept draws took other steps than
the timed run's, the kept steps are scaled by ``(warm-up + draws) / draws`` and the row says
"grads estimated".

Stock Pyro NUTS is two orders of magnitude slower, so its column uses fewer chains and draws
(``--pyro-chains``, ``--pyro-warmup``, ``--pyro-samples``, one repeat); ESS/s is a rate and
comparable, though its estimate is noisier.

    python benchmarks/bnn_nuts.py            # full run (about 40 minutes on 2 shared CPU cores)
    python benchmarks/bnn_nuts.py --quick    # well under a minute (CI)
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple
from unittest.mock import patch

import numpy as np
import pyro
import torch
from pyro.infer.autoguide.initialization import init_to_sample
from pyro.infer.mcmc import MCMC, NUTS
from pyro.infer.mcmc.util import initialize_model
from torch import nn

from probgen._compat import import_arviz
from probgen.infer._workers import available_cores
from probgen.infer import _bnn_model
from probgen.infer._dispatch import as_inference_model
from probgen.infer._flat import compile_bnn
from probgen.infer.mcmc import _initial_values as initial_values
from probgen.infer.mcmc import _flat_start as flat_start
from probgen.infer import nuts
from probgen.infer.nuts import NUTSConfig, run_chains
from probgen.infer.svi import fit_svi
from probgen.models.bnn import BNN

az = import_arviz()


class Run(NamedTuple):
    """One engine's run: wall time, gradient evaluations and the draws of the quantities."""

    wall: float
    gradients: int
    quantities: np.ndarray  # (chain, draw, 12): 10 predictive means, noise scale, log density


class Row(NamedTuple):
    engine: str
    wall: float
    gradients: float
    ms_per_gradient: float
    ess_median: float
    ess_min: float
    ess_per_s: float
    ess_per_s_min: float
    compile_s: float
    ess_per_s_excl_compile: float
    note: str


def make_data(n: int, features: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A UCI-like regression set: standardised inputs, a smooth nonlinear signal, noise sd 0.3."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features))
    a, b = rng.normal(size=features), rng.normal(size=features)
    signal = np.sin(x @ a / math.sqrt(features) * 2) + 0.5 * np.tanh(x @ b / math.sqrt(features))
    y = signal + 0.3 * rng.normal(size=n)
    y = (y - y.mean()) / y.std()
    x_test = rng.normal(size=(10, features))
    dtype = torch.get_default_dtype()
    return torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype), torch.tensor(x_test, dtype=dtype)


def make_model(features: int, hidden: int) -> BNN:
    return BNN(nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, 1)))


def quantities_from_samples(model: BNN, samples: dict[str, torch.Tensor], lp: torch.Tensor, x_test: torch.Tensor) -> np.ndarray:
    weights = {k: samples[k] for k in model.weight_priors}
    with torch.no_grad():
        f = model.forward_batched(weights, x_test, batch_dims=2)[..., 0]  # (chain, draw, 10)
    parts = [f, samples["noise_scale"][..., None], lp[..., None]]
    return torch.cat([p.to(torch.float64) for p in parts], dim=-1).numpy()


# -- engines -------------------------------------------------------------------------------


def run_probgen(model: BNN, x, y, x_test, config: NUTSConfig, seed: int) -> Run:
    """What ``fit_nuts(model, x, y)`` runs with the "flat" backend, without its result object."""
    start = time.perf_counter()
    spec = as_inference_model(model)
    data = spec.bind((x, y), None, fit=True)
    density = spec.flat_density(data)
    out = run_chains(density, config, seed)
    samples = spec.unpack(density, out.draws)
    wall = time.perf_counter() - start
    q = quantities_from_samples(model, samples, out.sample_stats["lp"], x_test)
    return Run(wall, int(out.num_leapfrog.sum()), q)


def run_probgen_mlp(model: BNN, x, y, x_test, config: NUTSConfig, seed: int) -> Run:
    """probgen with the log density of the torch "mlp" kernel (compiled by Inductor) instead of the C++ "fused" one."""
    with patch.object(_bnn_model, "compile_bnn", functools.partial(compile_bnn, kernel="mlp")):
        return run_probgen(model, x, y, x_test, config, seed)


def run_probgen_single(model: BNN, x, y, x_test, config: NUTSConfig, seed: int) -> Run:
    """probgen with the compiled iteration called once per leapfrog step (no compiled blocks)."""
    with patch.object(nuts, "BLOCK_MIN_WORK", sys.maxsize):  # no density is that costly; forked workers inherit it
        return run_probgen(model, x, y, x_test, config, seed)


def probgen_warm_runner(svi_steps: int) -> Callable[..., Run]:
    """probgen started from ``num_chains`` draws of a ``svi_steps``-step mean-field SVI fit (``fit_nuts(init_params=fit)``);
    the SVI fit is part of the wall time."""

    def run(model: BNN, x, y, x_test, config: NUTSConfig, seed: int) -> Run:
        start = time.perf_counter()
        fit = fit_svi(model, x, y, num_steps=svi_steps, num_samples=config.num_chains, seed=seed, progress_bar=False)
        spec = as_inference_model(model)
        data = spec.bind((x, y), None, fit=True)
        density = spec.flat_density(data)
        # exactly what fit_nuts(init_params=fit) does with the fit before it samples
        init = initial_values(fit, spec.latent_shapes(data), config.num_chains, density.device)
        out = run_chains(density, config, seed, init=flat_start(density, init, config.num_chains, seed))
        samples = spec.unpack(density, out.draws)
        wall = time.perf_counter() - start
        q = quantities_from_samples(model, samples, out.sample_stats["lp"], x_test)
        return Run(wall, int(out.num_leapfrog.sum()), q)

    return run


def run_pyro(model: BNN, x, y, x_test, config: NUTSConfig, seed: int) -> Run:
    """Stock Pyro NUTS on Pyro's traced potential, chains one after another; every call counted."""
    per_chain: list[dict[str, torch.Tensor]] = []
    calls = [0]
    start = time.perf_counter()
    potential_fn: Callable[..., Any] | None = None
    transforms: dict[str, Any] = {}
    for chain in range(config.num_chains):
        pyro.set_rng_seed(seed + chain)
        init, potential_fn, transforms, _ = initialize_model(model, model_args=(x, y), init_strategy=init_to_sample)

        def counted(params: dict[str, torch.Tensor], fn: Callable[..., Any] = potential_fn) -> Any:
            calls[0] += 1
            return fn(params)

        kernel = NUTS(potential_fn=counted, target_accept_prob=config.target_accept_prob, max_tree_depth=config.max_tree_depth)
        mcmc = MCMC(kernel, num_samples=config.num_samples, warmup_steps=config.num_warmup, initial_params=init, disable_progbar=True)
        mcmc.run()
        per_chain.append({k: v.detach() for k, v in mcmc.get_samples().items()})
    wall = time.perf_counter() - start
    assert potential_fn is not None
    unconstrained = {k: torch.stack([c[k] for c in per_chain]) for k in per_chain[0]}
    samples = {k: transforms[k].inv(v) for k, v in unconstrained.items()}  # transforms map to unconstrained
    with torch.no_grad():
        flat = {k: v.reshape((-1,) + v.shape[2:]) for k, v in unconstrained.items()}
        lp = torch.stack([-potential_fn({k: v[i] for k, v in flat.items()}) for i in range(len(flat["noise_scale"]))])
    lp = lp.reshape(config.num_chains, config.num_samples)
    return Run(wall, calls[0], quantities_from_samples(model, samples, lp, x_test))


def numpyro_runner(features: int, hidden: int, chain_method: str) -> Callable[..., Run] | None:
    try:
        import jax
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as nd
        from numpyro.infer import MCMC as NMCMC
        from numpyro.infer import NUTS as NNUTS
        from numpyro.infer import init_to_sample as n_init_to_sample
    except ImportError:
        return None

    def model(x, y):
        w1 = numpyro.sample("0.weight", nd.Normal(jnp.zeros((hidden, features)), 1 / math.sqrt(features)).to_event(2))
        b1 = numpyro.sample("0.bias", nd.Normal(jnp.zeros(hidden), 1.0).to_event(1))
        w2 = numpyro.sample("2.weight", nd.Normal(jnp.zeros((1, hidden)), 1 / math.sqrt(hidden)).to_event(2))
        b2 = numpyro.sample("2.bias", nd.Normal(jnp.zeros(1), 1.0).to_event(1))
        s = numpyro.sample("noise_scale", nd.HalfNormal(1.0))
        f = jnp.tanh(x @ w1.T + b1) @ w2.T + b2
        numpyro.sample("obs", nd.Normal(f[:, 0], s), obs=y)

    def make_mcmc(config: NUTSConfig, method: str) -> Any:
        kernel = NNUTS(model, target_accept_prob=config.target_accept_prob, max_tree_depth=config.max_tree_depth, init_strategy=n_init_to_sample)
        return NMCMC(kernel, num_warmup=config.num_warmup, num_samples=config.num_samples, num_chains=config.num_chains, chain_method=method, progress_bar=False)

    def count_steps(xj, yj, config: NUTSConfig, seed: int) -> tuple[int, int]:
        """Leapfrog steps of warm-up and of sampling, from an untimed re-run with the warm-up collected."""
        mcmc = make_mcmc(config, chain_method)
        mcmc.warmup(jax.random.PRNGKey(seed), xj, yj, collect_warmup=True, extra_fields=("num_steps",))
        warm = int(np.asarray(mcmc.get_extra_fields()["num_steps"]).sum())
        mcmc.run(mcmc.post_warmup_state.rng_key, xj, yj, extra_fields=("num_steps",))
        return warm, int(np.asarray(mcmc.get_extra_fields()["num_steps"]).sum())

    def run(bnn: BNN, x, y, x_test, config: NUTSConfig, seed: int) -> Run:
        xj, yj = jnp.asarray(x.numpy()), jnp.asarray(y.numpy())
        mcmc = make_mcmc(config, chain_method)
        start = time.perf_counter()
        mcmc.run(jax.random.PRNGKey(seed), xj, yj, extra_fields=("num_steps", "potential_energy"))
        samples = {k: torch.tensor(np.asarray(v)) for k, v in mcmc.get_samples(group_by_chain=True).items()}
        wall = time.perf_counter() - start
        extra = mcmc.get_extra_fields(group_by_chain=True)
        kept = int(np.asarray(extra["num_steps"]).sum())
        # one run does not expose the warm-up's steps: re-run it (untimed) with the warm-up collected;
        # if that re-run is not the same chain, scale the kept draws' steps to the whole run instead
        warm, kept_again = count_steps(xj, yj, config, seed)
        steps = kept + warm if kept_again == kept else -round(kept * (config.num_warmup + config.num_samples) / config.num_samples)
        lp = -torch.tensor(np.asarray(extra["potential_energy"]))
        samples = {k: v.to(torch.get_default_dtype()) for k, v in samples.items()}
        return Run(wall, steps, quantities_from_samples(bnn, samples, lp, x_test))

    return run


# -- reporting -----------------------------------------------------------------------------


def summarise(engine: str, runs: list[Run], compile_s: float, note: str = "") -> Row:
    ess = [np.array([az.ess(r.quantities[..., k], method="bulk") for k in range(r.quantities.shape[-1])]) for r in runs]
    med = statistics.median
    wall = med([r.wall for r in runs])
    grads = med([abs(r.gradients) for r in runs])
    if any(r.gradients < 0 for r in runs):  # estimated (see numpyro_runner)
        note = f"{note} grads estimated".strip()
    ess_med = [float(np.median(e)) for e in ess]
    ess_min = [float(e.min()) for e in ess]
    return Row(
        engine=engine,
        wall=wall,
        gradients=grads,
        ms_per_gradient=med([1e3 * r.wall / abs(r.gradients) for r in runs]),
        ess_median=med(ess_med),
        ess_min=med(ess_min),
        ess_per_s=med([e / r.wall for e, r in zip(ess_med, runs)]),
        ess_per_s_min=med([e / r.wall for e, r in zip(ess_min, runs)]),
        compile_s=compile_s,
        ess_per_s_excl_compile=med([e / max(r.wall - compile_s, 1e-9) for e, r in zip(ess_med, runs)]),
        note=note,
    )


def agreement(a: Run, b: Run) -> float:
    """Largest |difference| of the two engines' predictive means at the test inputs, in MCSE units."""
    worst = 0.0
    for k in range(10):
        qa, qb = a.quantities[..., k], b.quantities[..., k]
        se = math.hypot(float(az.mcse(qa, method="mean")), float(az.mcse(qb, method="mean")))
        worst = max(worst, abs(qa.mean() - qb.mean()) / se)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes for CI")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=50)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None, help="probgen's num_workers (default: fit_nuts's)")
    parser.add_argument("--num-warmup", type=int, default=200)
    parser.add_argument("--num-samples", type=int, default=200)
    parser.add_argument("--max-tree-depth", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pyro-chains", type=int, default=2)
    parser.add_argument("--pyro-warmup", type=int, default=100)
    parser.add_argument("--pyro-samples", type=int, default=100)
    parser.add_argument("--skip-pyro", action="store_true")
    parser.add_argument("--skip-numpyro", action="store_true")
    parser.add_argument("--warm-start", type=int, default=0, metavar="STEPS",
                        help="also run probgen from the draws of a STEPS-step SVI fit (row probgen-warm)")
    parser.add_argument("--single", action="store_true",
                        help="also run probgen calling its compiled iteration once per step (row probgen-single)")
    parser.add_argument("--mlp", action="store_true",
                        help="also run probgen with the torch 'mlp' density kernel instead of the C++ 'fused' one (row probgen-mlp)")
    parser.add_argument("--engines", default=None, metavar="A,B",
                        help="run only these engines (of probgen, probgen-mlp, probgen-single, probgen-warm, numpyro, numpyro-par, pyro)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.n, args.hidden, args.num_warmup, args.num_samples, args.max_tree_depth = 100, 5, 30, 30, 6
        args.pyro_warmup, args.pyro_samples, args.pyro_chains, args.repeats = 15, 15, 2, 1
    # XLA reads this when jax is first imported (in numpyro_runner): one host device per chain
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={args.chains}".strip()
    torch.set_default_dtype(torch.float32)
    torch.set_num_threads(1)
    workers = args.workers if args.workers is not None else min(args.chains, available_cores())
    x, y, x_test = make_data(args.n, args.features, args.seed)
    model = make_model(args.features, args.hidden)
    config = NUTSConfig(args.num_warmup, args.num_samples, args.chains, 0.8, args.max_tree_depth, False, workers)
    tiny = config._replace(num_warmup=1, num_samples=1)
    print(
        f"BNN {args.features}-{args.hidden}-1 tanh, N={args.n}, {args.chains} chains, {args.num_warmup} warm-up + "
        f"{args.num_samples} draws, max_tree_depth={args.max_tree_depth}, float32, 1 torch thread per process, "
        f"probgen num_workers={workers} ({available_cores()} cores), {args.repeats} repeats (median)"
    )
    engines: dict[str, Callable[..., Run]] = {"probgen": run_probgen}
    if args.mlp:
        engines["probgen-mlp"] = run_probgen_mlp
    if args.single:
        engines["probgen-single"] = run_probgen_single
    if args.warm_start:
        engines["probgen-warm"] = probgen_warm_runner(args.warm_start)
    for engine, method in (("numpyro", "sequential"), ("numpyro-par", "parallel")):
        numpyro_run = None if args.skip_numpyro else numpyro_runner(args.features, args.hidden, method)
        if numpyro_run is not None:
            engines[engine] = numpyro_run
    if "numpyro" not in engines and not args.skip_numpyro:
        print("numpyro is not installed: skipping its column (pip install -e '.[bench]').")
    only = None if args.engines is None else set(args.engines.split(","))
    if only is not None:
        engines = {k: v for k, v in engines.items() if k in only or k == "probgen"}  # probgen is every ratio's numerator
        args.skip_pyro = args.skip_pyro or "pyro" not in only
    rows: dict[str, Row] = {}
    last: dict[str, Run] = {}
    for name, run in engines.items():
        compile_s = 0.0
        if not args.quick:
            run(model, x, y, x_test, tiny, args.seed + 99)  # warm-up repetition: imports, caches
            start = time.perf_counter()
            run(model, x, y, x_test, tiny, args.seed + 98)  # compilation (warm caches) + 1 + 1 iterations
            compile_s = time.perf_counter() - start
        runs = [run(model, x, y, x_test, config, args.seed + r) for r in range(args.repeats)]
        rows[name] = summarise(name, runs, compile_s)
        last[name] = runs[-1]
        print(f"  {name}: walls {[round(r.wall, 1) for r in runs]} s", flush=True)
    if not args.skip_pyro:
        pyro_config = config._replace(num_chains=args.pyro_chains, num_warmup=args.pyro_warmup, num_samples=args.pyro_samples)
        if not args.quick:
            run_pyro(model, x, y, x_test, pyro_config._replace(num_warmup=2, num_samples=2, num_chains=1), args.seed + 99)
        runs = [run_pyro(model, x, y, x_test, pyro_config, args.seed)]
        note = f"{args.pyro_chains} chains, {args.pyro_warmup}+{args.pyro_samples} draws, 1 repeat"
        rows["pyro"] = summarise("pyro", runs, 0.0, note)
        last["pyro"] = runs[-1]
    header = f"{'engine':<12}{'wall s':>9}{'grads':>11}{'ms/grad':>9}{'ESS med':>9}{'ESS min':>9}{'ESS/s':>8}{'min/s':>8}{'compile s':>10}{'ESS/s excl':>11}  note"
    print()
    print(header)
    for r in rows.values():
        print(
            f"{r.engine:<12}{r.wall:>9.1f} {r.gradients:>10.0f}{r.ms_per_gradient:>9.3f}{r.ess_median:>9.0f}{r.ess_min:>9.0f}"
            f"{r.ess_per_s:>8.2f}{r.ess_per_s_min:>8.2f}{r.compile_s:>10.1f}{r.ess_per_s_excl_compile:>11.2f}  {r.note}"
        )
    if args.quick:
        print("(--quick: no warm-up repetition, compilation not measured, one repeat)")
    print()
    print("case, baseline, probgen, ratio")
    ours = rows["probgen"]
    for base in ("numpyro", "numpyro-par", "pyro"):
        if base not in rows:
            continue
        b = rows[base]
        print(f"ESS/s (median quantity) vs {base}, {b.ess_per_s:.3f}, {ours.ess_per_s:.3f}, {ours.ess_per_s / b.ess_per_s:.2f}")
        print(f"ESS/s (worst quantity) vs {base}, {b.ess_per_s_min:.3f}, {ours.ess_per_s_min:.3f}, {ours.ess_per_s_min / b.ess_per_s_min:.2f}")
        if base.startswith("numpyro"):
            print(
                f"ESS/s excl. compile vs {base}, {b.ess_per_s_excl_compile:.3f}, {ours.ess_per_s_excl_compile:.3f}, "
                f"{ours.ess_per_s_excl_compile / b.ess_per_s_excl_compile:.2f}"
            )
        print(f"ms per gradient vs {base}, {b.ms_per_gradient:.3f}, {ours.ms_per_gradient:.3f}, {b.ms_per_gradient / ours.ms_per_gradient:.2f}")
    if "probgen-warm" in rows:
        warm = rows["probgen-warm"]
        per_prior, per_warm = 1e3 * ours.ess_median / ours.gradients, 1e3 * warm.ess_median / warm.gradients
        print(f"ESS per 1000 gradients, prior starts vs SVI starts, {per_prior:.3f}, {per_warm:.3f}, {per_warm / per_prior:.2f}")
        print(f"ESS/s, prior starts vs SVI starts (SVI fit counted), {ours.ess_per_s:.3f}, {warm.ess_per_s:.3f}, "
              f"{warm.ess_per_s / ours.ess_per_s:.2f}")
    if "probgen-mlp" in rows:
        mlp = rows["probgen-mlp"]
        print(f"ESS/s, torch 'mlp' kernel vs C++ 'fused' kernel, {mlp.ess_per_s:.3f}, {ours.ess_per_s:.3f}, {ours.ess_per_s / mlp.ess_per_s:.2f}")
        print(f"ms per gradient, torch 'mlp' kernel vs C++ 'fused' kernel, {mlp.ms_per_gradient:.3f}, {ours.ms_per_gradient:.3f}, "
              f"{mlp.ms_per_gradient / ours.ms_per_gradient:.2f}")
    if "probgen-single" in rows:
        single = rows["probgen-single"]
        print(f"ESS/s, one compiled call per step vs blocks, {single.ess_per_s:.3f}, {ours.ess_per_s:.3f}, "
              f"{ours.ess_per_s / single.ess_per_s:.2f}")
        print(f"ms per gradient, one compiled call per step vs blocks, {single.ms_per_gradient:.3f}, "
              f"{ours.ms_per_gradient:.3f}, {single.ms_per_gradient / ours.ms_per_gradient:.2f}")
    for base in ("numpyro", "numpyro-par", "pyro", "probgen-mlp", "probgen-warm", "probgen-single"):
        if base in last:
            print(f"predictive means, probgen vs {base}: largest difference {agreement(last['probgen'], last[base]):.1f} MCSE")


if __name__ == "__main__":
    main()
