"""Benchmark: probgen's diffusion training against a plain PyTorch DDPM loop, and bits/dim on digits.

Part 1 (8 gaussians). The same MLP (same initial weights) is trained with the same Adam, batch size
and number of steps by (a) a plain PyTorch DDPM loop written here (epsilon-MSE, Ho et al. 2020,
Algorithm 1), (b) probgen's ``fit_diffusion`` with the same epsilon-MSE objective, and (c) probgen's
``fit_diffusion`` with its ELBO objective, uniform and importance-sampled steps. It prints the time per
training step (separate timing runs, interleaved, best of three after a warm-up run, since the machine
may be shared) and its ratio to the baseline, the full test bound of every model (all scored by
probgen's ``evaluate_bound``, which works for any epsilon-network) against the known entropy and a
single Gaussian's NLL, and the energy distance of 1000 ancestral samples to held-out data.

Part 2 (digits). A small convolutional chain with a discretised decoder (bins of half-width 1/16,
17 levels) and the log-SNR schedule is trained by the ELBO (importance-sampled steps) on the 1000
training digits, and its test bound in bits/dim (D = 64) is printed next to the floor of independent
per-pixel categorical distributions.

Lines read ``case, baseline, probgen, ratio``. ``--quick`` runs tiny sizes so CI keeps the script alive.

    python benchmarks/diffusion.py            # full run (about 8 minutes on 2 shared CPU cores)
    python benchmarks/diffusion.py --quick    # seconds
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from probgen.datasets.images import load_digits_split, pixel_categorical_bits_per_dim
from probgen.datasets.toy2d import load_8gaussians
from probgen.infer.diffusion import evaluate_bound, fit_diffusion, sample_ancestral
from probgen.metrics import energy_distance, gaussian_nll
from probgen.models.diffusion import (
    ConvDenoiser,
    DiffusionChain,
    DiscretizedGaussianDecoder,
    MLPDenoiser,
    get_schedule,
)


def plain_ddpm_loop(net, data, alphas_cumprod, *, num_steps, batch_size, lr, seed):
    """Ho et al. (2020) Algorithm 1 in plain PyTorch: epsilon-MSE, Adam, uniform t. Returns the trained net."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    sqrt_ab = alphas_cumprod.sqrt().to(data.dtype)
    sqrt_1mab = (1 - alphas_cumprod).sqrt().to(data.dtype)
    num_t = alphas_cumprod.shape[0]
    for _ in range(num_steps):
        x0 = data[torch.randint(data.shape[0], (batch_size,), generator=generator)]
        t = torch.randint(1, num_t + 1, (batch_size,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        x_t = sqrt_ab[t - 1, None] * x0 + sqrt_1mab[t - 1, None] * noise
        loss = (net(x_t, t) - noise).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return net.eval()


CASES = {  # probgen's cases: (objective, timestep_sampling)
    "eps_mse": ("eps_mse", "uniform"),
    "elbo": ("elbo", "uniform"),
    "elbo+is": ("elbo", "importance"),
}


def time_per_step(train_fn, *, steps, repeats):
    """Seconds per step: the fastest of ``repeats`` timed runs, after one untimed warm-up run."""
    train_fn(steps)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        train_fn(steps)
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes for CI")
    parser.add_argument("--num-steps", type=int, default=3000, help="training steps on 8 gaussians")
    parser.add_argument("--timesteps", type=int, default=100, help="diffusion steps T on 8 gaussians")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--timing-steps", type=int, default=200, help="steps per timed run (best of 3)")
    parser.add_argument("--digits-steps", type=int, default=6000, help="training steps on digits")
    parser.add_argument("--digits-timesteps", type=int, default=100, help="diffusion steps T on digits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these sizes)")
    args = parser.parse_args()
    if args.quick:
        args.num_steps, args.timesteps, args.hidden, args.batch_size, args.timing_steps = 30, 20, 32, 64, 5
        args.digits_steps, args.digits_timesteps = 3, 10
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    # ---------------------------------------------------------------- part 1: 8 gaussians
    toy = load_8gaussians(num_train=10_000, num_val=0, num_test=2_000 if not args.quick else 300, seed=args.seed)
    train, test = toy.train.float(), toy.test.float()
    schedule = get_schedule("linear", args.timesteps)
    net = MLPDenoiser(2, hidden_dim=args.hidden, num_blocks=2).float()
    chain = DiffusionChain(net, schedule, event_shape=(2,))
    common = dict(batch_size=args.batch_size, lr=args.lr, seed=args.seed)

    def baseline_fn(steps):
        return plain_ddpm_loop(copy.deepcopy(net), train, schedule.alphas_cumprod, num_steps=steps, **common)

    def probgen_fn(case):
        objective, sampling = CASES[case]

        def run(steps):
            return fit_diffusion(
                chain, train, num_steps=steps, objective=objective, timestep_sampling=sampling, grad_clip=None,
                progress_bar=False, **common,
            ).chain

        return run

    # same initial weights, optimiser, batch, steps and seed; eps_mse consumes the same random numbers as the
    # baseline, so the two train identical networks
    models = {"baseline": chain.replace_net(baseline_fn(args.num_steps))}
    models.update({case: probgen_fn(case)(args.num_steps) for case in CASES})
    # timing runs separate from training, interleaved, best of 3 (the machine is shared)
    seconds = {"baseline": time_per_step(baseline_fn, steps=args.timing_steps, repeats=3)}
    seconds.update({case: time_per_step(probgen_fn(case), steps=args.timing_steps, repeats=3) for case in CASES})

    print(f"# 8 gaussians: T={args.timesteps} linear, {args.num_steps} steps, batch {args.batch_size}, "
          f"Adam lr {args.lr}, "
          f"MLP width {args.hidden}, float32, {torch.get_num_threads()} thread(s); baseline = plain PyTorch DDPM "
          f"loop (eps-MSE); elbo+is = ELBO with importance-sampled t")
    print("case, baseline, probgen, ratio")
    for case in CASES:
        print(f"time per step ms (probgen {case}), {1e3 * seconds['baseline']:.3f}, {1e3 * seconds[case]:.3f}, "
              f"{seconds[case] / seconds['baseline']:.2f}")
    bounds = {name: evaluate_bound(c, test, seed=args.seed, progress_bar=False) for name, c in models.items()}
    reference = f"entropy {toy.entropy:.4f}, single Gaussian NLL {gaussian_nll(train, test):.4f}"
    b = bounds["baseline"]
    for case in CASES:
        p = bounds[case]
        print(f"test bound nats (probgen {case}; {reference}), {b.nats:.4f} +- {b.nats_se:.4f}, "
              f"{p.nats:.4f} +- {p.nats_se:.4f}, {p.nats / b.nats:.3f}")
    num_samples = min(1000, test.shape[0])
    distances = {
        name: energy_distance(
            sample_ancestral(c, num_samples=num_samples, seed=args.seed).get_samples()["x_0"], test[:num_samples]
        )
        for name, c in models.items()
    }
    floor = energy_distance(train[:num_samples], test[:num_samples])
    for case in CASES:
        # an energy distance is ~0 for a good model (and may be slightly negative), so a ratio means
        # nothing; the last column is the difference probgen - baseline instead
        print(f"energy distance to test (probgen {case}; data vs data {floor:.4f}; last column is the "
              f"difference), {distances['baseline']:.4f}, {distances[case]:.4f}, "
              f"{distances[case] - distances['baseline']:+.4f}")

    # ---------------------------------------------------------------- part 2: digits
    split = load_digits_split()
    digits_train, digits_test = split.train.float(), split.test.float()
    digits_chain = DiffusionChain(
        ConvDenoiser(1, hidden_channels=32 if not args.quick else 8, num_blocks=3 if not args.quick else 1).float(),
        get_schedule("log_snr", args.digits_timesteps),
        event_shape=(1, 8, 8),
        decoder=DiscretizedGaussianDecoder(split.num_levels),
    )
    start = time.perf_counter()
    digits = fit_diffusion(
        digits_chain, digits_train, num_steps=args.digits_steps, batch_size=64, lr=2e-3, seed=args.seed,
        timestep_sampling="importance", ema_decay=0.995 if not args.quick else None, progress_bar=False,
    )
    seconds = time.perf_counter() - start
    bound = evaluate_bound(digits.chain, digits_test, seed=args.seed, progress_bar=False)
    floor_bpd = pixel_categorical_bits_per_dim(split.train, split.test)
    print(f"# digits: T={args.digits_timesteps} log-SNR schedule, {args.digits_steps} ELBO steps "
          f"(importance-sampled t) "
          f"in {seconds:.0f} s, "
          f"discretised decoder (17 levels, half-width 1/16), D = 64; baseline = per-pixel categorical floor")
    print(f"digits test bits/dim, {floor_bpd:.4f}, {bound.bits_per_dim:.4f} +- {bound.bits_per_dim_se:.4f}, "
          f"{bound.bits_per_dim / floor_bpd:.3f}")


if __name__ == "__main__":
    main()
