"""Test set-up shared by the whole suite: a fixed seed, clean Pyro state, float64, one thread.

Statistical tolerances come from ``tests/_stats.py`` (z = 4.5 on Monte Carlo standard errors).
"""

from __future__ import annotations

import os

import matplotlib
import pyro
import pytest
import torch

matplotlib.use("Agg")

@pytest.fixture(autouse=True)
def _fresh_state():
    """Seed every RNG, clear Pyro's global state, use float64 and one torch thread."""
    old_dtype = torch.get_default_dtype()
    old_threads = torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()
    torch.set_default_dtype(old_dtype)
    torch.set_num_threads(old_threads)


os.environ.setdefault("MPLBACKEND", "Agg")
