"""Simulation-based calibration (Talts et al. 2018): does an inference method recover the prior?

Draw parameters from the prior, data from the model given them, fit, and count how many posterior
draws fall below the true value of each scalar quantity. If the posterior is exact, that rank is
uniform on ``0 .. L`` (``L`` draws), whatever the model: the true parameters are one more draw
from the posterior of the data they made. A posterior too narrow piles ranks at both ends, one
shifted piles them at one end, one too wide piles them in the middle.

:func:`simulation_based_calibration` runs the loop for any simulator and any fitting function;
:class:`SBCResult` holds the ranks and tests them (:meth:`SBCResult.chi_square`), reports the
coverage of central intervals (:meth:`SBCResult.coverage`) and draws the rank histograms
(:meth:`SBCResult.plot`). :func:`prior_simulator` makes a simulator from a Pyro program.

Draws of one MCMC chain are autocorrelated, and correlated draws bias ranks even for an exact
sampler; :func:`simulation_based_calibration` thins each chain to ``num_draws`` in all, which
should be no more than the effective sample size.

Reference:
    Talts, S., Betancourt, M., Simpson, D., Vehtari, A. and Gelman, A. (2018). Validating
    Bayesian inference algorithms with simulation-based calibration. arXiv:1804.06788.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from torch import Tensor

from probgen._validate import check_positive_int, check_probability, check_seed
from probgen.infer._progress import make_progress_bar, progress_enabled
from probgen.infer._trace import is_subsample

__all__ = ["SBCResult", "simulation_based_calibration", "prior_simulator", "thin_draws", "rank_of_truth"]

#: ``simulate(seed) -> (truth, data)``: true quantities and the data they generated.
Simulator = Callable[[int], "tuple[Mapping[str, Tensor], tuple[Any, ...]]"]
#: ``fit(data, seed) -> draws``: a result with ``get_samples``, or a dict of draws ``(S, ...)``.
Fitter = Callable[["tuple[Any, ...]", int], Any]


def rank_of_truth(truth: Tensor, draws: Tensor) -> Tensor:
    """How many of ``draws`` (shape ``(L, *shape)``) lie below ``truth`` (shape ``shape``): 0 to L.

    Ties (a discrete quantity, or a draw equal to the truth) are broken at random in proportion, so
    that the rank stays uniform for an exact posterior.
    """
    below = (draws < truth).sum(0)
    ties = (draws == truth).sum(0)
    if bool((ties > 0).any()):
        below = below + torch.floor(torch.rand(ties.shape) * (ties + 1)).long()
    return below


def thin_draws(result: Any, num_draws: int) -> dict[str, Tensor]:
    """``num_draws`` draws in all, evenly spaced within each chain, of every site of ``result``.

    :param result: a result with ``get_samples(group_by_chain=True)`` (chains first), or a dict of
        draws of shape ``(S, ...)`` (one chain).
    :raises ValueError: if there are fewer draws than ``num_draws``.
    """
    num_draws = check_positive_int("num_draws", num_draws)
    if hasattr(result, "get_samples"):
        grouped = result.get_samples(group_by_chain=True)
    else:
        grouped = {name: torch.as_tensor(value).unsqueeze(0) for name, value in result.items()}
    out = {}
    for name, value in grouped.items():
        chains, draws = value.shape[:2]
        per_chain = math.ceil(num_draws / chains)
        if per_chain > draws:
            raise ValueError(
                f"{chains} chain(s) of {draws} draws cannot give num_draws={num_draws}; draw more, or thin less."
            )
        index = torch.linspace(0, draws - 1, per_chain).round().long()
        out[name] = value[:, index].reshape(chains * per_chain, *value.shape[2:])[:num_draws]
    return out


@dataclass(frozen=True)
class SBCResult:
    """Ranks of the true values among ``num_draws`` posterior draws, one per simulation.

    :ivar dict ranks: quantity name -> integer array ``(num_simulations, *shape)``, values 0 .. num_draws.
    :ivar int num_draws: posterior draws each truth was ranked among.
    :ivar int seed: the seed of the first simulation (simulation ``i`` used ``seed + i``).
    """

    ranks: dict[str, np.ndarray]
    num_draws: int
    seed: int

    @property
    def num_simulations(self) -> int:
        return len(next(iter(self.ranks.values())))

    def scalar_ranks(self) -> dict[str, np.ndarray]:
        """Every scalar quantity on its own: ``"w[0]"``, ``"w[1]"``, ... for a vector ``w``."""
        out = {}
        for name, ranks in self.ranks.items():
            if ranks.ndim == 1:
                out[name] = ranks
                continue
            for index in np.ndindex(*ranks.shape[1:]):
                out[f"{name}[{','.join(map(str, index))}]"] = ranks[(slice(None), *index)]
        return out

    def _default_num_bins(self) -> int:
        """The most bins of equal width (dividing ``num_draws + 1``) with at least 5 expected simulations each; 1 if none."""
        outcomes = self.num_draws + 1
        return max([1] + [b for b in range(2, outcomes + 1) if outcomes % b == 0 and self.num_simulations / b >= 5])

    def chi_square(self, num_bins: int | None = None) -> dict[str, tuple[float, float]]:
        """Pearson's chi-square test of uniform ranks: ``{quantity: (statistic, p-value)}``.

        The ``num_draws + 1`` possible ranks are grouped into ``num_bins`` bins of equal width
        (default: the largest divisor of ``num_draws + 1`` that keeps at least 5 expected
        simulations per bin, as the test's chi-square approximation needs).
        """
        from scipy import stats

        outcomes = self.num_draws + 1
        if num_bins is None:
            num_bins = self._default_num_bins()
            if num_bins == 1:
                raise ValueError(f"{self.num_simulations} simulations are too few for a chi-square test (need 10).")
        num_bins = check_positive_int("num_bins", num_bins)
        if outcomes % num_bins:
            raise ValueError(f"num_bins={num_bins} must divide num_draws + 1 = {outcomes}, so bins are equally likely.")
        out = {}
        for name, ranks in self.scalar_ranks().items():
            counts = np.bincount(ranks * num_bins // outcomes, minlength=num_bins)
            expected = len(ranks) / num_bins
            statistic = float(((counts - expected) ** 2 / expected).sum())
            out[name] = (statistic, float(stats.chi2.sf(statistic, num_bins - 1)))
        return out

    def coverage(self, level: float = 0.9) -> dict[str, float]:
        """Fraction of truths inside the posterior's central ``level`` interval (``level`` if calibrated)."""
        level = check_probability("level", level)
        low, high = (1 - level) / 2 * (self.num_draws + 1), (1 + level) / 2 * (self.num_draws + 1)
        return {name: float(((ranks >= low) & (ranks < high)).mean()) for name, ranks in self.scalar_ranks().items()}

    def plot(self, num_bins: int | None = None, axes: Any = None) -> Any:
        """Rank histograms, one panel per scalar quantity, with the 99% band of a uniform histogram."""
        import matplotlib.pyplot as plt
        from scipy import stats

        ranks = self.scalar_ranks()
        outcomes = self.num_draws + 1
        if num_bins is None:
            num_bins = self._default_num_bins()
        if axes is None:
            columns = min(4, len(ranks))
            rows = math.ceil(len(ranks) / columns)
            _, axes = plt.subplots(rows, columns, figsize=(3 * columns, 2.4 * rows), squeeze=False)
        flat = np.asarray(axes).ravel()
        p = 1 / num_bins
        low, high = stats.binom.ppf([0.005, 0.995], self.num_simulations, p)
        for ax, (name, r) in zip(flat, ranks.items()):
            counts = np.bincount(r * num_bins // outcomes, minlength=num_bins)
            ax.axhspan(low, high, color="0.85", label="99% of uniform")
            ax.bar(np.arange(num_bins), counts, width=1.0, color="C0", edgecolor="white")
            ax.set_title(name, fontsize=9)
            ax.set_xticks([])
        for ax in flat[len(ranks):]:
            ax.set_axis_off()
        return axes


def simulation_based_calibration(
    simulate: Simulator,
    fit: Fitter,
    *,
    num_simulations: int = 100,
    num_draws: int = 99,
    quantities: Callable[[Mapping[str, Tensor]], Mapping[str, Tensor]] | None = None,
    seed: int = 0,
    progress_bar: bool = True,
) -> SBCResult:
    """Rank the true quantities of ``num_simulations`` simulated data sets among their posterior draws.

    :param simulate: ``simulate(seed) -> (truth, data)``: a dict of true values (unbatched) and the
        data, as the tuple ``fit`` takes (see :func:`prior_simulator`).
    :param fit: ``fit(data, seed) -> result``: a probgen result (chains kept apart and thinned
        each) or a dict of draws ``(S, ...)``.
    :param int num_draws: draws each truth is ranked among (after thinning); ``num_draws + 1``
        should have divisors for the histogram's bins (99 gives 100 possible ranks).
    :param quantities: maps a dict of values with a leading draw dimension to the quantities to
        rank (the truth is given a draw dimension of 1); default: every site of ``truth``.
    :param int seed: simulation ``i`` uses ``seed + i`` for ``simulate`` and for ``fit``.
    """
    num_simulations = check_positive_int("num_simulations", num_simulations)
    num_draws = check_positive_int("num_draws", num_draws)
    seed = check_seed(seed)
    collected: dict[str, list[np.ndarray]] = {}
    with make_progress_bar(num_simulations, desc="SBC", enabled=progress_enabled(progress_bar)) as bar:
        for i in range(num_simulations):
            truth, data = simulate(seed + i)
            draws = thin_draws(fit(data, seed + i), num_draws)
            truth_batch = {name: torch.as_tensor(value).unsqueeze(0) for name, value in truth.items()}
            if quantities is None:
                true_q, draw_q = truth_batch, {name: draws[name] for name in truth_batch}
            else:
                true_q, draw_q = dict(quantities(truth_batch)), dict(quantities(draws))
            for name, value in true_q.items():
                rank = rank_of_truth(value[0], draw_q[name].to(value.dtype))
                collected.setdefault(name, []).append(rank.cpu().numpy())
            bar.update()
    ranks = {name: np.stack(values) for name, values in collected.items()}
    return SBCResult(ranks=ranks, num_draws=num_draws, seed=seed)


def prior_simulator(
    model: Callable[..., Any], *args: Any, observed: Mapping[str, int | str], **kwargs: Any
) -> Simulator:
    """A simulator for :func:`simulation_based_calibration` from a Pyro program.

    ``simulate(seed)`` runs ``model(*args, **kwargs)`` with Pyro's RNG seeded, keeps the values of
    its latent sites as the truth, and returns the data with each observed site's simulated value
    put where the model takes it.

    :param observed: observed site name -> the position (int) or keyword (str) of the model's
        argument that carries it, e.g. ``{"obs": 1}`` for ``model(x, y)`` with ``obs=y``. The
        argument itself should be ``None`` in ``args`` / ``kwargs``.
    :returns: ``simulate(seed) -> (truth, (args, kwargs))``; the fitting function receives
        ``(args, kwargs)`` and calls e.g. ``fit_nuts(model, *args, model_kwargs=kwargs, ...)``.
    """

    def simulate(seed: int) -> tuple[dict[str, Tensor], tuple[Any, ...]]:
        pyro.set_rng_seed(seed)
        with poutine.block():
            trace = poutine.trace(model).get_trace(*args, **kwargs)
        truth = {
            name: torch.as_tensor(site["value"]).detach()
            for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"] and not is_subsample(site) and name not in observed
        }
        new_args, new_kwargs = list(args), dict(kwargs)
        for name, where in observed.items():
            if name not in trace.nodes:
                raise ValueError(f"the model has no site {name!r}; its sites are {list(trace.nodes)}.")
            value = torch.as_tensor(trace.nodes[name]["value"]).detach()
            if isinstance(where, int):
                new_args[where] = value
            else:
                new_kwargs[where] = value
        return truth, (tuple(new_args), new_kwargs)

    return simulate
