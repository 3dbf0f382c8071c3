"""Experiments: a Bayesian denoiser's uncertainty against a deep ensemble and a BNN, each target with a verdict.

Three experiments, each printing its measured numbers next to the threshold and ``met`` or ``missed``:

* ``gap`` (a diffusion regression, after HyperDM's toy): ``x ~ U(-pi, pi)`` with ``|x| < 1`` removed,
  ``y = sin x + eps`` with ``Var eps = 0.04 |x| / pi`` (rising linearly from 0 to 0.04 over ``[0, pi]``,
  mirrored on the negative side), 10,000 points. A conditional chain ``p(y | x)`` (``cond_dim=1``) with
  a Bayesian denoiser (by default a ``MeanShiftDenoiser``: a small tanh network ``m(x)`` with a weight
  posterior, around a point-estimate MLP denoiser of the residual ``y - m(x)``), read out by
  ``predictive_uncertainty`` on a grid of ``x``, over several data seeds (medians). Targets: the mean
  epistemic variance over ``|x| < 1`` at least 3x its mean over the data region; Spearman correlation
  of the aleatoric variance with the true ``Var eps`` on ``[1, pi]`` at least 0.7; epistemic plus
  aleatoric equal to the total variance within 3 Monte Carlo standard errors at every grid point (the
  standard error of the total from a bootstrap over the weight draws). The same data fitted by a
  BNN (``HeteroskedasticGaussian`` likelihood, mean-field ``fit_svi``) is scored the same way for
  comparison, and the figure ``gap.png`` shows both.
* ``density`` (uncertainty tracks the amount of data): 8 Gaussian modes on a circle, one class each,
  with 2048, 1024, ..., 16 training points; a class-conditional chain; the per-class mean of the
  mutual-information score (DECU's disagreement) over 256 samples per class. Targets, as medians over
  the seeds: Spearman(disagreement, class size) at most -0.7 and the rarest-to-commonest ratio at
  least 2, for the Bayesian denoiser and for a deep ensemble.
* ``digits``: an unconditional chain on scikit-learn's digits (flattened to 64 values); of ``M``
  generated digits the least uncertain half against a random half, by the Frechet distance to the
  held-out digits in the hidden layer of an MLP classifier trained on the training digits. Target: the
  filtered half closer in at least 4 of 5 seeds. The default score (``--digits-score epistemic``,
  after Jazbec et al. 2025, "Generative Uncertainty in Diffusion Models") is each sample's own
  epistemic variance: the generated digits are deterministic DDIM under the posterior-mean weights,
  and each is scored by ``sample_uncertainty``'s ``epistemic_score``, the variance over ``S`` weight
  draws of DDIM's output from the same ``x_T``, summed over the 64 pixels. ``--digits-score mi``
  scores ancestral samples of the weight mixture by ``mutual_information`` (DECU's per-step
  disagreement) instead.

    python benchmarks/bayesian_diffusion_toys.py --figures figs          # full sizes (see benchmarks/README.md)
    python benchmarks/bayesian_diffusion_toys.py --quick --figures figs  # seconds, numbers not meaningful
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import linalg  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from torch import nn  # noqa: E402

import probgen  # noqa: E402
from probgen import plots  # noqa: E402
from probgen.datasets.images import load_digits_split  # noqa: E402
from probgen.infer.diffusion import (  # noqa: E402
    filter_by_uncertainty,
    fit_diffusion,
    fit_ensemble,
    mutual_information,
    predictive_uncertainty,
    sample_ddim,
    sample_uncertainty,
)
from probgen.infer.results import EnsembleFit  # noqa: E402
from probgen.models.diffusion import DiffusionChain, MeanShiftDenoiser, MLPDenoiser, get_schedule  # noqa: E402
from probgen.priors import GaussianPrior  # noqa: E402

#: Which weights are Bayesian: every weight, the output layer and the condition's embedding only, or
#: (with a MeanShiftDenoiser) the mean network's only.
WEIGHT_SETS = {"all": (), "last": ("embed", "inp", "blocks"), "mean": ("denoiser",)}


def verdict(name: str, value: float, threshold: float, sense: str) -> bool:
    """Print ``name: value (target sense threshold) met/missed`` and return whether it was met."""
    met = value >= threshold if sense == ">=" else value <= threshold
    print(f"  {name}: {value:.3f} (target {sense} {threshold:g}) {'met' if met else 'missed'}")
    return met


# ---------------------------------------------------------------------------------------------- gap toy
def gap_noise_var(x: Any) -> Any:
    """The true noise variance of the gap toy, ``0.04 |x| / pi`` (symmetric about 0)."""
    return 0.04 * abs(x) / math.pi


def make_gap_toy(num_points: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x ~ U(-pi, pi)`` without ``(-1, 1)`` (uniform on the rest), ``y = sin x + eps``; float32 ``(N,)`` each."""
    generator = torch.Generator().manual_seed(seed)
    # uniform on [1, pi] with a random sign is uniform on U(-pi, pi) restricted to |x| >= 1
    magnitude = 1.0 + (math.pi - 1.0) * torch.rand(num_points, generator=generator, dtype=torch.float64)
    sign = torch.where(torch.rand(num_points, generator=generator) < 0.5, -1.0, 1.0).double()
    x = sign * magnitude
    y = torch.sin(x) + gap_noise_var(x).sqrt() * torch.randn(num_points, generator=generator, dtype=torch.float64)
    return x.float(), y.float()


