"""Every Python code block of README.md runs, in order, at CI sizes, and prints the shapes it states.

A README example that has rotted is the first thing a new user meets, so each block is executed
as it is written, except that its sizes (warm-up, draws, optimisation steps) are shrunk to
:data:`CI_SIZES`, and it runs in a temporary folder (the examples write files). Blocks share one
namespace, as a reader pasting them into one session would.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
#: The sizes every block runs with in the suite; the README's own sizes are for a real run.
CI_SIZES = {"num_warmup": 20, "num_samples": 20, "num_steps": 20, "num_chains": 2, "num_simulations": 10, "num_draws": 9}


def python_blocks(text: str) -> list[str]:
    """The contents of every ```python fence, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def shrink(code: str) -> str:
    """``name=<int>`` keyword arguments of :data:`CI_SIZES` set to their CI value."""
    pattern = r"\b(" + "|".join(CI_SIZES) + r")=(\d+)"
    return re.sub(pattern, lambda m: f"{m[1]}={CI_SIZES[m[1]]}", code)


BLOCKS = python_blocks(README.read_text())


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 3


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # tiny runs: the sampler warns about its own short warm-up
def test_every_readme_block_runs_at_ci_sizes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    for index, block in enumerate(BLOCKS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # ArviZ's small-sample notices at these sizes
            exec(compile(shrink(block), f"README.md block {index}", "exec"), namespace)
        # what the block's comments say it prints (shapes), at CI sizes
        for expression, expected in shape_claims(block):
            assert tuple(eval(expression, namespace)) == expected, (index, expression)


#: ``expression  # (4, 1000)`` or ``# (chain, draw, 2) = (1, 1000, 2)``: a line that states a shape.
SHAPE_CLAIM = re.compile(r"^(?P<expr>\S.*?\.shape)\s+#\s*(?:\([^)]*\)\s*=\s*)?\((?P<shape>[\d,\s]+)\)\s*$", re.MULTILINE)


def shape_claims(block: str) -> list[tuple[str, tuple[int, ...]]]:
    """Every shape a block's comments promise, translated to CI sizes.

    A number in the claim that is one of the block's own sizes (``num_chains=4`` -> 4) becomes that
    size's CI value, so ``(4, 1000)`` after ``num_chains=4, num_samples=1000`` expects ``(2, 20)``.
    """
    sizes = {int(value): CI_SIZES[name] for name, value in re.findall(r"\b(" + "|".join(CI_SIZES) + r")=(\d+)", block)}
    claims = []
    for match in SHAPE_CLAIM.finditer(block):
        stated = tuple(int(v) for v in match["shape"].replace(" ", "").split(",") if v)
        claims.append((match["expr"], tuple(sizes.get(v, v) for v in stated)))
    return claims


def test_the_readme_states_shapes_that_some_block_checks():
    assert sum(len(shape_claims(block)) for block in BLOCKS) >= 2
