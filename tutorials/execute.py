"""Execute tutorial notebooks at full size and store their outputs, so a repository browser shows them.

    python tutorials/execute.py                      # every notebook in tutorials/
    python tutorials/execute.py 07_real_data.ipynb   # some of them

Each notebook runs from a fresh kernel in ``tutorials/`` with ``CI`` removed from the environment
(the notebooks shrink their sizes when it is set), and is written back with its outputs and a
``metadata["probgen"]`` record: the SHA-256 of its code cells, the date and the wall time. The
test suite (``tests/test_tutorial_outputs.py``) compares that hash with the code cells as they are
now, so stored outputs can never describe code that has since changed: edit a code cell, and the
suite fails until this script has been run on that notebook again. ``make notebooks`` runs it.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: The key under a notebook's metadata where this script records what it executed.
METADATA_KEY = "probgen"


def code_digest(notebook: dict) -> str:
    """SHA-256 of the notebook's code cells, in order (their sources only; outputs and markdown excluded)."""
    digest = hashlib.sha256()
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            digest.update(source.encode() + b"\0")
    return digest.hexdigest()


def execute(path: Path, timeout: int) -> float:
    """Run one notebook at full size and write it back with its outputs; returns the wall time."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    environment = {key: value for key, value in os.environ.items() if key != "CI"}
    start = time.perf_counter()
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(environment)
        NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    wall = time.perf_counter() - start
    notebook.metadata[METADATA_KEY] = {
        "code_sha256": code_digest(notebook),
        "executed": datetime.date.today().isoformat(),
        "wall_time_s": round(wall, 1),
    }
    nbformat.write(notebook, path)
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="notebook files (default: every tutorials/*.ipynb)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds one cell may run (default 3600)")
    args = parser.parse_args(argv)
    paths = [HERE / name if not Path(name).is_absolute() else Path(name) for name in args.notebooks]
    for path in paths or sorted(HERE.glob("*.ipynb")):
        wall = execute(path, args.timeout)
        print(f"{path.name}: executed at full size in {wall:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
