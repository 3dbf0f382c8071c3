"""Progress bars that switch themselves off in CI. Imports nothing above probgen._validate."""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

# plain tqdm, not tqdm.auto: the notebook widget needs ipywidgets, which probgen does not install,
# and tqdm.auto warns "IProgress not found" in every notebook without it.
from tqdm import tqdm


def progress_enabled(requested: bool) -> bool:
    """Progress bars show when requested, unless the ``CI`` environment variable is set."""
    return requested and "CI" not in os.environ


#: Seconds between the lines a bar writes when stderr is not a terminal (a log file, a pipe).
LOG_INTERVAL = 5.0


class _LogLines(tqdm):
    """A bar for a log file: a whole line every :data:`LOG_INTERVAL` seconds, never a carriage return."""

    _last_line = -math.inf

    def display(self, msg: str | None = None, pos: int | None = None, *, final: bool = False) -> bool:
        # set_postfix and refresh call display on every update: rate-limit here, not only in update
        now = time.monotonic()
        if final or now - self._last_line >= LOG_INTERVAL:
            self._last_line = now
            self.fp.write((msg if msg is not None else self.__str__()) + "\n")
            self.fp.flush()
        return True

    def clear(self, nolock: bool = False) -> None:
        """Nothing to erase: earlier lines stay in the log."""

    def close(self) -> None:
        if not getattr(self, "disable", True):
            self.display(final=True)  # the last state, once
        setattr(self, "disable", True)  # keep tqdm's own close from printing again


def make_progress_bar(total: int, *, desc: str, enabled: bool, **kwargs: Any) -> tqdm:
    """A tqdm bar over ``total`` steps, disabled when ``enabled`` is False.

    On a terminal it redraws in place; otherwise (stderr redirected to a file) it writes one line
    every :data:`LOG_INTERVAL` seconds, so a log holds a few lines instead of thousands of updates.
    """
    if enabled and not _is_terminal(sys.stderr):
        return _LogLines(total=total, desc=desc, mininterval=LOG_INTERVAL, maxinterval=LOG_INTERVAL * 4, ncols=100, ascii=True, **kwargs)
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True, **kwargs)


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False
