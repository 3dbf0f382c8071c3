"""The ``probgen diffusion`` command: fit a diffusion model, evaluate its bound, draw samples.

``probgen diffusion fit --data FILE.csv|digits|8gaussians|... --out DIR`` trains a
:class:`~probgen.models.diffusion.DiffusionChain` by its ELBO, scores the full bound on held-out data
and writes ``DIR/model.pt`` (:func:`~probgen.models.diffusion.save_chain`), ``DIR/data.json`` (the data
set and its standardisation), ``DIR/bound.json``, ``DIR/losses.csv``, ``DIR/checkpoint.pt``,
``DIR/run.nc`` (the run as ArviZ NetCDF, which ``probgen inspect`` reads) and ``DIR/samples.png``. ``probgen diffusion sample --model DIR`` and ``probgen diffusion evaluate --model DIR``
work from the saved model. The top-level parser calls :func:`register`.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from probgen._io import save_figure, save_netcdf, save_text
from probgen.cli._common import (
    non_negative_int,
    open_unit_interval,
    positive_float,
    positive_int,
    prepare_output_folder,
    read_numeric_csv,
    resume_hint_on_interrupt,
    resumed_state,
    unit_interval,
)
from probgen.datasets.images import DIGITS_NUM_LEVELS, load_digits_split
from probgen.datasets.toy2d import TOY2D_NAMES, load_toy2d
from probgen.infer.diffusion import (
    OBJECTIVES,
    TIMESTEP_SAMPLINGS,
    BoundResult,
    evaluate_bound,
    fit_diffusion,
    sample_ancestral,
    sample_ddim,
)
from probgen.infer import is_main_process as is_main
from probgen.infer.results import DiffusionTrainState
from probgen.metrics import energy_distance, gaussian_nll
from probgen.models.diffusion import (
    PREDICTIONS,
    SCHEDULE_NAMES,
    VARIANCES,
    ConvDenoiser,
    DiffusionChain,
    DiscretizedGaussianDecoder,
    GaussianDecoder,
    MLPDenoiser,
    ScheduleName,
    get_schedule,
    load_chain,
    save_chain,
)

__all__ = ["register"]

_SAMPLERS = ("ancestral", "ddim")
_DATA_HELP = f"a CSV file of numeric columns, 'digits', or a 2-D toy: {', '.join(TOY2D_NAMES)}"


class _Data:
    """Train/test tensors plus what is needed to map model space back to data units."""

    def __init__(
        self, name: str, train: Tensor, test: Tensor, shift: Tensor, scale: Tensor, entropy: float | None
    ) -> None:
        self.name, self.train, self.test = name, train, test
        self.shift, self.scale, self.entropy = shift, scale, entropy


def _load_data(spec: str, *, seed: int, shift: list[float] | None = None, scale: list[float] | None = None) -> _Data:
    dtype = torch.get_default_dtype()
    if spec == "digits":
        split = load_digits_split()
        one = torch.zeros(1, dtype=dtype)
        return _Data("digits", split.train, split.test, one, one + 1, None)
    if spec in TOY2D_NAMES:
        toy = load_toy2d(spec, num_val=0, seed=seed)
        return _Data(spec, toy.train, toy.test, torch.zeros(2, dtype=dtype), torch.ones(2, dtype=dtype), toy.entropy)
    path = Path(spec)
    if path.suffix.lower() != ".csv" or not path.is_file():
        raise ValueError(f"--data must be {_DATA_HELP}; got {spec!r}, which is not an existing .csv file.")
    frame = read_numeric_csv(path)  # names the column that is not numeric or has gaps
    values = torch.as_tensor(frame.to_numpy(dtype=np.float64), dtype=dtype)
    if shift is None or scale is None:
        # a fitted model keeps the training file's standardisation; a new one standardises here
        order = torch.as_tensor(np.random.default_rng(seed).permutation(values.shape[0]))
        num_test = max(1, values.shape[0] // 5)
        train, test = values[order[num_test:]], values[order[:num_test]]
        loc, std = train.mean(0), train.std(0).clamp(min=1e-8)
    else:
        train = test = values
        loc, std = torch.tensor(shift, dtype=dtype), torch.tensor(scale, dtype=dtype)
    return _Data(path.name, (train - loc) / std, (test - loc) / std, loc, std, None)


def _build_chain(args: argparse.Namespace, event_shape: tuple[int, ...], is_image: bool) -> DiffusionChain:
    hidden = args.hidden if args.hidden is not None else (32 if is_image else 128)
    net: nn.Module
    if is_image:
        net = ConvDenoiser(event_shape[0], hidden_channels=hidden, num_blocks=3)
    else:
        net = MLPDenoiser(event_shape[0], hidden_dim=hidden)
    schedule: ScheduleName = args.schedule if args.schedule is not None else ("log_snr" if is_image else "linear")
    return DiffusionChain(
        net,
        get_schedule(schedule, args.timesteps),
        event_shape=event_shape,
        decoder=DiscretizedGaussianDecoder(DIGITS_NUM_LEVELS) if is_image else GaussianDecoder(),
        variance=args.variance,
        prediction=args.prediction,
    )


def _load_model(directory: str) -> tuple[DiffusionChain, dict[str, Any]]:
    """The saved chain and ``data.json``: the data set, its standardisation and the fit's seed."""
    path, data_path = Path(directory) / "model.pt", Path(directory) / "data.json"
    if not path.is_file():
        raise ValueError(f"no saved model at {path}; run 'probgen diffusion fit --out {directory}' first.")
    chain = load_chain(path)
    if not data_path.is_file():
        raise ValueError(f"{data_path} is missing; 'probgen diffusion fit --out {directory}' writes it with model.pt.")
    return chain, json.loads(data_path.read_text())


