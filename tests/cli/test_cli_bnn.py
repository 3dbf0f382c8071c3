"""The command line: help on every subcommand, errors that name the problem, a fit end to end."""

from __future__ import annotations

import functools
import inspect
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from probgen.cli import build_parser, main
from probgen.cli.bnn import fit_from_csv
from probgen import fit_nuts, fit_svi
from probgen.datasets import make_cosine


def _subcommand_paths(parser, prefix=()):
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                yield prefix + (name,)
                yield from _subcommand_paths(sub, prefix + (name,))


@pytest.mark.parametrize("path", [()] + list(_subcommand_paths(build_parser())), ids=lambda p: " ".join(p) or "probgen")
def test_every_subcommand_has_help(path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    assert "usage: probgen" in capsys.readouterr().out


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "probgen", "--help"], capture_output=True, text=True, check=True)
    assert "bnn" in out.stdout


@pytest.fixture
def csv_file(tmp_path):
    train, _ = make_cosine()
    path = tmp_path / "toy.csv"
    train.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("method", ["svi", "nuts"])
def test_bnn_fit_end_to_end(method, csv_file, tmp_path):
    out = tmp_path / method
    code = main([
        "bnn", "fit", "--data", str(csv_file), "--target", "y", "--method", method, "--out", str(out),
        "--hidden", "5", "--num-steps", "30", "--num-warmup", "10", "--num-samples", "10", "--num-chains", "2",
        "--no-progress",
    ])  # fmt: skip
    assert code == 0
    assert (out / "posterior.nc").stat().st_size > 0
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    assert {"mean", "sd", "r_hat"} <= set(summary.columns)
    assert (out / "predictive.png").stat().st_size > 0


def test_bnn_fit_holds_out_a_test_fraction(csv_file, tmp_path, capsys):
    """--test-size: a seeded split, statistics of the training rows only, scores on the original scale."""

    def fit(out):
        args = ["bnn", "fit", "--data", str(csv_file), "--target", "y", "--method", "svi", "--out", str(out),
                "--hidden", "5", "--num-steps", "500", "--test-size", "0.2", "--no-progress"]  # fmt: skip
        assert main(args) == 0
        return json.loads((out / "test_metrics.json").read_text()), json.loads((out / "scaling.json").read_text())

    metrics, scaling = fit(tmp_path / "first")
    printed = capsys.readouterr().out
    assert f"{metrics['num_test']} held-out rows" in printed and "rmse" in printed
    n = len(pd.read_csv(csv_file))
    assert metrics["num_test"] == round(0.2 * n) == len(scaling["test_rows"])
    train = pd.read_csv(csv_file).drop(index=scaling["test_rows"])
    assert scaling["y_mean"] == pytest.approx(train["y"].mean(), rel=1e-5)  # standardised on the training rows
    assert math.isfinite(metrics["test_log_likelihood"])
    assert fit(tmp_path / "again")[1]["test_rows"] == scaling["test_rows"]  # seeded
    # the scores are those of the fitted posterior on the held-out rows, on the original scale
    args = build_parser().parse_args(
        ["bnn", "fit", "--data", str(csv_file), "--target", "y", "--method", "svi", "--out", str(tmp_path / "third"),
         "--hidden", "5", "--num-steps", "500", "--test-size", "0.2", "--no-progress"]
    )  # fmt: skip
    result, _ = fit_from_csv(args.data, args.target, args.features, args.method, args.out, args)
    test = pd.read_csv(csv_file).iloc[scaling["test_rows"]]
    x = (torch.tensor(test[["x"]].to_numpy(), dtype=torch.float32) - torch.tensor(scaling["x_mean"])) / torch.tensor(scaling["x_std"])
    mean = result.predict(x).mean * scaling["y_std"] + scaling["y_mean"]
    expected = float((mean - torch.tensor(test["y"].to_numpy())).pow(2).mean().sqrt())
    assert metrics["test_rmse"] == pytest.approx(expected, rel=1e-4)


