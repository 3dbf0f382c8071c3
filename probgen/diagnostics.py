"""Convergence diagnostics in one call, over ArviZ.

:func:`summarize` is ArviZ's summary table (posterior mean, sd, HDI, MCSE, bulk and tail ESS,
R-hat) for a result, an InferenceData or a saved file. :func:`check_convergence` adds the
divergences and the BFMI of every chain, compares everything with the usual thresholds and
says in plain words what failed and what to do about it, both as a :class:`ConvergenceWarning`
and as a :class:`ConvergenceReport`.

The thresholds are those of Vehtari et al. (2021) and Betancourt (2016): rank-normalised split
R-hat at most 1.01, bulk and tail ESS at least 400 (100 per chain for four chains), no divergent
transition after warm-up, and an E-BFMI of at least 0.3 in every chain.

SVI results hold one set of independent draws from the fitted guide (one chain). R-hat needs at
least two chains and is reported as NaN for them; their ESS measures only the Monte Carlo error of
the draws, not whether the optimisation converged. They have no sampler statistics, so there is
no divergence or BFMI check either.

References:
    Vehtari, A., Gelman, A., Simpson, D., Carpenter, B. and Bürkner, P.-C. (2021). Rank-normalization,
    folding, and localization: an improved R-hat for assessing convergence of MCMC. Bayesian Analysis 16(2).

    Betancourt, M. (2016). Diagnosing suboptimal cotangent disintegrations in Hamiltonian Monte Carlo.
    arXiv:1604.00695 (E-BFMI).
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from probgen._compat import import_arviz
from probgen._validate import check_positive_float, check_positive_int, check_probability
from probgen.infer.arviz import as_inference_data
from probgen.infer.mcmc import DIVERGENCE_ADVICE

__all__ = [
    "ConvergenceReport",
    "ConvergenceWarning",
    "summarize",
    "check_convergence",
    "identifiable_view",
    "RHAT_MAX",
    "ESS_MIN",
    "BFMI_MIN",
]

#: R-hat above this fails (Vehtari et al. 2021).
RHAT_MAX = 1.01
#: Bulk or tail ESS below this fails (Vehtari et al. 2021: 100 per chain, four chains).
ESS_MIN = 400.0
#: E-BFMI below this fails, per chain (Betancourt 2016).
BFMI_MIN = 0.3


class ConvergenceWarning(UserWarning):
    """A posterior failed a convergence check; the message says which and what to do."""


@dataclass(frozen=True, eq=False)
class ConvergenceReport:
    """What :func:`check_convergence` found.

    :ivar summary: ArviZ's summary table, one row per scalar parameter: ``mean``, ``sd``,
        ``hdi_*``, ``mcse_mean``, ``mcse_sd``, ``ess_bulk``, ``ess_tail``, ``r_hat``.
    :ivar str method: ``"nuts"``, ``"svi"`` or ``"unknown"`` (the file's ``inference_method``).
    :ivar int num_chains: chains (one for SVI).
    :ivar int num_draws: draws per chain.
    :ivar divergences: divergent transitions per chain; empty without sampler statistics.
    :ivar bfmi: E-BFMI per chain; empty without the sampler's ``energy``.
    :ivar float max_rhat: the largest R-hat; NaN with one chain.
    :ivar float min_ess_bulk: the smallest bulk ESS.
    :ivar float min_ess_tail: the smallest tail ESS.
    :ivar problems: one plain-words message per failed check; empty when all pass.
    """

    summary: pd.DataFrame
    method: str
    num_chains: int
    num_draws: int
    divergences: tuple[int, ...]
    bfmi: tuple[float, ...]
    max_rhat: float
    min_ess_bulk: float
    min_ess_tail: float
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return not self.problems

    @property
    def num_divergences(self) -> int:
        """Divergent transitions over all chains."""
        return sum(self.divergences)

    def __str__(self) -> str:
        lines = [f"{self.method} posterior: {self.num_chains} chain(s) x {self.num_draws} draws"]
        if self.divergences:
            per_chain = ", ".join(str(d) for d in self.divergences)
            lines.append(f"divergences per chain: {per_chain}")
        if self.bfmi:
            per_chain = ", ".join(f"{b:.2f}" for b in self.bfmi)
            lines.append(f"BFMI per chain: {per_chain}")
        ess = f"{self.min_ess_bulk:.0f}/{self.min_ess_tail:.0f}"
        lines.append(f"max R-hat: {self.max_rhat:.3f}; min ESS bulk/tail: {ess}")
        if self.problems:
            lines += ["problems:", *(f"  - {p}" for p in self.problems)]
        else:
            lines.append("all checks passed")
        return "\n".join(lines)


@contextlib.contextmanager
def _quiet_single_chain(num_chains: int) -> Iterator[None]:
    """Silence ArviZ's logged "Shape validation failed" for R-hat on one chain (it returns NaN).

    ArviZ 0.23 logs through ``arviz._log``, a logger it does not register with ``logging``.
    """
    logger = getattr(import_arviz(), "_log", None)
    if num_chains >= 2 or not isinstance(logger, logging.Logger):
        yield
        return
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _num_chains(idata: Any) -> int:
    return int(idata.posterior.sizes["chain"])


def summarize(
    source: Any,
    *,
    var_names: Sequence[str] | None = None,
    hdi_prob: float | None = None,
    round_to: int | None = None,
) -> pd.DataFrame:
    """ArviZ's summary table of a posterior: mean, sd, HDI, MCSE, bulk and tail ESS, R-hat.

    :param source: a result, an ``arviz.InferenceData``, or the path of a saved NetCDF file.
    :param var_names: sites to summarise; all by default.
    :param float hdi_prob: the HDI's probability mass; ArviZ's default (0.94) if ``None``.
    :param int round_to: decimals to round to; ``None`` keeps full precision (ArviZ would round
        R-hat to two decimals, hiding 1.014 > 1.01).
    :returns: a ``pandas.DataFrame`` with one row per scalar parameter, labelled like
        ``"0.weight[3, 0]"``. R-hat is NaN for a single chain (SVI).

    Example:

    >>> import numpy as np
    >>> import arviz as az
    >>> idata = az.from_dict(posterior={"w": np.random.default_rng(0).normal(size=(4, 500))})
    >>> list(summarize(idata).columns)  # doctest: +NORMALIZE_WHITESPACE
    ['mean', 'sd', 'hdi_3%', 'hdi_97%', 'mcse_mean', 'mcse_sd', 'ess_bulk', 'ess_tail', 'r_hat']
    """
    az = import_arviz()
    idata = as_inference_data(source, predictive=False)
    if hdi_prob is not None:
        hdi_prob = check_probability("hdi_prob", hdi_prob)
    names = None if var_names is None else list(var_names)
    with _quiet_single_chain(_num_chains(idata)):
        table = az.summary(idata, var_names=names, kind="all", hdi_prob=hdi_prob, round_to="none")
    if round_to is not None:
        table = table.round(check_positive_int("round_to", round_to, allow_zero=True))
    return table


def _divergences(idata: Any) -> tuple[int, ...]:
    if "sample_stats" not in idata.groups() or "diverging" not in idata.sample_stats:
        return ()
    per_chain = idata.sample_stats["diverging"].sum(dim="draw").values
    return tuple(int(d) for d in np.atleast_1d(per_chain))


def _bfmi(idata: Any) -> tuple[float, ...]:
    if "sample_stats" not in idata.groups() or "energy" not in idata.sample_stats:
        return ()
    az = import_arviz()
    return tuple(float(b) for b in np.atleast_1d(az.bfmi(idata)))


def _worst(column: pd.Series, *, largest: bool) -> tuple[float, str]:
    """The worst finite value of a column and its row label; NaN when there is none."""
    finite = column[np.isfinite(column.to_numpy(dtype=float))]
    if finite.empty:
        return math.nan, ""
    label = finite.idxmax() if largest else finite.idxmin()
    return float(finite[label]), str(label)


def _problems(
    summary: pd.DataFrame,
    divergences: tuple[int, ...],
    bfmi: tuple[float, ...],
    *,
    rhat_max: float,
    ess_min: float,
    bfmi_min: float,
) -> list[str]:
    """One plain-words message per failed check, each naming the remedy."""
    problems = []
    total = len(summary)
    rhat = summary["r_hat"].to_numpy(dtype=float)
    bad_rhat = int((rhat > rhat_max).sum())  # NaN (one chain) compares False
    if bad_rhat:
        worst, label = _worst(summary["r_hat"], largest=True)
        problems.append(
            f"R-hat is above {rhat_max} for {bad_rhat} of {total} parameters (worst {worst:.3f} at {label}): "
            "the chains disagree, so they have not converged to one posterior. Run more warm-up and more "
            "draws (num_warmup, num_samples), or simplify the model."
        )
    ess = summary[["ess_bulk", "ess_tail"]].to_numpy(dtype=float)
    bad_ess = int((ess < ess_min).any(axis=1).sum())
    if bad_ess:
        bulk, bulk_label = _worst(summary["ess_bulk"], largest=False)
        tail, tail_label = _worst(summary["ess_tail"], largest=False)
        problems.append(
            f"The effective sample size is below {ess_min:.0f} for {bad_ess} of {total} parameters "
            f"(lowest bulk ESS {bulk:.0f} at {bulk_label}, lowest tail ESS {tail:.0f} at {tail_label}): "
            "posterior means and intervals carry a large Monte Carlo error. Draw more samples "
            "(num_samples or num_chains)."
        )
    num_div = sum(divergences)
    if num_div:
        per_chain = ", ".join(f"chain {c}: {d}" for c, d in enumerate(divergences))
        problems.append(
            f"{num_div} divergent transition(s) after warm-up ({per_chain}): the sampler could not follow "
            f"the posterior's curvature, so the draws may be biased. {DIVERGENCE_ADVICE}"
        )
    low = [(c, b) for c, b in enumerate(bfmi) if b < bfmi_min]
    if low:
        listed = ", ".join(f"chain {c}: {b:.2f}" for c, b in low)
        problems.append(
            f"The energy BFMI is below {bfmi_min} ({listed}): momentum resampling explores the energy "
            "distribution poorly, often because of heavy tails or funnels. Reparameterise the model or run "
            "a longer warm-up."
        )
    return problems


def check_convergence(
    source: Any,
    *,
    var_names: Sequence[str] | None = None,
    rhat_max: float = RHAT_MAX,
    ess_min: float = ESS_MIN,
    bfmi_min: float = BFMI_MIN,
    warn: bool = True,
) -> ConvergenceReport:
    """Check a posterior's convergence in one call: R-hat, bulk and tail ESS, divergences, BFMI.

    Every failed check becomes one plain-words :class:`ConvergenceWarning` (pointing at the
    caller's line) that says what failed and what to do, and one entry of the report's
    ``problems``. Results without sampler statistics (SVI) skip the divergence and BFMI checks;
    with one chain R-hat is NaN and never fails.

    :param source: a result, an ``arviz.InferenceData``, or the path of a saved NetCDF file.
    :param var_names: sites to check; all by default.
    :param float rhat_max: the largest acceptable R-hat.
    :param float ess_min: the smallest acceptable bulk and tail ESS.
    :param float bfmi_min: the smallest acceptable E-BFMI per chain.
    :param bool warn: issue the warnings; with ``False`` only the report carries them.
    :returns: a :class:`ConvergenceReport`.
    :raises TypeError: for a source that is not a result, an InferenceData or a path.

    Example: four chains that agree, with no sampler statistics.

    >>> import numpy as np
    >>> import arviz as az
    >>> idata = az.from_dict(posterior={"w": np.random.default_rng(0).normal(size=(4, 500))})
    >>> report = check_convergence(idata)
    >>> report.ok, report.divergences
    (True, ())
    """
    rhat_max = check_positive_float("rhat_max", rhat_max)
    ess_min = check_positive_float("ess_min", ess_min)
    bfmi_min = check_positive_float("bfmi_min", bfmi_min)
    idata = as_inference_data(source, predictive=False)
    summary = summarize(idata, var_names=var_names)
    divergences = _divergences(idata)
    bfmi = _bfmi(idata)
    problems = _problems(summary, divergences, bfmi, rhat_max=rhat_max, ess_min=ess_min, bfmi_min=bfmi_min)
    if warn:
        for message in problems:
            warnings.warn(message, ConvergenceWarning, stacklevel=2)
    return ConvergenceReport(
        summary=summary,
        method=str(idata.attrs.get("inference_method", "unknown")),
        num_chains=_num_chains(idata),
        num_draws=int(idata.posterior.sizes["draw"]),
        divergences=divergences,
        bfmi=bfmi,
        max_rhat=_worst(summary["r_hat"], largest=True)[0],
        min_ess_bulk=_worst(summary["ess_bulk"], largest=False)[0],
        min_ess_tail=_worst(summary["ess_tail"], largest=False)[0],
        problems=tuple(problems),
    )


#: Data points whose log-likelihood :func:`identifiable_view` tracks.
NUM_TRACKED_POINTS = 5


def identifiable_view(source: Any, *, num_points: int = NUM_TRACKED_POINTS) -> Any:
    """The quantities of a BNN posterior whose convergence means something, as an ``InferenceData``.

    Swapping two hidden units (or flipping the signs around an odd activation) leaves a network's
    function unchanged, so a BNN posterior has many equivalent modes and chains that sit in
    different ones disagree on every single weight: weight-level R-hat is large even when the
    predictions agree. This view keeps what those symmetries leave alone: the global sites (the
    noise scale), the log density ``lp`` when the sampler recorded it, and the log-likelihood
    ``log p(y_i | theta)`` of ``num_points`` data points spread over the data set (a function of
    the network's output, hence identified). Sampler statistics are kept, so divergence and BFMI
    checks still apply. A posterior that is not a BNN's is returned as it is.

    :param source: a result, an ``arviz.InferenceData`` or the path of a saved NetCDF file.
    :param int num_points: data points whose log-likelihood is tracked.
    :returns: an ``arviz.InferenceData`` with ``posterior`` (and ``sample_stats`` when present).
    """
    import xarray as xr

    az = import_arviz()
    num_points = check_positive_int("num_points", num_points)
    idata = as_inference_data(source, predictive=False)
    if idata.attrs.get("model_kind") != "bnn":
        return idata
    posterior = idata.posterior
    keep = {name: posterior[name] for name in posterior.data_vars if posterior[name].ndim == 2}
    groups = idata.groups()
    if "sample_stats" in groups and "lp" in idata.sample_stats:
        keep["lp"] = idata.sample_stats["lp"]
    if "log_likelihood" in groups:
        for site, values in idata.log_likelihood.data_vars.items():
            flat = values.stack(point=[d for d in values.dims if d not in ("chain", "draw")])
            count = flat.sizes["point"]
            for index in np.unique(np.linspace(0, count - 1, min(num_points, count)).round().astype(int)):
                keep[f"log_lik[{site} {index}]"] = flat.isel(point=int(index)).drop_vars(["point", *flat.coords["point"].coords], errors="ignore")
    view = {"posterior": xr.Dataset(keep, attrs=dict(posterior.attrs))}
    if "sample_stats" in groups:
        view["sample_stats"] = idata.sample_stats
    out = az.InferenceData(**view)
    out.attrs.update(idata.attrs)
    return out
