"""Simulation-based calibration: the rank machinery, and NUTS passing it where the posterior is exact."""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from probgen import BNN, fit_nuts
from probgen.calibration import SBCResult, prior_simulator, rank_of_truth, simulation_based_calibration, thin_draws


def test_the_rank_counts_draws_below_the_truth_and_splits_ties():
    draws = torch.tensor([[0.0, 1.0], [2.0, 1.0], [3.0, 1.0]])
    ranks = rank_of_truth(torch.tensor([2.5, 1.0]), draws)
    assert ranks[0] == 2
    assert 0 <= ranks[1] <= 3  # three ties: a uniform share of them counts as below


def test_exact_posterior_draws_give_uniform_ranks_and_too_narrow_ones_do_not():
    # Truth and draws from the same distribution: ranks are uniform by exchangeability.
    generator = torch.Generator().manual_seed(1)
    truth = torch.randn(400, generator=generator)
    draws = torch.randn(400, 99, generator=generator)
    ranks = {"exact": (draws < truth[:, None]).sum(1).numpy(), "narrow": (0.5 * draws < truth[:, None]).sum(1).numpy()}
    result = SBCResult(ranks=ranks, num_draws=99, seed=0)
    p = {name: p for name, (_, p) in result.chi_square(num_bins=10).items()}
    # exact: p is uniform, so p < 1e-3 has probability 1e-3; narrow: P(|z| > 2 sd) about 0.32 of
    # the truths fall in the two outer bins that expect 0.2, a chi-square of about 80 on 9 dof
    assert p["exact"] > 1e-3 and p["narrow"] < 1e-6, p
    coverage = result.coverage(0.9)
    # 400 truths: the exact coverage has sd sqrt(0.9 * 0.1 / 400) = 0.015; narrow covers ~0.59
    assert abs(coverage["exact"] - 0.9) < 4.5 * 0.015 and coverage["narrow"] < 0.7, coverage


def test_vector_quantities_are_ranked_per_element_and_bins_must_divide():
    result = SBCResult(ranks={"w": np.zeros((20, 2), dtype=int)}, num_draws=9, seed=0)
    assert list(result.scalar_ranks()) == ["w[0]", "w[1]"]
    with pytest.raises(ValueError, match="must divide num_draws"):
        result.chi_square(num_bins=3)


def test_thinning_keeps_chains_apart_and_refuses_too_few_draws():
    grouped = {"a": torch.arange(20.0).reshape(2, 10)}

    class Result:
        def get_samples(self, group_by_chain=False):
            return grouped

    thinned = thin_draws(Result(), 4)["a"]
    assert thinned.tolist() == [0.0, 9.0, 10.0, 19.0]
    with pytest.raises(ValueError, match="cannot give num_draws=30"):
        thin_draws(Result(), 30)


def test_a_simulator_from_a_pyro_program_returns_the_truth_and_the_data():
    def model(x, y=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("obs", dist.Normal(w * x, 0.1), obs=y)

    x = torch.linspace(-1, 1, 5)
    truth, (args, kwargs) = prior_simulator(model, x, None, observed={"obs": 1})(3)
    assert list(truth) == ["w"] and kwargs == {}
    assert args[0] is x and torch.allclose(args[1], truth["w"] * x, atol=0.5)
    again, _ = prior_simulator(model, x, None, observed={"obs": 1})(3)
    assert torch.equal(again["w"], truth["w"])  # the seed fixes the simulation
    with pytest.raises(ValueError, match="no site 'y'"):
        prior_simulator(model, x, None, observed={"y": 1})(0)


# -- NUTS on models whose posterior it should get right -----------------------------------------

NUM_SIMULATIONS = 40
NUM_DRAWS = 39  # 40 possible ranks: 4 bins of 10 ranks, 10 expected simulations in each


def _nuts_sbc(net_factory, x, quantities):
    """SBC of NUTS on ``BNN(net)``, and the same ranks computed from draws shrunk to a tenth of their width."""
    kept: list[dict] = []

    def simulate(seed):
        torch.manual_seed(seed)
        return prior_simulator(BNN(net_factory()), x, None, observed={"obs": 1})(seed)

    def fit(data, seed):
        args, _ = data
        torch.manual_seed(seed)
        # four chains cost about what one does (they run as one batch); 160 draws thinned to 39
        result = fit_nuts(
            BNN(net_factory()), *args, num_warmup=150, num_samples=40, num_chains=4, seed=seed, progress_bar=False
        )
        draws = thin_draws(result, NUM_DRAWS)
        kept.append(draws)
        return draws

    def shrunk(_, seed):
        draws = kept[seed]
        return {name: value.mean(0) + 0.1 * (value - value.mean(0)) for name, value in draws.items()}

    options = dict(num_simulations=NUM_SIMULATIONS, num_draws=NUM_DRAWS, quantities=quantities, progress_bar=False)
    exact = simulation_based_calibration(simulate, fit, **options)
    narrow = simulation_based_calibration(simulate, shrunk, **options)
    return exact, narrow


def _check(exact: SBCResult, narrow: SBCResult, num_quantities: int) -> None:
    # False-alarm budget: 1% for the test, 5 quantities (Bonferroni), so each p-value is tested at
    # 0.01 / 5 = 2e-3. The negative control shrinks each posterior to a tenth of its width: for a
    # roughly normal posterior a truth z sds from the mean gets the rank fraction Phi(10 z), so
    # each outer bin of 4 holds P(|z| > 0.07) / 2 = 0.47 of the simulations instead of 0.25, a
    # chi-square near 30 on 3 dof for 40 simulations (p ~ 1e-6): that control must fail the very
    # test the sampler passes.
    p_exact = {name: p for name, (_, p) in exact.chi_square(num_bins=4).items()}
    p_narrow = {name: p for name, (_, p) in narrow.chi_square(num_bins=4).items()}
    assert len(p_exact) == num_quantities
    assert min(p_exact.values()) > 0.01 / num_quantities, p_exact
    assert max(p_narrow.values()) < 0.01 / num_quantities, p_narrow


@pytest.mark.slow
def test_nuts_is_calibrated_on_bayesian_linear_regression():
    """BNN(nn.Linear(3, 1)): a linear regression with a Gaussian prior and a HalfNormal noise scale.

    The tiny-BNN case (function values at fixed inputs) and mean-field SVI's miscalibration are in
    benchmarks/sbc.py: at the suite's budget one model is what fits.
    """
    x = torch.randn(15, 3, generator=torch.Generator().manual_seed(0))
    exact, narrow = _nuts_sbc(lambda: nn.Linear(3, 1), x, None)
    _check(exact, narrow, num_quantities=5)  # 3 weights, the bias, the noise scale