def test_bnn_predict_on_a_new_csv_matches_the_reloaded_result(csv_file, tmp_path, capsys):
    """fit --test-size -> predict on a new CSV: the run's folder alone rebuilds the model, and the
    predictions, in the data's units, are those of load_result(...).predict on the same rows."""
    from probgen import load_result
    from probgen.cli.bnn import build_model

    run = tmp_path / "run"
    args = ["bnn", "fit", "--data", str(csv_file), "--target", "y", "--method", "svi", "--out", str(run),
            "--hidden", "5", "--num-steps", "300", "--test-size", "0.2", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    new = tmp_path / "new.csv"
    pd.DataFrame({"x": [-0.9, 0.0, 0.35, 1.5]}).to_csv(new, index=False)
    out = tmp_path / "preds" / "predictions.csv"
    assert main(["bnn", "predict", "--model", str(run), "--data", str(new), "--out", str(out), "--level", "0.8"]) == 0
    assert "4 rows" in capsys.readouterr().out
    got = pd.read_csv(out)
    assert list(got.columns) == ["x", "mean", "sd", "lower", "upper", "epistemic_sd", "aleatoric_sd"]

    scaling = json.loads((run / "scaling.json").read_text())
    model = build_model(json.loads((run / "model.json").read_text()))
    result = load_result(run / "posterior.nc", model)
    x = (torch.tensor([[-0.9], [0.0], [0.35], [1.5]]) - torch.tensor(scaling["x_mean"])) / torch.tensor(scaling["x_std"])
    pred = result.predict(x, seed=0)
    scale, shift = scaling["y_std"], scaling["y_mean"]
    assert np.allclose(got["mean"], (pred.mean * scale + shift).numpy(), rtol=1e-5)
    assert np.allclose(got["sd"], (pred.std * scale).numpy(), rtol=1e-5)
    lower, upper = pred.interval(0.8)
    assert np.allclose(got["upper"], (upper * scale + shift).numpy(), rtol=1e-5)
    assert (got["lower"] < got["mean"]).all() and (got["mean"] < got["upper"]).all()
    assert np.allclose(got["sd"] ** 2, got["epistemic_sd"] ** 2 + got["aleatoric_sd"] ** 2, rtol=1e-4)


def test_bnn_predict_names_a_missing_run_and_a_missing_column(csv_file, tmp_path, capsys):
    code = main(["bnn", "predict", "--model", str(tmp_path / "nothing"), "--data", str(csv_file), "--out", str(tmp_path / "p.csv")])
    assert code == 2 and "no model description (model.json)" in capsys.readouterr().err
    run = tmp_path / "run"
    args = ["bnn", "fit", "--data", str(csv_file), "--target", "y", "--method", "svi", "--out", str(run),
            "--hidden", "3", "--num-steps", "5", "--num-samples", "5", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    other = tmp_path / "other.csv"
    pd.DataFrame({"z": [1.0]}).to_csv(other, index=False)
    code = main(["bnn", "predict", "--model", str(run), "--data", str(other), "--out", str(tmp_path / "p.csv")])
    assert code == 2 and "['x'] are not in other.csv" in capsys.readouterr().err


def test_bnn_fit_refuses_a_test_size_that_leaves_nothing(csv_file, tmp_path, capsys):
    code = main(["bnn", "fit", "--data", str(csv_file), "--target", "y", "--out", str(tmp_path), "--test-size", "0.001"])
    assert code == 2
    assert "holds out 0 of" in capsys.readouterr().err


def test_bnn_fit_quotes_the_library_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["bnn", "fit", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for function, name in [(fit_svi, "num_steps"), (fit_svi, "lr"), (fit_nuts, "num_warmup"), (fit_nuts, "num_chains")]:
        default = inspect.signature(function).parameters[name].default
        assert f"the library's, {default})" in help_text, name


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "nope"], "target column 'nope' is not in toy.csv"),
        (["--target", "y", "--features", "z"], r"feature column\(s\) \['z'\] are not in toy.csv"),
    ],
    ids=["target", "features"],
)
def test_bad_columns_are_named(args, message, csv_file, tmp_path, capsys):
    code = main(["bnn", "fit", "--data", str(csv_file), "--out", str(tmp_path), *args])
    assert code == 2
    assert pytest.importorskip("re").search(message, capsys.readouterr().err)


def test_missing_file_is_named(tmp_path, capsys):
    assert main(["bnn", "fit", "--data", str(tmp_path / "no.csv"), "--target", "y", "--out", str(tmp_path)]) == 2
    assert "no such data file" in capsys.readouterr().err


def test_unknown_method_is_refused(csv_file, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["bnn", "fit", "--data", str(csv_file), "--target", "y", "--method", "hmc", "--out", str(tmp_path)])
    assert "invalid choice: 'hmc'" in capsys.readouterr().err
    assert torch.get_default_dtype() == torch.float64  # the CLI leaves global torch settings alone


