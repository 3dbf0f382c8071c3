"""Monte Carlo tolerances for statistical tests.

Every statistical check in the suite uses ``Z_SCORE * mcse``: with z = 4.5 a correct
implementation fails a single two-sided check with probability about 7e-6.
"""

from __future__ import annotations

import arviz as az
import numpy as np

#: z-score for Monte Carlo tolerances (two-sided failure rate about 7e-6 per check).
Z_SCORE = 4.5


def mcse_mean(draws: np.ndarray) -> float:
    """Monte Carlo standard error of the mean of ``(chain, draw)`` draws, via ArviZ's ESS."""
    draws = np.asarray(draws, dtype=float)
    if draws.ndim == 1:
        draws = draws[None, :]
    return float(az.mcse(draws, method="mean"))


def iid_se_mean(values: np.ndarray) -> float:
    """Standard error of the mean of independent values."""
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1) / np.sqrt(values.size))