def score_regression(grid: torch.Tensor, epistemic: torch.Tensor, aleatoric: torch.Tensor) -> dict[str, float]:
    """The gap toy's first two numbers for any read-out on ``grid``: the gap ratio and the noise correlation."""
    grid, epistemic, aleatoric = grid.double(), epistemic.double(), aleatoric.double()
    in_gap = grid.abs() < 1
    right = grid >= 1
    rho = spearmanr(aleatoric[right].numpy(), gap_noise_var(grid[right]).numpy()).statistic
    return {
        "gap_ratio": float(epistemic[in_gap].mean() / epistemic[~in_gap].mean()),
        "epistemic_gap": float(epistemic[in_gap].mean()),
        "epistemic_data": float(epistemic[~in_gap].mean()),
        "noise_spearman": float(rho),
    }


def decomposition_z(samples: torch.Tensor, *, num_boot: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``|epistemic + aleatoric - total| / se(total)`` per condition, from samples ``(S, K, N)``.

    The standard error of the total variance is the bootstrap's, resampling the ``S`` weight draws
    (each with its ``K`` samples), so that it carries the draws' dependence.
    """
    samples = samples.double()
    S, K, N = samples.shape
    aleatoric = samples.var(dim=1).mean(dim=0)
    epistemic = samples.mean(dim=1).var(dim=0)
    total = samples.reshape(S * K, N).var(dim=0)
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(S, (num_boot, S), generator=generator)
    boot = samples[index].reshape(num_boot, S * K, N).var(dim=1)  # (B, N)
    se = boot.std(dim=0)
    return (epistemic + aleatoric - total).abs() / se, se


def fit_gap_bnn(x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> probgen.Prediction:
    """A heteroskedastic BNN on the gap toy (mean-field SVI); its prediction on the grid."""
    torch.manual_seed(args.seed)
    net = nn.Sequential(nn.Linear(1, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2))
    model = probgen.BNN(net, prior=GaussianPrior(1.0, fan_in=True), likelihood=probgen.HeteroskedasticGaussian())
    fit = probgen.fit_svi(
        model, x[:, None].double(), y.double(), num_steps=args.bnn_steps, batch_size=256, lr=1e-2,
        num_samples=args.num_draws * 4, seed=args.seed, progress_bar=False,
    )  # fmt: skip
    return fit.predict(args.grid[:, None].double())


def gap_chain(args: argparse.Namespace) -> DiffusionChain:
    """The gap toy's Bayesian chain: a :class:`MeanShiftDenoiser` (``--gap-net mean-shift``) or the plain MLP."""
    schedule = get_schedule("linear", args.timesteps)
    net: nn.Module = MLPDenoiser(1, hidden_dim=args.hidden, num_blocks=args.blocks, cond_dim=1).float()
    if args.gap_net == "mean-shift":
        net = MeanShiftDenoiser(net, schedule, event_shape=(1,), mean_hidden=args.mean_hidden).float()
    elif args.gap_weights == "mean":
        raise SystemExit("--gap-weights mean needs --gap-net mean-shift (the plain MLP has no mean branch)")
    prior = GaussianPrior(args.gap_prior_scale, fan_in=True, deterministic=WEIGHT_SETS[args.gap_weights])
    return DiffusionChain(
        net, schedule, event_shape=(1,), prior=prior, init_scale=args.gap_init_scale, variance=args.gap_variance
    )


def run_gap_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """One data seed of the gap toy: fit, read out and score the chain (and the BNN on the first seed)."""
    x, y = make_gap_toy(args.gap_points, seed)
    torch.manual_seed(seed)
    chain = gap_chain(args)
    start = time.perf_counter()
    fit = fit_diffusion(
        chain, y[:, None], condition=x[:, None], num_steps=args.gap_steps, batch_size=256, lr=args.gap_lr,
        seed=seed, progress_bar=False,
    )  # fmt: skip
    grid = args.grid
    readout = predictive_uncertainty(
        fit, grid[:, None].float(), num_samples=args.num_samples, num_posterior_draws=args.num_draws, seed=seed
    )
    chain_s = time.perf_counter() - start
    scores = score_regression(grid, readout.epistemic_var[:, 0], readout.aleatoric_var[:, 0])
    z, _ = decomposition_z(readout.samples[..., 0], num_boot=200, seed=seed)
    # the epistemic estimate keeps aleatoric / K of the noise (see PredictiveUncertainty); the ratio without it
    corrected = (readout.epistemic_var - readout.aleatoric_var / args.num_samples)[:, 0]
    scores["gap_ratio_corrected"] = score_regression(grid, corrected, readout.aleatoric_var[:, 0])["gap_ratio"]
    scores["max_z"] = float(z.max())
    print(f"  seed {seed}: gap / data epistemic {scores['gap_ratio']:.2f} (without the aleatoric/K part "
          f"{scores['gap_ratio_corrected']:.2f}; gap {scores['epistemic_gap']:.2e}, data {scores['epistemic_data']:.2e}), "
          f"Spearman {scores['noise_spearman']:.3f}, max z {scores['max_z']:.2f}; {chain_s:.1f} s")
    return {"scores": scores, "readout": readout, "x": x, "y": y, "seconds": chain_s}


def run_gap(args: argparse.Namespace) -> dict[str, Any]:
    print(
        f"# gap toy: {args.gap_points} points, chain T={args.timesteps} linear, {args.gap_net} denoiser (MLP width "
        f"{args.hidden}, {args.blocks} blocks" + (f"; mean of 2 tanh layers of {args.mean_hidden}" if args.gap_net ==
        "mean-shift" else "") + f"), prior N(0, {args.gap_prior_scale:g}^2 / fan_in) on the {args.gap_weights!r} "
        f"weights, init_scale {args.gap_init_scale:g}, {args.gap_steps} steps of Adam lr {args.gap_lr:g}; read-out "
        f"on {args.grid.numel()} x, S={args.num_draws} draws x K={args.num_samples} samples; data seeds {args.gap_seeds}"
    )  # fmt: skip
    runs = [run_gap_seed(args, seed) for seed in args.gap_seeds]
    scores = {key: statistics.median(run["scores"][key] for run in runs) for key in runs[0]["scores"]}
    worst_spearman = min(run["scores"]["noise_spearman"] for run in runs)
    worst_z = max(run["scores"]["max_z"] for run in runs)
    print(f"  over {len(runs)} seed(s): median gap ratio {scores['gap_ratio']:.2f}, worst Spearman {worst_spearman:.3f}, "
          f"worst max z {worst_z:.2f}")
    met = [
        verdict("epistemic gap / data ratio (median over seeds)", scores["gap_ratio"], 3.0, ">="),
        verdict("Spearman(aleatoric, true Var eps) on [1, pi] (worst seed)", worst_spearman, 0.7, ">="),
        verdict("max over the grid of |epi + ale - total| / se(total) (worst seed)", worst_z, 3.0, "<="),
    ]
    first = runs[0]
    start = time.perf_counter()
    args.seed = args.gap_seeds[0]
    bnn = fit_gap_bnn(first["x"], first["y"], args)
    bnn_s = time.perf_counter() - start
    bnn_scores = score_regression(args.grid, bnn.epistemic_var.reshape(-1), bnn.aleatoric_var.reshape(-1))
    print(f"  BNN (heteroskedastic, mean-field SVI, {args.bnn_steps} steps, seed {args.seed}): {bnn_s:.1f} s; gap ratio "
          f"{bnn_scores['gap_ratio']:.2f}, Spearman {bnn_scores['noise_spearman']:.3f} (for comparison, no target)")
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    bayes = gap_chain(args)
    point = bayes.with_weights(bayes.weight_posterior.mean())  # the same net and options, no prior
    ensemble = fit_ensemble(
        point, first["y"][:, None], num_members=args.members, seed=args.seed, condition=first["x"][:, None],
        num_steps=args.gap_steps, batch_size=256, lr=args.gap_lr, progress_bar=False,
    )  # fmt: skip
    ens = predictive_uncertainty(ensemble, args.grid[:, None].float(), num_samples=args.num_samples, seed=args.seed)
    ens_s = time.perf_counter() - start
    ens_scores = score_regression(args.grid, ens.epistemic_var[:, 0], ens.aleatoric_var[:, 0])
    print(f"  deep ensemble ({args.members} point chains of the same net, seed {args.seed}): {ens_s:.1f} s; gap ratio "
          f"{ens_scores['gap_ratio']:.2f}, Spearman {ens_scores['noise_spearman']:.3f} (for comparison, no target)")
    if args.figures is not None:
        fig = plots.plot_regression_uncertainty(
            args.grid, {"diffusion p(y | x), Bayesian denoiser": first["readout"], "BNN, heteroskedastic": bnn},
            x_train=first["x"][::5], y_train=first["y"][::5], true_noise_var=gap_noise_var, shade=(-1.0, 1.0),
        )  # fmt: skip
        fig.savefig(args.figures / "gap.png", dpi=120)
        plt.close(fig)
    seconds = sum(run["seconds"] for run in runs) + bnn_s + ens_s
    return {"chain": scores, "bnn": bnn_scores, "ensemble": ens_scores, "max_z": worst_z, "met": met, "seconds": seconds}


# ---------------------------------------------------------------------------------------------- density toy
def make_density_toy(sizes: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mode ``k`` at angle ``k pi / 4`` on the circle of radius 2 (sd 0.25) with ``sizes[k]`` points, label ``k``."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), k, dtype=torch.long) for k, n in enumerate(sizes)])
    angles = labels.double() * math.pi / 4
    centres = 2.0 * torch.stack([angles.cos(), angles.sin()], dim=1)
    points = centres + 0.25 * torch.randn(centres.shape, generator=generator, dtype=torch.float64)
    return points.float(), labels


def class_scores(source: Any, num_classes: int, args: argparse.Namespace, seed: int) -> torch.Tensor:
    """The mean mutual-information score of ``args.density_samples`` samples per class, ``(num_classes,)``."""
    labels = torch.arange(num_classes).repeat_interleave(args.density_samples)
    scored = mutual_information(
        source, num_samples=labels.numel(), num_posterior_draws=None if isinstance(source, EnsembleFit)
        else args.num_draws, seed=seed, condition=labels,
    )  # fmt: skip
    return scored.score.reshape(num_classes, args.density_samples).mean(dim=1)


def run_density(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [args.density_largest // 2**k for k in range(8)]
    print(
        f"# density toy: 8 modes with {sizes} points, class-conditional chain T={args.timesteps}, width "
        f"{args.hidden}; Bayesian ({args.weights!r} weights, init_scale {args.init_scale:g}, S={args.num_draws}) "
        f"and an ensemble of {args.members}; {args.density_steps} steps each; {args.density_samples} samples per "
        f"class; seeds {args.seeds}"
    )
    rows: dict[str, list[tuple[float, float]]] = {"Bayesian": [], "ensemble": []}
    start = time.perf_counter()
    for seed in args.seeds:
        data, labels = make_density_toy(sizes, seed)
        torch.manual_seed(seed)
        net = MLPDenoiser(2, hidden_dim=args.hidden, num_blocks=args.blocks, num_classes=8).float()
        schedule = get_schedule("linear", args.timesteps)
        common = dict(condition=labels, num_steps=args.density_steps, batch_size=256, lr=args.lr, progress_bar=False)
        prior = GaussianPrior(args.prior_scale, fan_in=True, deterministic=WEIGHT_SETS[args.weights])
        bayes = DiffusionChain(net, schedule, event_shape=(2,), prior=prior, init_scale=args.init_scale)
        sources = {
            "Bayesian": fit_diffusion(bayes, data, seed=seed, **common),
            "ensemble": fit_ensemble(
                DiffusionChain(net, schedule, event_shape=(2,)), data, num_members=args.members, seed=seed, **common
            ),
        }
        for name, source in sources.items():
            score = class_scores(source, 8, args, seed)
            rho = float(spearmanr(score.numpy(), sizes).statistic)
            ratio = float(score[-1] / score[0])
            rows[name].append((rho, ratio))
            print(f"  seed {seed} {name}: Spearman {rho:.3f}, rarest/commonest {ratio:.2f}; per class "
                  f"{[round(float(s), 4) for s in score]}")
    met = []
    for name, values in rows.items():
        rho = statistics.median(v[0] for v in values)
        ratio = statistics.median(v[1] for v in values)
        met.append(verdict(f"{name}: median Spearman(disagreement, class size)", rho, -0.7, "<="))
        met.append(verdict(f"{name}: median rarest/commonest ratio", ratio, 2.0, ">="))
    seconds = time.perf_counter() - start
    print(f"  density toy: {seconds:.1f} s")
    return {"rows": rows, "met": met, "seconds": seconds}


# ---------------------------------------------------------------------------------------------- digits
def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """``||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2))`` of two sets of feature rows."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2.0 * root))


def digit_features(train: torch.Tensor, labels: torch.Tensor, seed: int) -> Any:
    """An MLP classifier of the training digits; returns the map from images to its hidden layer (ReLU)."""
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=500, random_state=seed)
    clf.fit(train.reshape(train.shape[0], -1).double().numpy(), labels.numpy())

    def features(images: torch.Tensor) -> np.ndarray:
        rows = images.reshape(images.shape[0], -1).double().numpy()
        return np.maximum(rows @ clf.coefs_[0] + clf.intercepts_[0], 0.0)

    features.accuracy = clf.score  # type: ignore[attr-defined]
    return features


def digits_scored(fit: Any, args: argparse.Namespace, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``args.digits_samples`` generated digits ``(M, 64)`` and their scores ``(M,)``, lower more certain.

    ``"epistemic"``: the digits are deterministic DDIM under the posterior-mean weights, and each
    digit's score is the variance over ``S`` posterior draws of DDIM's output from that digit's own
    ``x_T`` (``sample_uncertainty``'s ``epistemic_score``, summed over the pixels): how much the weights'
    uncertainty moves that very digit, as in Jazbec et al. (2025), where the sample is the MAP
    network's and its score the spread of the posterior's outputs around it. ``"mi"``: ancestral
    samples of the weight mixture, scored by the mean over the steps of the per-step mutual
    information (DECU).
    """
    num = args.digits_samples
    if args.digits_score == "mi":
        scored = mutual_information(fit, num_samples=num, num_posterior_draws=args.num_draws, seed=seed)
        return scored.samples, scored.score
    # the ancestral half of sample_uncertainty is not used here; 2 runs per draw is its least
    spread = sample_uncertainty(fit, num_samples=num, num_posterior_draws=args.num_draws, num_ancestral=2, seed=seed)
    mean_chain = fit.chain.with_weights(fit.weight_posterior.mean())
    # with the same seed sample_ddim starts from the same x_T as sample_uncertainty
    drawn = sample_ddim(mean_chain, num_samples=num, seed=seed, return_chain=True)
    if not torch.equal(drawn.trajectory[0, :, 0], spread.x_T):
        raise RuntimeError("sample_ddim and sample_uncertainty started from different x_T with the same seed")
    # under a broad posterior (e.g. --prior-scale 4) a draw's DDIM can diverge; that digit is the most uncertain
    score = torch.nan_to_num(spread.epistemic_score, nan=torch.finfo(torch.float32).max,
                             posinf=torch.finfo(torch.float32).max)  # fmt: skip
    return drawn.samples.reshape(num, -1), score


def run_digits(args: argparse.Namespace) -> dict[str, Any]:
    split = load_digits_split(seed=0)
    train, test = split.train.reshape(-1, 64).float(), split.test.reshape(-1, 64).float()
    features = digit_features(split.train, split.train_labels, 0)
    accuracy = features.accuracy(split.test.reshape(-1, 64).double().numpy(), split.test_labels.numpy())
    reference = features(test)
    how = {
        "epistemic": "posterior-mean DDIM samples scored by their epistemic variance over the weight draws",
        "mi": "ancestral samples of the weight mixture scored by mutual information",
    }[args.digits_score]
    print(
        f"# digits: {train.shape[0]} training digits as 64-vectors, chain T={args.timesteps}, MLP width "
        f"{args.digits_hidden}, Bayesian ({args.weights!r} weights, prior scale {args.prior_scale:g}, init_scale "
        f"{args.init_scale:g}), {args.digits_steps} steps; {args.digits_samples} {how} (S={args.num_draws}),"
        f" the least uncertain half against a random half; features: an MLP classifier's hidden layer (test "
        f"accuracy {accuracy:.3f}); Frechet distance to the {test.shape[0]} held-out digits; seeds {args.seeds}"
    )
    wins, start, best = 0, time.perf_counter(), None
    for seed in args.seeds:
        torch.manual_seed(seed)
        net = MLPDenoiser(64, hidden_dim=args.digits_hidden, num_blocks=args.blocks).float()
        prior = GaussianPrior(args.prior_scale, fan_in=True, deterministic=WEIGHT_SETS[args.weights])
        chain = DiffusionChain(
            net, get_schedule("linear", args.timesteps), event_shape=(64,), prior=prior, init_scale=args.init_scale
        )
        fit = fit_diffusion(chain, train, num_steps=args.digits_steps, batch_size=256, lr=args.lr, seed=seed,
                            progress_bar=False)  # fmt: skip
        samples, score = digits_scored(fit, args, seed)
        samples = samples.clamp(-1.0, 1.0)
        kept = filter_by_uncertainty(samples, score, keep=0.5)
        rng = np.random.default_rng(seed)
        random_half = samples[torch.as_tensor(rng.choice(samples.shape[0], kept.indices.numel(), replace=False))]
        fd_kept = frechet_distance(features(kept.samples), reference)
        fd_random = frechet_distance(features(random_half), reference)
        fd_all = frechet_distance(features(samples), reference)
        wins += fd_kept < fd_random
        print(f"  seed {seed}: FD filtered {fd_kept:.2f}, random half {fd_random:.2f}, all {fd_all:.2f} -> "
              f"{'filtered closer' if fd_kept < fd_random else 'random closer'}")
        if best is None:
            best = (samples, score)
    met = [verdict("seeds where filtering lowers the FD", float(wins), 4.0 if len(args.seeds) == 5 else
                   math.ceil(0.8 * len(args.seeds)), ">=")]  # fmt: skip
    seconds = time.perf_counter() - start
    print(f"  digits: {seconds:.1f} s")
    if args.figures is not None and best is not None:
        samples, score = best
        order = torch.argsort(score)
        fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
        for ax, rows, title in ((axes[0], order[:36], "least uncertain 36"), (axes[1], order[-36:], "most uncertain 36")):
            tiles = samples[rows].reshape(6, 6, 8, 8).permute(0, 2, 1, 3).reshape(48, 48)
            ax.imshow(tiles.numpy(), cmap="gray_r", vmin=-1, vmax=1)
            ax.set_title(title)
            ax.axis("off")
        fig.savefig(args.figures / "digits.png", dpi=120)
        plt.close(fig)
    return {"wins": wins, "met": met, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes for CI; numbers are not meaningful")
    parser.add_argument("--experiments", default="gap,density,digits", help="comma-separated: gap, density, digits")
    parser.add_argument("--figures", type=Path, default=None, help="folder for gap.png and digits.png")
    parser.add_argument("--timesteps", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weights", choices=("all", "last"), default="all", help="which weights are Bayesian")
    parser.add_argument("--prior-scale", type=float, default=1.0, help="prior sd times sqrt(fan_in)")
    parser.add_argument("--init-scale", type=float, default=2e-2, help="initial posterior sd of the weights")
    parser.add_argument("--num-draws", type=int, default=32, help="posterior draws S in the read-outs")
    parser.add_argument("--num-samples", type=int, default=32, help="samples K per draw and x (gap toy)")
    parser.add_argument("--gap-points", type=int, default=10_000)
    parser.add_argument("--gap-steps", type=int, default=10_000)
    parser.add_argument("--gap-seeds", type=str, default="0,1,2,3,4", help="data seeds of the gap toy (medians)")
    parser.add_argument("--gap-net", choices=("mean-shift", "mlp"), default="mean-shift",
                        help="the gap toy's denoiser: MeanShiftDenoiser around the MLP, or the MLP alone")
    parser.add_argument("--mean-hidden", type=int, default=16, help="width of the MeanShiftDenoiser's mean")
    parser.add_argument("--gap-weights", choices=sorted(WEIGHT_SETS), default="mean", help="gap toy: which weights are Bayesian")
    parser.add_argument("--gap-prior-scale", type=float, default=4.0, help="gap toy: prior sd times sqrt(fan_in)")
    parser.add_argument("--gap-init-scale", type=float, default=5e-3, help="gap toy: initial posterior sd")
    parser.add_argument("--gap-lr", type=float, default=5e-3, help="gap toy: Adam's learning rate")
    parser.add_argument("--gap-variance", choices=("fixed_large", "fixed_small"), default="fixed_large",
                        help="gap toy: the chain's reverse variances")
    parser.add_argument("--grid", type=int, default=61, help="x grid points on [-pi, pi]")
    parser.add_argument("--bnn-steps", type=int, default=5000)
    parser.add_argument("--density-largest", type=int, default=2048)
    parser.add_argument("--density-steps", type=int, default=3000)
    parser.add_argument("--density-samples", type=int, default=256)
    parser.add_argument("--members", type=int, default=5, help="ensemble members (gap and density toys)")
    parser.add_argument("--digits-hidden", type=int, default=256)
    parser.add_argument("--digits-steps", type=int, default=4000)
    parser.add_argument("--digits-samples", type=int, default=1000)
    parser.add_argument("--digits-score", choices=("epistemic", "mi"), default="epistemic",
                        help="digits: each DDIM sample's epistemic variance over the weight draws, or DECU's "
                             "mutual information of ancestral samples")  # fmt: skip
    parser.add_argument("--seeds", type=str, default="0,1,2,3,4")
    args = parser.parse_args()
    if args.quick:
        args.timesteps, args.hidden, args.num_draws, args.num_samples, args.grid = 8, 16, 4, 4, 21
        args.gap_points, args.gap_steps, args.bnn_steps, args.gap_seeds = 400, 20, 20, "0"
        args.density_largest, args.density_steps, args.density_samples, args.members = 128, 10, 8, 2
        args.digits_hidden, args.digits_steps, args.digits_samples, args.seeds = 16, 10, 40, "0,1"
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args.seeds = [int(s) for s in str(args.seeds).split(",")]
    args.gap_seeds = [int(s) for s in str(args.gap_seeds).split(",")]
    args.grid = torch.linspace(-math.pi, math.pi, args.grid, dtype=torch.float64)
    if args.figures is not None:
        args.figures.mkdir(parents=True, exist_ok=True)
    runners = {"gap": run_gap, "density": run_density, "digits": run_digits}
    results = {}
    for name in args.experiments.split(","):
        results[name] = runners[name](args)
    met = [m for r in results.values() for m in r["met"]]
    print(f"# {sum(met)} of {len(met)} targets met")


if __name__ == "__main__":
    main()
