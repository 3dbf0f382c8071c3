"""check_convergence and summarize: each threshold fails on a posterior built to fail it, passes
on one built to pass, and warns in plain words at the caller's line."""

from __future__ import annotations

import math
import re
import warnings

import arviz as az
import numpy as np
import pandas as pd
import pytest

from probgen.diagnostics import ConvergenceReport, ConvergenceWarning, check_convergence, summarize
from probgen.infer.arviz import to_arviz
from tests import _tiny_fits as fits

SUMMARY_COLUMNS = ["mean", "sd", "hdi_3%", "hdi_97%", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat"]


def _idata(
    *,
    chains: int = 4,
    draws: int = 500,
    shift: float = 0.0,
    rho: float = 0.0,
    divergent: tuple[tuple[int, int], ...] = (),
    energy_walk: bool = False,
    seed: int = 0,
):
    """Draws of ``w`` (2 entries) with chosen flaws, and NUTS-like sampler statistics.

    :param shift: added to chain 0 (the chains disagree: R-hat fails).
    :param rho: AR(1) autocorrelation of the draws (near 1: ESS fails).
    :param divergent: ``(chain, draw)`` pairs marked divergent.
    :param energy_walk: the energy is a random walk, so its transitions are small against its
        marginal spread (BFMI fails); otherwise it is i.i.d. (BFMI about 2).
    """
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(chains, draws, 2))
    w = np.empty_like(noise)
    w[:, 0] = noise[:, 0]
    for t in range(1, draws):
        w[:, t] = rho * w[:, t - 1] + math.sqrt(1 - rho**2) * noise[:, t]
    w[0, :, 0] += shift  # only w[0] of chain 0
    diverging = np.zeros((chains, draws), dtype=bool)
    for c, d in divergent:
        diverging[c, d] = True
    energy = rng.normal(size=(chains, draws))
    if energy_walk:
        energy = np.cumsum(energy, axis=1)
    return az.from_dict(posterior={"w": w}, sample_stats={"diverging": diverging, "energy": energy})


def test_a_good_posterior_passes_without_warnings():
    # filterwarnings = error: any ConvergenceWarning would fail this test.
    report = check_convergence(_idata())
    assert isinstance(report, ConvergenceReport)
    assert report.ok and report.problems == ()
    assert report.divergences == (0, 0, 0, 0)
    assert len(report.bfmi) == 4 and min(report.bfmi) > 1.0  # i.i.d. energy: BFMI about 2
    assert report.max_rhat < 1.01 and report.min_ess_bulk > 400
    assert "all checks passed" in str(report)


@pytest.mark.parametrize(
    "flaw, message",
    [
        ({"shift": 3.0}, r"R-hat is above 1.01 for 1 of 2 parameters \(worst [\d.]+ at w\[0\]\)"),
        ({"rho": 0.99}, r"effective sample size is below 400 for 2 of 2 parameters"),
        ({"divergent": ((1, 5), (1, 9), (3, 0))}, r"3 divergent transition\(s\).*chain 1: 2, chain 2: 0, chain 3: 1"),
        ({"energy_walk": True}, r"BFMI is below 0.3 \(chain 0: 0\.\d\d"),
    ],
    ids=["rhat", "ess", "divergences", "bfmi"],
)
def test_each_failed_check_warns_with_its_remedy(flaw, message):
    with pytest.warns(ConvergenceWarning) as caught:  # a flaw can fail more than one check
        report = check_convergence(_idata(**flaw))
    assert any(re.search(message, str(w.message)) for w in caught), [str(w.message) for w in caught]
    assert any(re.search(message, p) for p in report.problems)
    assert len(report.problems) == len(caught)
    remedies = ("num_warmup", "num_samples", "target_accept_prob", "Reparameterise")
    assert all(any(r in str(w.message) for r in remedies) for w in caught)


def test_the_warning_points_at_the_callers_line():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_convergence(_idata(shift=3.0))
    assert caught and all(w.filename == __file__ for w in caught)


