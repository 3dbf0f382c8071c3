"""Imports of optional or noisy third-party modules. Imports nothing from probgen."""

from __future__ import annotations

import warnings
from typing import Any


def import_arviz() -> Any:
    """Import ArviZ 0.23 without its import-time notice about the 1.x refactor.

    probgen pins ArviZ 0.23 (the line that supports Python 3.11), so that notice is not
    actionable for our users.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing", category=FutureWarning)
        import arviz

    return arviz
