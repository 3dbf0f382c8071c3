"""Benchmark: the README's first NUTS example, as a newcomer runs it, in a fresh process.

The script takes the README's first Python block, keeps every line up to its ``fit_nuts`` call
(imports, data, network, model, the call itself, exactly as printed), and runs that in a new
Python process twice:

* **cold**: an empty TorchInductor cache (``TORCHINDUCTOR_CACHE_DIR`` a fresh folder) and no
  built C++ kernel (``PROBGEN_CACHE_DIR`` a fresh folder), which is what a user's very first fit pays;
* **warm**: a second fresh process on the cache the cold run filled, which is every later run.

For each it prints the wall time of the whole process (start-up and imports included), of the
``fit_nuts`` call alone, whether the sampler compiled, the largest R-hat of the posterior
predictive mean over the README's test inputs, the smallest bulk ESS there, and the number of
divergent transitions, with the verdicts of the issue's targets: under 60 s of wall time on two
cores, R-hat < 1.01 and no divergences.

    python benchmarks/readme_nuts.py            # both runs at the README's sizes (a few minutes)
    python benchmarks/readme_nuts.py --quick    # the same code with 20 + 20 draws, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 60.0
TARGET_RHAT = 1.01

#: What the child appends after the README's lines: the read-outs, printed as one JSON line.
READOUT = """
import json as _json
import arviz as _az
import numpy as _np
_pred = nuts.predict(data.x_test)
_mean = _np.asarray(_pred.f[..., 0].detach().cpu())  # E[y | x, theta] per (chain, draw, test input)
_data = _az.convert_to_dataset({"mean": _mean})
print("READOUT " + _json.dumps({
    "fit_s": nuts.wall_time,
    "rhat_max": float(_az.rhat(_data)["mean"].max()),
    "ess_min": float(_az.ess(_data)["mean"].min()),
    "divergences": int(nuts.get_sample_stats()["diverging"].sum()),
    "draws": list(_mean.shape[:2]),
}))
"""


def readme_program(quick: bool, options: dict[str, str], rows_every: int | None) -> str:
    """The README's first Python block up to and including its ``fit_nuts`` call (shrunk for ``--quick``),
    with ``options`` (``fit_nuts`` keywords) and the training rows' stride replaced where given."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    if block is None:
        raise SystemExit("README.md has no Python block")
    lines = block.group(1).splitlines()
    last = next((i for i, line in enumerate(lines) if "fit_nuts(" in line), None)
    if last is None:
        raise SystemExit("the README's first Python block has no fit_nuts call")
    program = "\n".join(lines[: last + 1])
    if quick:
        options = {**options, "num_warmup": "20", "num_samples": "20"}
    call = program.rindex("fit_nuts(")
    head, tail = program[:call], program[call:]
    for key, value in options.items():
        if re.search(rf"\b{key}=[^,)]+", tail):
            tail = re.sub(rf"\b{key}=[^,)]+", f"{key}={value}", tail)
        else:
            tail = tail[: tail.rindex(")")] + f", {key}={value})" + tail[tail.rindex(")") + 1 :]
    if rows_every is not None:
        head = re.sub(r"\[::\d+\]", f"[::{rows_every}]", head)
    return head + tail + "\n" + READOUT


def run(program: str, cache: str) -> dict[str, float]:
    # both caches empty for the cold run: TorchInductor's and probgen's built C++ kernel (its first build)
    # (CI: no progress bar in the log)
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "PROBGEN_CACHE_DIR": os.path.join(cache, "probgen"), "CI": "true"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the README's example failed:\n{done.stderr[-3000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("READOUT "))
    return {"process_s": wall, **json.loads(line[len("READOUT ") :])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 + 20 draws, for CI (numbers not meaningful)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="replace (or add) a fit_nuts keyword, e.g. --set max_tree_depth=10; repeatable")  # fmt: skip
    parser.add_argument("--rows-every", type=int, default=None, help="keep every N-th training row (the README: 10)")
    args = parser.parse_args()
    options = dict(item.split("=", 1) for item in args.set)
    program = readme_program(args.quick, options, args.rows_every)
    print("# the README's NUTS example, each run a fresh process:")
    print("\n".join("#   " + line for line in program.split("\nimport json as _json")[0].splitlines() if line.strip()))
    with tempfile.TemporaryDirectory() as cache:
        results = {"cold": run(program, cache), "warm": run(program, cache)}
    print(f"{'run':6} {'process s':>10} {'fit_nuts s':>11} {'R-hat max':>10} {'ESS min':>8} {'divergent':>10}")
    for name, r in results.items():
        print(
            f"{name:6} {r['process_s']:10.1f} {r['fit_s']:11.1f} {r['rhat_max']:10.4f} {r['ess_min']:8.0f} "
            f"{r['divergences']:10d}"
        )
    cold = results["cold"]
    verdicts = [
        ("wall time of a fresh process, cold cache", cold["process_s"], TARGET_SECONDS, cold["process_s"] < TARGET_SECONDS),
        ("R-hat max of the predictive mean", cold["rhat_max"], TARGET_RHAT, cold["rhat_max"] < TARGET_RHAT),
        ("divergent transitions", cold["divergences"], 0, cold["divergences"] == 0),
    ]
    print("case, value, target, verdict")
    for name, value, target, met in verdicts:
        print(f"{name}, {value:.4g}, {target:g}, {'met' if met else 'missed'}")
    if args.quick:
        print("(--quick: 20 + 20 draws, so the numbers say nothing)")


if __name__ == "__main__":
    main()
