"""Progress bars: redrawn in place on a terminal, a few whole lines in a log file."""

from __future__ import annotations

import io
import re

from probgen.infer import _progress


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_log_file_gets_whole_lines_at_an_interval(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(_progress.time, "monotonic", clock)
    log = io.StringIO()  # not a terminal
    monkeypatch.setattr(_progress.sys, "stderr", log)
    bar = _progress.make_progress_bar(1000, desc="SVI", enabled=True, file=log)
    for step in range(1000):
        clock.now = step * 0.1  # 100 s in all: one line per LOG_INTERVAL seconds
        bar.update()
        bar.set_postfix(elbo=f"{-step}")
    bar.close()
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    expected = 100 / _progress.LOG_INTERVAL
    assert expected - 2 <= len(lines) <= expected + 3  # the first, one per interval, and the last
    assert lines[-1].startswith("SVI: 100%") and "elbo=-999" in lines[-1]


def test_a_disabled_bar_writes_nothing(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(_progress.sys, "stderr", log)
    with _progress.make_progress_bar(10, desc="SVI", enabled=False, file=log) as bar:
        bar.update(10)
    assert log.getvalue() == ""


def test_the_nuts_bar_shows_the_phase_step_size_and_divergences(monkeypatch):
    import torch

    from probgen.infer import nuts

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(_progress, "LOG_INTERVAL", 0.0)  # every update becomes a line
    monkeypatch.setattr(nuts, "STATUS_INTERVAL", 0.0)
    log = io.StringIO()
    monkeypatch.setattr(_progress.sys, "stderr", log)
    monkeypatch.setattr(nuts, "make_progress_bar", lambda *a, **k: _progress.make_progress_bar(*a, **k, file=log))
    config = nuts.NUTSConfig(num_warmup=20, num_samples=20, num_chains=2, target_accept_prob=0.8, max_tree_depth=5, progress_bar=True)
    nuts.sample_nuts(lambda u: (-0.5 * (u * u).sum(-1), -u), torch.zeros(2, 3), config, seed=0)
    lines = log.getvalue().splitlines()
    assert any("warm-up, step" in line for line in lines)
    assert re.search(r"sampling, step [0-9.]+, [0-9]+ divergent]$", lines[-1])
