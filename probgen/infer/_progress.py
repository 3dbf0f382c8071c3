"""Progress bars that switch themselves off in CI. Imports nothing above probgen._validate."""

from __future__ import annotations

import os
from typing import Any

# plain tqdm, not tqdm.auto: the notebook widget needs ipywidgets, which probgen does not install,
# and tqdm.auto warns "IProgress not found" in every notebook without it.
from tqdm import tqdm


def progress_enabled(requested: bool) -> bool:
    """Progress bars show when requested, unless the ``CI`` environment variable is set."""
    return requested and "CI" not in os.environ


def make_progress_bar(total: int, *, desc: str, enabled: bool, **kwargs: Any) -> tqdm:
    """A tqdm bar over ``total`` steps, disabled when ``enabled`` is False."""
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True, **kwargs)