def _bound_summary(bound: BoundResult, data: _Data) -> dict[str, Any]:
    # x = shift + scale * z, so -log p_x(x) = -log p_z(z) + sum_d log scale_d
    log_jacobian = float(data.scale.log().sum())
    nats = bound.nats + log_jacobian
    summary: dict[str, Any] = {
        "data": data.name,
        "num_test": int(data.test.shape[0]),
        "num_dims": bound.num_dims,
        "nats": nats,
        "nats_se": bound.nats_se,
        "bits_per_dim": nats / (bound.num_dims * math.log(2.0)),
        "bits_per_dim_se": bound.bits_per_dim_se,
        "prior_term_L_T": float(bound.terms[-1]),
        "decoder_term_L_0": float(bound.terms[0]),
        "terms": [float(v) for v in bound.terms],
        "seed": bound.seed,
    }
    if bound.num_dims <= 16 and data.name != "digits":
        summary["gaussian_nll"] = gaussian_nll(data.train, data.test) + log_jacobian
    if data.entropy is not None:
        summary["entropy"] = data.entropy
        summary["bound_minus_entropy"] = nats - data.entropy
    return summary


def _save_png(samples: Tensor, path: Path, reference: Tensor | None, title: str) -> None:
    """Rows of images as a grid, of 2-D points as a scatter over ``reference``; written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from probgen.plots import plot_image_grid, plot_samples

    if samples.dim() == 4:
        fig = plot_image_grid(samples, max_images=samples.shape[0], title=title)
    else:
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        plot_samples(samples, reference=reference, title=title, ax=ax)
    try:
        save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)


def _to_data_units(samples: Tensor, data: _Data) -> Tensor:
    return samples if samples.dim() == 4 else samples * data.scale + data.shift


#: Steps between the checkpoints of ``probgen diffusion fit`` (and one at the end).
CHECKPOINT_EVERY = 100


def _fit(args: argparse.Namespace) -> int:
    data = _load_data(args.data, seed=args.seed)
    out = prepare_output_folder(args.out)
    is_image = data.name == "digits"
    torch.manual_seed(args.seed)  # the network's initial weights: the same --seed, the same run
    chain = _build_chain(args, tuple(data.train.shape[1:]), is_image)
    checkpoint = out / "checkpoint.pt"
    load = DiffusionTrainState.load
    init_state, steps = resumed_state(checkpoint, args.num_steps, load) if args.resume else (None, args.num_steps)
    with resume_hint_on_interrupt(checkpoint, load):
        result = _train(args, chain, data, steps, init_state, checkpoint)
    if is_main():  # under torchrun every rank trains; rank 0 alone writes the run and prints
        _write_run(args, result, data, out, is_image)
    return 0


def _train(
    args: argparse.Namespace, chain: Any, data: _Data, steps: int, init_state: Any, checkpoint: Path
) -> Any:
    return fit_diffusion(
        chain,
        data.train,
        num_steps=steps,
        batch_size=args.batch_size,
        lr=args.lr,
        final_lr=args.final_lr,
        seed=args.seed,
        objective=args.objective,
        timestep_sampling=args.timestep_sampling,
        ema_decay=args.ema_decay,
        checkpoint=checkpoint,
        checkpoint_every=CHECKPOINT_EVERY,
        init_state=init_state,
        decay_steps=args.num_steps,
    )


def _data_reference(spec: str) -> str:
    """What ``data.json`` records of ``--data``: a bundled set by name, a CSV by its absolute path
    (so ``evaluate`` finds it from any working directory)."""
    if spec == "digits" or spec in TOY2D_NAMES:
        return spec
    return str(Path(spec).resolve())


def _write_run(args: argparse.Namespace, result: Any, data: _Data, out: Path, is_image: bool) -> None:
    save_chain(result.chain, out / "model.pt")
    saved_data = {
        "data": _data_reference(args.data),
        "shift": [float(v) for v in data.shift],
        "scale": [float(v) for v in data.scale],
        "seed": result.seed,
    }
    save_text(out / "data.json", json.dumps(saved_data, indent=2) + "\n")
    save_text(out / "losses.csv", "loss\n" + "".join(f"{float(v)!r}\n" for v in result.losses))
    bound = evaluate_bound(result.chain, data.test, seed=args.seed)
    summary = _bound_summary(bound, data)
    samples = sample_ancestral(result.chain, num_samples=args.num_samples, seed=args.seed)
    draws = samples.get_samples()["x_0"]
    if not is_image:
        summary["energy_distance"] = energy_distance(draws, data.test[: args.num_samples])
    save_text(out / "bound.json", json.dumps(summary, indent=2) + "\n")
    save_netcdf(result.to_arviz(bound=bound, samples=samples), out / "run.nc")  # in model units
    _save_png(
        _to_data_units(draws, data),
        out / "samples.png",
        None if is_image else _to_data_units(data.test, data),
        f"{data.name}: bound {summary['nats']:.3f} nats",
    )
    print(
        f"bound on {summary['num_test']} held-out points: {summary['nats']:.4f} +- {summary['nats_se']:.4f} nats "
        f"({summary['bits_per_dim']:.4f} bits/dim); wrote {out}/model.pt, data.json, bound.json, losses.csv, "
        "run.nc, samples.png"
    )


def _sample(args: argparse.Namespace) -> int:
    chain, saved = _load_model(args.model)
    if args.sampler == "ddim":
        draws = sample_ddim(
            chain, num_samples=args.num_samples, num_sampling_steps=args.ddim_steps, eta=args.eta, seed=args.seed
        )
    else:
        draws = sample_ancestral(chain, num_samples=args.num_samples, seed=args.seed)
    rows = draws.get_samples()["x_0"]
    shift = torch.tensor(saved["shift"], dtype=rows.dtype)
    scale = torch.tensor(saved["scale"], dtype=rows.dtype)
    samples = rows if rows.dim() == 4 else rows * scale + shift
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        buffer = io.StringIO()
        np.savetxt(buffer, samples.flatten(1).cpu().numpy(), delimiter=",")
        save_text(out, buffer.getvalue())
    else:
        _save_png(samples, out, None, f"{args.sampler} samples (seed {draws.seed})")
    print(f"wrote {args.num_samples} {args.sampler} samples to {out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    chain, config = _load_model(args.model)
    if args.data is None:
        # the fit's own held-out split, rebuilt from the same seed (and standardisation, for a CSV)
        recorded = config["data"]
        if recorded != "digits" and recorded not in TOY2D_NAMES and not Path(recorded).is_file():
            raise ValueError(
                f"the run was fitted on {recorded}, which no longer exists; pass --data FILE.csv to score another file."
            )
        data = _load_data(recorded, seed=config["seed"])
    elif args.data in TOY2D_NAMES or args.data == "digits":
        data = _load_data(args.data, seed=config["seed"])
    else:
        # another CSV file: score every row, in the fitted standardisation
        data = _load_data(args.data, seed=config["seed"], shift=config["shift"], scale=config["scale"])
    summary = _bound_summary(evaluate_bound(chain, data.test, seed=args.seed), data)
    text = json.dumps(summary, indent=2)
    if args.out:
        save_text(args.out, text + "\n")
    print(text)
    return 0


def _guarded(handler: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(handler(args))
        except (ValueError, TypeError) as error:
            print(f"probgen diffusion {args.diffusion_command}: error: {error}", file=sys.stderr)
            return 2

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


def register(subparsers: Any) -> None:
    """Add the ``diffusion`` command, with ``fit``, ``sample`` and ``evaluate``, to ``probgen``'s parser.

    :param subparsers: the object returned by ``parser.add_subparsers()`` of the top-level parser.

    Example::

        >>> parser = argparse.ArgumentParser(prog="probgen")
        >>> register(parser.add_subparsers(dest="command"))
        >>> args = parser.parse_args(["diffusion", "sample", "--model", "runs/toy", "--out", "s.png"])
        >>> args.sampler, args.num_samples, callable(args.func)
        ('ancestral', 1000, True)
    """
    diffusion = subparsers.add_parser(
        "diffusion",
        help="diffusion models as Pyro latent chains: fit, sample, evaluate",
        description="Fit diffusion models by their ELBO, evaluate the bound and draw samples.",
    )
    commands = diffusion.add_subparsers(dest="diffusion_command", metavar="{fit,sample,evaluate}", required=True)

    fit = commands.add_parser(
        "fit",
        help="train by the ELBO, evaluate the bound and write samples",
        description="Train a diffusion chain by an unbiased estimate of its ELBO, score the full bound "
        "on held-out data and write DIR/model.pt, data.json, bound.json, losses.csv, checkpoint.pt, run.nc "
        "(the run as ArviZ NetCDF, for 'probgen inspect') and samples.png. "
        "CSV data are standardised and split 80/20; the bound is reported in the data's own units.",
    )
    fit.add_argument("--data", required=True, help=_DATA_HELP)
    fit.add_argument("--out", required=True, help="output directory")
    fit.add_argument("--timesteps", type=positive_int, default=100, help="diffusion steps T of the chain (default 100)")
    fit.add_argument(
        "--schedule", choices=SCHEDULE_NAMES, default=None, help="noise schedule (default linear; log_snr for digits)"
    )
    fit.add_argument(
        "--variance", choices=VARIANCES, default="fixed_large", help="reverse variances (default fixed_large)"
    )
    fit.add_argument("--prediction", choices=PREDICTIONS, default="epsilon", help="what the net predicts")
    fit.add_argument("--objective", choices=OBJECTIVES, default="elbo", help="training objective (default elbo)")
    fit.add_argument("--num-steps", type=positive_int, default=3000, help="optimisation steps (default 3000)")
    fit.add_argument("--batch-size", type=positive_int, default=256, help="minibatch size (default 256)")
    fit.add_argument("--lr", type=positive_float, default=2e-3, help="Adam learning rate (default 2e-3)")
    fit.add_argument(
        "--final-lr", type=positive_float, default=None,
        help="decay the learning rate exponentially to this value over --num-steps (default: constant)",
    )  # fmt: skip
    fit.add_argument(
        "--hidden", type=positive_int, default=None, help="width of the denoising net (default 128 for vectors, 32 for digits)"
    )
    fit.add_argument(
        "--timestep-sampling",
        choices=TIMESTEP_SAMPLINGS,
        default="uniform",
        help="how the ELBO estimator draws steps (default uniform; importance needs --objective elbo)",
    )
    fit.add_argument("--ema-decay", type=open_unit_interval, default=None, help="keep an EMA of the weights with this decay")
    fit.add_argument("--num-samples", type=positive_int, default=1000, help="samples to draw for the PNG (default 1000)")
    fit.add_argument("--seed", type=non_negative_int, default=0, help="seed of training, evaluation and sampling (default 0)")
    fit.add_argument(
        "--resume", action="store_true",
        help=f"continue the interrupted fit saved in --out (checkpoint.pt, every {CHECKPOINT_EVERY} steps) up to --num-steps in all",
    )  # fmt: skip
    fit.set_defaults(func=_guarded(_fit))

    sample = commands.add_parser(
        "sample",
        help="draw samples from a saved model",
        description="Draw samples from a model saved by 'fit' and write them as a PNG "
        "(or a CSV if --out ends in .csv).",
    )
    sample.add_argument("--model", required=True, help="directory written by 'probgen diffusion fit'")
    sample.add_argument("--out", required=True, help="output file, .png or .csv")
    sample.add_argument("--num-samples", type=positive_int, default=1000, help="number of samples (default 1000)")
    sample.add_argument("--sampler", choices=_SAMPLERS, default="ancestral", help="ancestral (the Pyro model) or ddim")
    sample.add_argument("--ddim-steps", type=positive_int, default=None, help="steps DDIM visits (default: all T of the chain)")
    sample.add_argument("--eta", type=unit_interval, default=0.0, help="DDIM eta, 0 deterministic to 1 (default 0)")
    sample.add_argument("--seed", type=non_negative_int, default=0, help="seed (default 0)")
    sample.set_defaults(func=_guarded(_sample))

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate the full variational bound of a saved model",
        description="Compute the full bound over all steps on held-out data, in nats and bits per dimension, "
        "with standard errors and the per-step terms, and print it as JSON.",
    )
    evaluate.add_argument("--model", required=True, help="directory written by 'probgen diffusion fit'")
    evaluate.add_argument(
        "--data",
        default=None,
        help="data to score: the fit's data set (test split) by default, or a CSV file (all rows)",
    )
    evaluate.add_argument("--out", default=None, help="also write the JSON to this file")
    evaluate.add_argument("--seed", type=non_negative_int, default=0, help="seed of the noise draws (default 0)")
    evaluate.set_defaults(func=_guarded(_evaluate))
