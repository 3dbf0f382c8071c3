"""Stored notebook outputs must belong to the code that is stored with them.

``make notebooks`` (``tutorials/execute.py``) executes the tutorials at full size and records the
SHA-256 of their code cells. A notebook stored with outputs whose code cells have changed since is
stale: its figures and numbers describe code that is no longer there. CI executes every notebook
from scratch at smoke sizes separately (nbmake); this test checks the stored copies.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
sys.path.insert(0, str(TUTORIALS))
from execute import METADATA_KEY, code_digest  # noqa: E402

NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))


def _has_outputs(notebook: dict) -> bool:
    return any(cell.get("outputs") for cell in notebook["cells"] if cell["cell_type"] == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_outputs_match_the_stored_code(path):
    notebook = json.loads(path.read_text())
    if not _has_outputs(notebook):
        assert METADATA_KEY not in notebook["metadata"], "outputs were cleared but the execution record was kept"
        return
    record = notebook["metadata"].get(METADATA_KEY)
    assert record is not None, f"{path.name} has outputs that tutorials/execute.py did not write; run `make notebooks`"
    assert record["code_sha256"] == code_digest(notebook), f"{path.name}: code changed since its outputs; run `make notebooks`"


def test_some_tutorial_is_stored_with_its_outputs():
    assert any(_has_outputs(json.loads(path.read_text())) for path in NOTEBOOKS)


def test_the_digest_sees_a_changed_code_cell():
    notebook = {"cells": [{"cell_type": "code", "source": "x = 1"}, {"cell_type": "markdown", "source": "text"}]}
    before = code_digest(notebook)
    notebook["cells"][1]["source"] = "other text"
    assert code_digest(notebook) == before  # prose may change
    notebook["cells"][0]["source"] = "x = 2"
    assert code_digest(notebook) != before
