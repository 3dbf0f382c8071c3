"""The ``probgen`` command line.

Each subcommand lives in its own module with a ``register(subparsers)`` function that adds
its parser and sets ``func`` to a handler returning an exit code.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

import torch

from probgen import __version__
from probgen.cli import bnn, diffusion, inspect
from probgen.cli._common import DEFAULT_THREADS

__all__ = ["main", "build_parser"]

COMMANDS = (bnn, diffusion, inspect)
#: Errors that mean the input was wrong (a value, a type, a file, a fit that diverged, the disk):
#: reported in one line. probgen's checks raise these with a message that names the problem.
USER_ERRORS = (ValueError, TypeError, FloatingPointError, OSError)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="probgen",
        description="Bayesian neural networks and diffusion models as Pyro programs, with ArviZ posteriors.",
    )
    parser.add_argument("--version", action="version", version=f"probgen {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "func", None)
    if handler is None:
        parser.print_help()
        return 2
    torch.set_num_threads(getattr(args, "threads", DEFAULT_THREADS))
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        print("probgen: interrupted.", file=sys.stderr)
        return 130
    except USER_ERRORS as err:  # a mistake in the input: one line that names it, no traceback
        print(f"probgen: error: {err}", file=sys.stderr)
        return 2
    except Exception:  # a bug of ours: the whole traceback, and where to send it
        traceback.print_exc()
        print(
            "probgen: internal error: the traceback above is a bug in probgen, not a mistake in your input; "
            f"please report it with the command you ran (probgen {__version__}).",
            file=sys.stderr,
        )
        return 1