def test_held_out_report_scores_the_baseline_and_gives_a_verdict(csv_file, tmp_path, capsys):
    """test_metrics.json holds coverage, CRPS, a least-squares baseline on the same rows, and a verdict line."""
    out = tmp_path / "run"
    args = ["bnn", "fit", "--data", str(csv_file), "--target", "y", "--method", "svi", "--out", str(out),
            "--hidden", "5", "--num-steps", "300", "--test-size", "0.25", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert 0.0 <= metrics["test_coverage_90"] <= 1.0 and metrics["test_crps"] > 0
    # the baseline is least squares on the training rows, scored on the held-out rows in the data's units
    frame = pd.read_csv(csv_file)
    scaling = json.loads((out / "scaling.json").read_text())
    test, train = frame.iloc[scaling["test_rows"]], frame.drop(index=scaling["test_rows"])
    slope, intercept = np.polyfit(train["x"], train["y"], 1)
    expected = float(np.sqrt(np.mean((slope * test["x"] + intercept - test["y"]) ** 2)))
    assert metrics["baseline_rmse"] == pytest.approx(expected, rel=1e-4)
    assert capsys.readouterr().out.count(f"verdict: {metrics['verdict']}") == 1
    # the same numbers close summary.csv, under the posterior's own rows
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    assert summary.loc["held_out.test_rmse", "mean"] == pytest.approx(metrics["test_rmse"])
    assert summary.loc["held_out.baseline_rmse", "mean"] == pytest.approx(expected, rel=1e-4)
    assert not summary.index[0].startswith("held_out.") and summary.index[-1].startswith("held_out.")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # every draw reaches the tiny tree depth: the point
def test_nuts_and_svi_flags_reach_the_fit(csv_file, tmp_path):
    out = tmp_path / "nuts"
    assert main([
        "bnn", "fit", "--data", str(csv_file), "--target", "y", "--method", "nuts", "--out", str(out),
        "--hidden", "3", "--num-warmup", "15", "--num-samples", "10", "--num-chains", "2", "--max-tree-depth", "2",
        "--target-accept-prob", "0.95", "--threads", "1", "--no-progress",
    ]) == 0  # fmt: skip
    import arviz as az

    stats = az.from_netcdf(out / "posterior.nc").sample_stats
    assert int(stats["tree_depth"].max()) <= 2
    args = build_parser().parse_args(["bnn", "fit", "--data", "d.csv", "--target", "y", "--out", "o", "--final-lr", "0.002"])
    assert args.final_lr == 0.002 and args.threads == 1


def test_an_svi_fit_resumes_from_its_saved_state(csv_file, tmp_path, capsys, monkeypatch):
    """--resume continues the saved state to --num-steps in all, and gives the uninterrupted run's result."""
    from probgen import SVIState
    from probgen.cli import bnn as bnn_cli

    base = ["bnn", "fit", "--data", str(csv_file), "--target", "y", "--method", "svi", "--hidden", "4", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "whole"), "--num-steps", "120"]) == 0
    whole = SVIState.load(str(tmp_path / "whole" / bnn_cli.SVI_CHECKPOINT))

    # a fit interrupted after its checkpoint at step 50: Ctrl-C names the file and the flag
    real_fit = bnn_cli.fit_svi

    @functools.wraps(real_fit)
    def interrupted(*args, **kwargs):
        # the first 50 of the run's 120 steps, on the run's own learning-rate schedule
        real_fit(*args, **{**kwargs, "num_steps": 50, "decay_steps": kwargs["num_steps"]})
        raise KeyboardInterrupt

    monkeypatch.setattr(bnn_cli, "fit_svi", interrupted)
    assert main([*base, "--out", str(tmp_path / "split"), "--num-steps", "120"]) == 130
    err = capsys.readouterr().err
    assert "after step 50 is saved" in err and "--resume" in err
    monkeypatch.setattr(bnn_cli, "fit_svi", real_fit)
    assert main([*base, "--out", str(tmp_path / "split"), "--num-steps", "120", "--resume"]) == 0
    resumed = SVIState.load(str(tmp_path / "split" / bnn_cli.SVI_CHECKPOINT))
    assert resumed.step == 120
    assert torch.equal(resumed.losses, whole.losses)
    assert main([*base, "--out", str(tmp_path / "split"), "--num-steps", "120", "--resume"]) == 2
    assert "already taken 120 of 120 steps" in capsys.readouterr().err


def test_bnn_fit_scores_a_separate_test_file(csv_file, tmp_path):
    _, test = make_cosine(seed=1)
    test_path = tmp_path / "test.csv"
    test.iloc[::10].to_csv(test_path, index=False)
    out = tmp_path / "run"
    base = ["bnn", "fit", "--data", str(csv_file), "--target", "y", "--method", "svi", "--hidden", "4",
            "--num-steps", "100", "--no-progress"]  # fmt: skip
    assert main([*base, "--out", str(out), "--test", str(test_path)]) == 0
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert metrics["num_test"] == len(test.iloc[::10])
    assert main([*base, "--out", str(out), "--test", str(test_path), "--test-size", "0.2"]) == 2


def test_a_layer_prior_scale_reaches_the_model_and_its_description(csv_file, tmp_path, capsys):
    from probgen.cli.bnn import build_model

    out = tmp_path / "run"
    assert main([
        "bnn", "fit", "--data", str(csv_file), "--target", "y", "--method", "svi", "--hidden", "4", "--num-steps", "20",
        "--prior-scale", "2", "--layer-prior-scale", "0=5", "--out", str(out), "--no-progress",
    ]) == 0  # fmt: skip
    config = json.loads((out / "model.json").read_text())
    assert config["layer_scales"] == {"0": 5.0}
    prior = build_model(config).weight_priors
    assert float(prior["0.weight"].base_dist.scale.flatten()[0]) == pytest.approx(5.0)  # fan-in 1
    assert float(prior["2.weight"].base_dist.scale.flatten()[0]) == pytest.approx(2.0 / 2.0)  # fan-in 4
    with pytest.raises(SystemExit) as exit_info:  # argparse names the flag and the layers it knows
        main(["bnn", "fit", "--data", str(csv_file), "--target", "y", "--out", str(out), "--layer-prior-scale", "1=3"])
    assert exit_info.value.code == 2
    assert "LAYER one of 0, 2, got '1=3'" in capsys.readouterr().err
