"""Benchmark: a Bayesian denoiser's training step against the point-estimate chain's, and its read-outs.

Part 1 (time per training step). The same MLP denoiser (same initial weights) is trained on 8 gaussians
with the same Adam, batch, ELBO objective and number of steps by ``fit_diffusion``, as a point-estimate
chain (the baseline) and as a Bayesian chain (``prior=GaussianPrior(1.0, fan_in=True)``) with every
weight Bayesian, and with the last layer only (``deterministic=`` the other modules). A Bayesian step
draws one weight sample per minibatch, runs the net through ``torch.func.functional_call`` and adds the
closed-form KL. Timed runs are interleaved; each case reports the median of five after a warm-up run.

Part 2 (read-outs). Deterministic DDIM from one shared noise under ``S`` posterior draws, as
``sample_uncertainty`` runs it (one ``torch.func.vmap`` call over the draws per step), against a loop
over ``S`` point chains (``chain.with_weights(draw)``, one ``sample_ddim`` each). Medians of five.

Part 3 (fit). Both chains are trained for ``--num-steps`` steps; the test bound of the point chain is
printed next to the Bayesian chain's bound under 8 weight draws (``evaluate_bound(...,
num_posterior_draws=8)``) and its KL per training point; ``--init-scales`` repeats the Bayesian fit for
several initial posterior scales (the measurement behind ``WEIGHT_INIT_SCALE``).

Lines read ``case, baseline, probgen, ratio``. ``--quick`` runs tiny sizes so CI keeps the script alive.

    python benchmarks/bayesian_diffusion.py            # full run (a few minutes on 2 shared CPU cores)
    python benchmarks/bayesian_diffusion.py --quick    # seconds
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from probgen.datasets.toy2d import load_8gaussians
from probgen.infer.diffusion import evaluate_bound, fit_diffusion, sample_ddim, sample_uncertainty
from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
from probgen.priors import GaussianPrior

#: probgen's Bayesian cases: the prior over the denoiser's weights.
PRIORS = {
    "all weights": GaussianPrior(1.0, fan_in=True),
    "last layer": GaussianPrior(1.0, fan_in=True, deterministic=("embed", "inp", "blocks")),
}


def median_seconds(run, *, repeats: int) -> float:
    """The median of ``repeats`` timed calls of ``run()``, after one untimed warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes for CI")
    parser.add_argument("--timesteps", type=int, default=100, help="diffusion steps T")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--timing-steps", type=int, default=100, help="training steps per timed run")
    parser.add_argument("--num-draws", type=int, default=16, help="posterior draws S for the read-outs")
    parser.add_argument("--num-samples", type=str, default="16,256", help="comma-separated sample counts for the read-outs")
    parser.add_argument("--num-steps", type=int, default=3000, help="training steps in part 3")
    parser.add_argument("--init-scales", type=str, default="", help="comma-separated initial posterior scales")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these sizes)")
    args = parser.parse_args()
    if args.quick:
        args.timesteps, args.batch_size, args.hidden, args.timing_steps = 10, 64, 32, 5
        args.num_draws, args.num_samples, args.num_steps = 4, "16", 20
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    toy = load_8gaussians(num_train=10_000, num_val=0, num_test=2_000 if not args.quick else 200, seed=args.seed)
    train, test = toy.train.float(), toy.test.float()
    schedule = get_schedule("linear", args.timesteps)
    net = MLPDenoiser(2, hidden_dim=args.hidden, num_blocks=2).float()
    point = DiffusionChain(net, schedule, event_shape=(2,))
    chains = {name: DiffusionChain(net, schedule, event_shape=(2,), prior=prior) for name, prior in PRIORS.items()}
    common = dict(batch_size=args.batch_size, lr=args.lr, seed=args.seed, grad_clip=None, progress_bar=False)

    # ---------------------------------------------------------------- part 1: time per training step
    def trainer(chain):
        return lambda: fit_diffusion(chain, train, num_steps=args.timing_steps, **common)

    cases = {"point": point, **chains}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for run in cases.values():  # one warm-up each
        trainer(run)()
    for _ in range(5):  # interleaved, so that a busy moment on a shared machine hits every case alike
        for name, chain in cases.items():
            start = time.perf_counter()
            trainer(chain)()
            times[name].append((time.perf_counter() - start) / args.timing_steps)
    step = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"# 8 gaussians: T={args.timesteps} linear, batch {args.batch_size}, MLP width {args.hidden} (2 blocks), "
        f"float32, {torch.get_num_threads()} thread(s), ELBO; baseline = the point-estimate chain; median of 5 runs "
        f"of {args.timing_steps} steps"
    )
    print("case, baseline, probgen, ratio")
    for name in PRIORS:
        print(
            f"time per step ms (Bayesian denoiser, {name}), {1e3 * step['point']:.3f}, {1e3 * step[name]:.3f}, "
            f"{step[name] / step['point']:.2f}"
        )

    # ---------------------------------------------------------------- part 2: read-outs over S draws
    bayes = chains["all weights"].replace_net(net)
    with torch.no_grad():
        bayes.weight_posterior.unconstrained_scale.fill_(-4.0)  # a spread of about 0.02, as after training
    draws = bayes.weight_posterior.sample(args.num_draws, torch.Generator().manual_seed(args.seed))
    one_chains = [bayes.with_weights({k: v[s] for k, v in draws.items()}) for s in range(args.num_draws)]
    print(
        f"# read-outs: sample_uncertainty (DDIM eta 0 and 2 ancestral runs per draw, {args.timesteps} steps) under "
        f"S={args.num_draws} draws; baseline = the same work as a loop over S point chains (sample_ddim with eta 0, "
        "and eta 1 for the ancestral-like runs)"
    )
    for num_samples in [int(n) for n in str(args.num_samples).split(",")]:

        def vectorised() -> None:
            sample_uncertainty(
                bayes, num_samples=num_samples, num_posterior_draws=args.num_draws, num_ancestral=2, seed=args.seed
            )

        def looped() -> None:
            for chain in one_chains:
                sample_ddim(chain, num_samples=num_samples, seed=args.seed)
                sample_ddim(chain, num_samples=2 * num_samples, seed=args.seed, eta=1.0)

        loop_s = median_seconds(looped, repeats=5)
        vmap_s = median_seconds(vectorised, repeats=5)
        print(f"read-out s ({num_samples} samples, vmap over draws), {loop_s:.3f}, {vmap_s:.3f}, {vmap_s / loop_s:.2f}")

    # ---------------------------------------------------------------- part 3: what the fits reach
    point_fit = fit_diffusion(point, train, num_steps=args.num_steps, **common)
    point_bound = evaluate_bound(point_fit, test, seed=args.seed, progress_bar=False)
    scales = [float(s) for s in args.init_scales.split(",") if s] or [None]
    print(f"# fits: {args.num_steps} steps; baseline = the point chain's test bound; probgen = the Bayesian chain's "
          "bound under 8 weight draws (+ KL per training point in the case name)")
    for scale in scales:
        for name, prior in PRIORS.items():
            chain = DiffusionChain(net, schedule, event_shape=(2,), prior=prior, init_scale=scale)
            fit = fit_diffusion(chain, train, num_steps=args.num_steps, **common)
            bound = evaluate_bound(fit, test, num_posterior_draws=8, seed=args.seed, progress_bar=False)
            kl = (bound.weight_kl or 0.0) / train.shape[0]
            spread = float(fit.weight_posterior.scales()[fit.chain.weight_sites[-2]].detach().mean())
            label = (
                f"init_scale {fit.weight_posterior.init_scale:g}, {name}; KL/N {kl:.3f}, final mean sd of the last "
                f"weight {spread:.3g}"
            )
            print(
                f"test bound nats (Bayesian denoiser, {label}), {point_bound.nats:.4f} +- {point_bound.nats_se:.4f}, "
                f"{bound.nats:.4f} +- {bound.nats_se:.4f}, {bound.nats / point_bound.nats:.3f}"
            )


if __name__ == "__main__":
    main()
