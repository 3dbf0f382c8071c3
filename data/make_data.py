"""Write the generated data sets to this folder as CSV.

Run from the repository root:  .venv/bin/python data/make_data.py
The generators live in probgen.datasets (fixed seeds); tests check that the files match them.
"""

from pathlib import Path

from probgen.datasets import make_cosine, make_gap, make_moons

HERE = Path(__file__).resolve().parent

for name, make in {"gap": make_gap, "cosine": make_cosine, "moons": make_moons}.items():
    train, test = make()
    train.to_csv(HERE / f"{name}_train.csv", index=False)
    test.to_csv(HERE / f"{name}_test.csv", index=False)
    print(f"wrote {name}_train.csv ({len(train)} rows) and {name}_test.csv ({len(test)} rows)")
