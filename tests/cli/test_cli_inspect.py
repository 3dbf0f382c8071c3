"""``probgen inspect FILE.nc`` and the report that ``probgen bnn fit`` writes."""

from __future__ import annotations

import argparse

import arviz as az
import numpy as np
import pandas as pd
import pytest

from probgen.cli import inspect
from probgen.cli._report import write_bnn_report
from probgen.diagnostics import summarize
from tests import _tiny_fits as fits

NUTS_FILES = {
    "posterior", "summary", "diagnostics", "predictive", "uncertainty", "calibration", "loo_pit",
    "trace", "rank", "posterior_plot", "energy", "comparison", "predicted_vs_observed", "ppc",
}  # fmt: skip


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="probgen")
    inspect.register(parser.add_subparsers())
    args = parser.parse_args(["inspect", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def nuts_report(tmp_path_factory):
    with fits.settings():
        out = tmp_path_factory.mktemp("nuts")
        return write_bnn_report(fits.nuts_fit(), out, reference=("SVI", fits.svi_fit()))


@pytest.fixture(scope="module")
def svi_file(tmp_path_factory):
    with fits.settings():
        path = tmp_path_factory.mktemp("svi") / "posterior.nc"
        fits.svi_fit().to_arviz().to_netcdf(str(path))
        return path


def test_report_writes_the_posterior_summary_and_every_plot(nuts_report):
    assert set(nuts_report) == NUTS_FILES
    for kind, path in nuts_report.items():
        assert path.stat().st_size > 0, kind
        if path.suffix == ".png":
            assert path.read_bytes()[:4] == b"\x89PNG", kind
    idata = az.from_netcdf(str(nuts_report["posterior"]))
    assert {"posterior", "sample_stats", "log_likelihood"} <= set(idata.groups())
    table = pd.read_csv(nuts_report["summary"], index_col=0)
    pd.testing.assert_frame_equal(table, summarize(idata), check_exact=False, rtol=1e-12)
    assert "R-hat is above 1.01" in nuts_report["diagnostics"].read_text()


def test_report_of_an_svi_fit_has_its_elbo_curve_and_losses(tmp_path):
    with fits.settings():
        result = fits.svi_fit()
        paths = write_bnn_report(result, tmp_path)
    assert {"elbo", "losses", "predicted_vs_observed", "ppc"} <= set(paths)
    losses = pd.read_csv(paths["losses"], index_col=0)["loss"]
    np.testing.assert_allclose(losses.to_numpy(), result.losses.numpy(), rtol=1e-6)


def test_report_of_a_classifier_skips_regression_plots(tmp_path):
    paths = write_bnn_report(fits.classifier_fit(), tmp_path)
    expected = {"posterior", "summary", "diagnostics", "calibration", "trace", "rank", "posterior_plot"}
    assert set(paths) - {"losses", "elbo"} == expected  # an SVI fit adds its ELBO curve


def test_inspect_prints_the_summary_and_plain_warnings(nuts_report, capsys):
    assert _run(str(nuts_report["posterior"])) == 0
    out = capsys.readouterr().out
    assert f"nuts posterior, {fits.NUM_CHAINS} chain(s) x {fits.NUM_DRAWS} draws" in out
    assert "r_hat" in out and "ess_bulk" in out and "noise_scale" in out and "log_lik[obs 0]" in out
    assert "0.weight[7, 0]" not in out  # weights only on request: hidden units can swap between chains
    assert "divergences per chain:" in out and "BFMI per chain:" in out
    assert "warnings:\n  - R-hat is above 1.01" in out
    assert _run(str(nuts_report["posterior"]), "--weights") == 0
    assert "0.weight[7, 0]" in capsys.readouterr().out


def test_inspect_strict_fails_on_a_failed_check(nuts_report, capsys):
    assert _run(str(nuts_report["posterior"]), "--strict") == 1
    assert _run(str(nuts_report["posterior"]), "--strict", "--var-names", "noise_scale") == 1
    out = capsys.readouterr().out
    assert "0.weight[0, 0]" not in out.split("nuts posterior")[-1]


def test_inspect_an_svi_file_passes(svi_file, capsys):
    assert _run(str(svi_file), "--strict") == 0
    out = capsys.readouterr().out
    assert "svi posterior, 1 chain(s) x 1000 draws" in out
    assert "R-hat needs two or more chains" in out
    assert "all checks passed." in out and "divergences" not in out


def test_inspect_names_a_bad_file(tmp_path, capsys):
    assert _run(str(tmp_path / "missing.nc")) == 2
    assert "no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.nc"
    junk.write_text("not netcdf")
    assert _run(str(junk)) == 2
    assert "is not a readable ArviZ NetCDF" in capsys.readouterr().err


def test_inspect_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _run("--help")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: probgen inspect" in out and "R-hat above 1.01" in out and "--strict" in out


def test_a_saved_diffusion_run_is_inspected(tmp_path, capsys):
    import torch

    from probgen.infer.diffusion import evaluate_bound, fit_diffusion, sample_ancestral
    from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule

    chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8, num_blocks=1), get_schedule("linear", 5), event_shape=(2,))
    fit = fit_diffusion(chain, torch.randn(30, 2), num_steps=3, batch_size=8, seed=0, progress_bar=False)
    bound = evaluate_bound(fit.chain, torch.randn(6, 2), seed=0, progress_bar=False)
    path = tmp_path / "run.nc"
    fit.to_arviz(bound=bound, samples=sample_ancestral(fit.chain, num_samples=4, seed=0)).to_netcdf(str(path))
    assert _run(str(path)) == 0
    out = capsys.readouterr().out
    assert "a diffusion run" in out and "schedule=linear, num_timesteps=5" in out and "objective=elbo" in out
    assert "training: 3 steps" in out and f"{bound.nats:.4f} +- {bound.nats_se:.4f} nats" in out
    assert "not a log-likelihood" in out and "samples: ancestral" in out