def test_warn_false_only_reports():
    report = check_convergence(_idata(shift=3.0, divergent=((0, 0),)), warn=False)
    assert [p.split()[0] for p in report.problems] == ["R-hat", "The", "1"]  # R-hat, ESS, divergences
    assert report.num_divergences == 1
    assert "problems:" in str(report)


def test_thresholds_are_arguments():
    idata = _idata(shift=0.2)
    strict = check_convergence(idata, rhat_max=1.0001, warn=False)
    lax = check_convergence(idata, rhat_max=10.0, ess_min=1.0, warn=False)
    assert not strict.ok and lax.ok


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="rhat_max"):
        check_convergence(_idata(), rhat_max=0)
    with pytest.raises(TypeError, match="InferenceData"):
        check_convergence([1, 2, 3])
    with pytest.raises(ValueError, match="hdi_prob"):
        summarize(_idata(), hdi_prob=1.5)


def test_summary_table_has_the_diagnostics_columns(tmp_path):
    idata = _idata()
    table = summarize(idata)
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == SUMMARY_COLUMNS
    assert list(table.index) == ["w[0]", "w[1]"]
    path = tmp_path / "posterior.nc"
    idata.to_netcdf(str(path))
    pd.testing.assert_frame_equal(summarize(path), table)
    assert list(summarize(idata, hdi_prob=0.9).columns[2:4]) == ["hdi_5%", "hdi_95%"]


def test_nuts_fit_reports_chains_divergences_and_bfmi():
    result = fits.nuts_fit()
    with pytest.warns(ConvergenceWarning) as caught:  # tree depth 3 and 100 draws do not mix
        report = check_convergence(result)
    assert any(str(w.message).startswith("R-hat is above 1.01") for w in caught)
    assert report.method == "nuts"
    assert (report.num_chains, report.num_draws) == (fits.NUM_CHAINS, fits.NUM_DRAWS)
    assert report.divergences == tuple(int(d) for d in result.sample_stats["diverging"].sum(1))
    np.testing.assert_allclose(report.bfmi, az.bfmi(to_arviz(result, predictive=False)))
    assert len(report.summary) == sum(v[0, 0].numel() for v in result.samples.values())


def test_svi_has_no_divergence_bfmi_or_rhat_check(capfd):
    # One chain of 1000 independent guide draws: ESS ~ 1000, R-hat undefined (NaN), no sampler stats.
    report = check_convergence(fits.svi_fit())
    assert report.ok
    assert report.method == "svi" and report.num_chains == 1
    assert report.divergences == () and report.bfmi == ()
    assert math.isnan(report.max_rhat) and report.summary["r_hat"].isna().all()
    assert "Shape validation failed" not in capfd.readouterr().err


def test_identifiable_view_of_a_bnn_keeps_globals_lp_and_a_few_log_likelihoods():
    import arviz as az

    from probgen.diagnostics import identifiable_view

    rng = np.random.default_rng(0)
    idata = az.from_dict(
        posterior={"0.weight": rng.normal(size=(2, 30, 4, 1)), "noise_scale": rng.random((2, 30))},
        sample_stats={"lp": rng.normal(size=(2, 30)), "diverging": np.zeros((2, 30), bool)},
        log_likelihood={"obs": rng.normal(size=(2, 30, 12))},
        attrs={"model_kind": "bnn"},
    )
    view = identifiable_view(idata, num_points=3)
    assert sorted(view.posterior.data_vars) == ["log_lik[obs 0]", "log_lik[obs 11]", "log_lik[obs 6]", "lp", "noise_scale"]
    np.testing.assert_array_equal(view.posterior["log_lik[obs 6]"], idata.log_likelihood["obs"][:, :, 6])
    assert "diverging" in view.sample_stats
    del idata.attrs["model_kind"]  # not a BNN: every site is meaningful, nothing is dropped
    assert identifiable_view(idata) is not None and "0.weight" in identifiable_view(idata).posterior
