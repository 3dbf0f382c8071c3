"""Tests for probgen/cli/diffusion.py, through a parser built the way the top-level ``probgen`` builds it."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from probgen._compat import import_arviz
from probgen.cli.diffusion import register
from probgen.infer.diffusion import DiffusionTrainState
from probgen.models.diffusion import load_chain

TINY = ["--timesteps", "10", "--num-steps", "5", "--batch-size", "16", "--hidden", "16", "--num-samples", "20"]


def _run(argv):
    parser = argparse.ArgumentParser(prog="probgen")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch):
    monkeypatch.setenv("CI", "true")


def test_fit_sample_evaluate_on_a_toy(tmp_path, capsys):
    out = tmp_path / "toy"
    argv = ["diffusion", "fit", "--data", "8gaussians", "--out", str(out), "--timestep-sampling", "importance"]
    assert _run([*argv, *TINY]) == 0
    for name in ("model.pt", "data.json", "bound.json", "losses.csv", "samples.png", "checkpoint.pt", "run.nc"):
        assert (out / name).is_file()
    summary = json.loads((out / "bound.json").read_text())
    assert summary["num_dims"] == 2 and len(summary["terms"]) == 11
    assert summary["entropy"] == pytest.approx(2.8316, abs=1e-4)
    assert np.isfinite(summary["nats"]) and "energy_distance" in summary
    argv = ["diffusion", "sample", "--model", str(out), "--out", str(tmp_path / "s.csv")]
    assert _run([*argv, "--num-samples", "7"]) == 0
    assert np.loadtxt(tmp_path / "s.csv", delimiter=",").shape == (7, 2)
    argv = ["diffusion", "sample", "--model", str(out), "--out", str(tmp_path / "s.png"), "--sampler", "ddim"]
    assert _run([*argv, "--ddim-steps", "4", "--num-samples", "9"]) == 0
    assert (tmp_path / "s.png").is_file()
    capsys.readouterr()
    assert _run(["diffusion", "evaluate", "--model", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    # same split, same seed: evaluate reproduces fit's bound exactly
    assert evaluated["nats"] == pytest.approx(summary["nats"], rel=1e-12)


def test_fit_on_a_csv_reports_the_bound_in_data_units(tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = tmp_path / "points.csv"
    values = rng.normal(size=(200, 3)) * np.array([10.0, 1.0, 0.1]) + 5.0
    np.savetxt(path, values, delimiter=",", header="a,b,c", comments="")
    out = tmp_path / "csv"
    assert _run(["diffusion", "fit", "--data", str(path), "--out", str(out), *TINY]) == 0
    summary = json.loads((out / "bound.json").read_text())
    assert summary["num_test"] == 40 and summary["num_dims"] == 3
    # the standardisation's Jacobian, sum log sd ~ log 10 + log 1 + log 0.1 ~ 0, enters both numbers alike
    assert np.isfinite(summary["gaussian_nll"])
    capsys.readouterr()
    assert _run(["diffusion", "evaluate", "--model", str(out), "--data", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["num_test"] == 200


def test_a_csv_run_is_scored_from_any_working_directory(tmp_path, capsys, monkeypatch):
    """data.json records a CSV by its absolute path, so `evaluate --model` needs no --data anywhere."""
    (tmp_path / "fit").mkdir()
    np.savetxt(tmp_path / "fit" / "points.csv", np.random.default_rng(1).normal(size=(50, 2)), delimiter=",", header="a,b", comments="")
    monkeypatch.chdir(tmp_path / "fit")
    assert _run(["diffusion", "fit", "--data", "points.csv", "--out", "run", *TINY]) == 0
    recorded = json.loads((tmp_path / "fit" / "run" / "data.json").read_text())["data"]
    assert recorded == str(tmp_path / "fit" / "points.csv")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert _run(["diffusion", "evaluate", "--model", "fit/run"]) == 0
    assert json.loads(capsys.readouterr().out)["num_test"] == 10  # the fit's own held-out fifth
    (tmp_path / "fit" / "points.csv").unlink()
    assert _run(["diffusion", "evaluate", "--model", "fit/run"]) == 2
    assert "no longer exists; pass --data" in capsys.readouterr().err


def test_fit_on_digits_writes_an_image_grid(tmp_path):
    out = tmp_path / "digits"
    argv = ["diffusion", "fit", "--data", "digits", "--out", str(out), "--timesteps", "4", "--num-steps", "2"]
    assert _run([*argv, "--batch-size", "8", "--hidden", "8", "--num-samples", "4"]) == 0
    summary = json.loads((out / "bound.json").read_text())
    assert summary["num_dims"] == 64 and summary["num_test"] == 447
    assert summary["bits_per_dim"] == pytest.approx(summary["nats"] / (64 * np.log(2)))


def test_errors_return_2_with_a_message(tmp_path, capsys):
    assert _run(["diffusion", "fit", "--data", "nope.txt", "--out", str(tmp_path)]) == 2
    assert "--data must be a CSV file" in capsys.readouterr().err
    assert _run(["diffusion", "sample", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "x.png")]) == 2
    assert "no saved model" in capsys.readouterr().err


def test_the_saved_model_is_a_library_chain_file_and_old_ones_are_refused(tmp_path, capsys):
    out = tmp_path / "toy"
    assert _run(["diffusion", "fit", "--data", "8gaussians", "--out", str(out), *TINY]) == 0
    chain = load_chain(out / "model.pt")  # what the command saved, read by the library
    assert chain.num_timesteps == 10 and chain.event_shape == (2,)
    assert DiffusionTrainState.load(out / "checkpoint.pt").step == 5
    assert json.loads((out / "data.json").read_text())["data"] == "8gaussians"
    run = import_arviz().from_netcdf(str(out / "run.nc"))  # the run as ArviZ reads it
    summary = json.loads((out / "bound.json").read_text())
    assert run.bound.attrs["nats"] == pytest.approx(summary["nats"], rel=1e-12)  # 8gaussians: unit scale
    assert run.losses["loss"].shape == (5,) and run.posterior_predictive["x_0"].shape == (1, 20, 2)
    old = tmp_path / "old"
    old.mkdir()
    torch.save({"format": "probgen.diffusion/1", "config": {}, "net_state": {}}, old / "model.pt")
    assert _run(["diffusion", "evaluate", "--model", str(old)]) == 2
    assert "before chains had a file format of their own; fit it again" in capsys.readouterr().err
    (out / "data.json").unlink()
    assert _run(["diffusion", "evaluate", "--model", str(out)]) == 2
    assert "data.json is missing" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["fit", "sample", "evaluate"])
def test_help_text(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _run(["diffusion", command, "--help"])
    assert exit_info.value.code == 0
    assert "--model" in capsys.readouterr().out or command == "fit"


def test_an_interrupted_fit_resumes_to_the_uninterrupted_losses(tmp_path, capsys, monkeypatch):
    """fit --resume continues checkpoint.pt up to --num-steps in all, on the same schedule."""
    from probgen.cli import diffusion as cli

    sizes = ["--timesteps", "10", "--batch-size", "16", "--hidden", "16", "--num-samples", "20", "--final-lr", "1e-4"]
    base = ["diffusion", "fit", "--data", "8gaussians", *sizes]
    monkeypatch.setattr(cli, "CHECKPOINT_EVERY", 10)
    assert _run([*base, "--out", str(tmp_path / "whole"), "--num-steps", "30"]) == 0
    whole = DiffusionTrainState.load(str(tmp_path / "whole" / "checkpoint.pt"))

    real_train = cli._train

    def interrupted(args, chain, data, steps, init_state, checkpoint):
        real_train(args, chain, data, 10, init_state, checkpoint)  # 10 of the 30 steps, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run([*base, "--out", str(tmp_path / "split"), "--num-steps", "30"])
    assert "after step 10 is saved" in capsys.readouterr().err
    monkeypatch.setattr(cli, "_train", real_train)
    assert _run([*base, "--out", str(tmp_path / "split"), "--num-steps", "30", "--resume"]) == 0
    resumed = DiffusionTrainState.load(str(tmp_path / "split" / "checkpoint.pt"))
    assert resumed.step == 30
    for name, value in whole.net_state.items():
        torch.testing.assert_close(resumed.net_state[name], value, rtol=0, atol=0)
    whole_losses = np.loadtxt(tmp_path / "whole" / "losses.csv", skiprows=1)
    np.testing.assert_array_equal(np.loadtxt(tmp_path / "split" / "losses.csv", skiprows=1), whole_losses[10:])
