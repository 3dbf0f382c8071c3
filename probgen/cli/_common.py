"""What every command shares: argument types that name the flag, and a CSV reader that names the column.

A mistake on the command line must end in one line that says which flag, file or column is wrong,
never in a traceback from deep inside: argparse reports a bad value of a typed flag as
``probgen bnn fit: error: argument --hidden: must be a positive integer, got 0``, and
:func:`read_numeric_csv` raises a ``ValueError`` naming the file and the column, which
:func:`probgen.cli.main` prints as one line.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_THREADS",
    "positive_int",
    "non_negative_int",
    "positive_float",
    "unit_interval",
    "open_unit_interval",
    "read_numeric_csv",
    "prepare_output_folder",
    "resumed_state",
    "resume_hint_on_interrupt",
]


#: torch threads per process unless ``--threads`` says otherwise: with the small tensors of a
#: 1-50-1 network, two threads contend for two cores (more so beside NUTS worker processes), and
#: one thread per process was the faster choice in every fit measured here.
DEFAULT_THREADS = 1


def _number(text: str, kind: type) -> float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer of at least 0."""
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    value = _number(text, float)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite positive number, got {text}")
    return value


def unit_interval(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    value = _number(text, float)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return value


def open_unit_interval(text: str) -> float:
    """An argparse type: a number in (0, 1)."""
    value = _number(text, float)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value


def read_numeric_csv(path: str | Path, columns: Sequence[str] | None = None, *, allow_text: Sequence[str] = ()) -> pd.DataFrame:
    """A CSV file with a header row, checked: it exists, has rows, and the columns are numbers without gaps.

    :param columns: the columns to keep and check (default: all), in this order.
    :param allow_text: columns that may hold text (e.g. class labels); they are returned as they are.
    :raises FileNotFoundError: for a missing file.
    :raises ValueError: naming the file and the column, for an empty or header-only file, an unknown
        column, text in a numeric column, or missing and infinite values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such data file: {path}")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty; it needs a header row and at least one row of data.") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a readable CSV file ({str(error).splitlines()[0]}).") from None
    if columns is not None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"column(s) {missing} are not in {path.name}; its columns are {list(frame.columns)}.")
        frame = frame[list(columns)]
    if len(frame) == 0:
        raise ValueError(f"{path} has a header but 0 rows of data.")
    for name in frame.columns:
        if name in allow_text:
            continue
        column = frame[name]
        if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            numbers = pd.to_numeric(column, errors="coerce")
            bad = column[numbers.isna() & column.notna()]
            example = repr(bad.iloc[0]) if len(bad) else "a non-numeric value"
            raise ValueError(
                f"column {name!r} of {path.name} is not numeric (row {int(bad.index[0]) + 2 if len(bad) else '?'} "
                f"holds {example}); encode it as numbers first."
            )
        values = column.to_numpy(dtype=np.float64)
        bad_count = int((~np.isfinite(values)).sum())
        if bad_count:
            row = int(np.flatnonzero(~np.isfinite(values))[0]) + 2  # 1-based, after the header
            raise ValueError(
                f"column {name!r} of {path.name} has {bad_count} missing or infinite value(s) (the first in "
                f"line {row}); drop or impute them first."
            )
    return frame


def prepare_output_folder(out: str | Path) -> Path:
    """Create the output folder (or use an existing one) and check that it can be written, before any
    long fit starts: a fit must not end in a failure to save it.

    :raises ValueError: if ``out`` is an existing file.
    :raises PermissionError: if the folder cannot be written.
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"the output folder {folder} is an existing file; pass a folder with --out.")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise PermissionError(f"cannot write to the output folder {folder}: {error.strerror or error}.") from None
    return folder


def resumed_state(checkpoint: Path, total: int, load: Callable[[str], Any]) -> tuple[Any, int]:
    """``--resume``: the saved state of an interrupted fit (read by ``load``), and the steps left to reach ``total``.

    :raises FileNotFoundError: if there is no saved fit.
    :raises ValueError: if the saved fit has already taken ``total`` steps.
    """
    if not checkpoint.exists():
        raise FileNotFoundError(f"--resume: there is no saved fit at {checkpoint}; run without --resume to start one.")
    state = load(str(checkpoint))
    if state.step >= total:
        raise ValueError(f"--resume: the saved fit at {checkpoint} has already taken {state.step} of {total} steps.")
    return state, total - state.step


@contextlib.contextmanager
def resume_hint_on_interrupt(checkpoint: Path | None, load: Callable[[str], Any]) -> Iterator[None]:
    """On Ctrl-C, say which step the saved state (``checkpoint``, read by ``load``) holds and how to resume; then re-raise."""
    try:
        yield
    except KeyboardInterrupt:
        if checkpoint is not None and checkpoint.exists():
            step = load(str(checkpoint)).step
            print(f"probgen: the fit's state after step {step} is saved in {checkpoint}; "
                  "run the same command with --resume to continue from it.", file=sys.stderr)  # fmt: skip
        raise
