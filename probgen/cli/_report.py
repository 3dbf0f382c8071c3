"""What ``probgen bnn fit`` writes: the posterior, a summary table and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from probgen._compat import import_arviz  # noqa: E402
from probgen.infer.results import PosteriorResult  # noqa: E402

__all__ = ["write_bnn_report"]


def write_bnn_report(result: PosteriorResult, out_dir: Path, *, x_plot: Any = None) -> dict[str, Path]:
    """Write ``posterior.nc``, ``summary.csv`` and ``predictive.png`` (1-D inputs) to ``out_dir``."""
    az = import_arviz()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    idata = result.to_arviz()
    paths = {"posterior": out_dir / "posterior.nc", "summary": out_dir / "summary.csv"}
    idata.to_netcdf(str(paths["posterior"]))
    az.summary(idata).to_csv(paths["summary"])
    if result.x.shape[1] == 1:
        import torch

        lo, hi = result.x[:, 0].min(), result.x[:, 0].max()
        pad = 0.5 * (hi - lo)
        grid = torch.linspace(float(lo - pad), float(hi + pad), 200, dtype=result.x.dtype)[:, None]
        pred = result.predict(grid)
        low, high = pred.interval(0.9)
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.fill_between(grid[:, 0], low, high, alpha=0.3, label="90% predictive interval")
        ax.plot(grid[:, 0], pred.mean, label="predictive mean")
        ax.scatter(result.x[:, 0], result.y, s=8, c="k", label="data")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.legend()
        paths["predictive"] = out_dir / "predictive.png"
        fig.savefig(paths["predictive"], dpi=100)
        plt.close(fig)
    return paths
