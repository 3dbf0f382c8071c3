"""Stochastic variational inference for probgen models.

Two levels, as in NumPyro:

* :func:`fit_svi` is the one-call path: it validates the data, fits a guide and returns an
  :class:`~probgen.infer.results.SVIResult` with draws from the fitted guide.
* :class:`SVI` is the step API for custom loops: ``init``, ``update``, ``evaluate`` and ``state``.

Parameters live in modules, not in Pyro's global parameter store: every guide is built and
called under ``pyro.settings.context(module_local_params=True)``, and the optimiser runs over
the guide's parameters and the model's deterministic parameters directly. Two fits therefore
never share parameters by name, and a fit leaves Pyro's global state as it found it. Minibatch scaling
is done by the likelihood's data plate, so the loss is always an estimate of the full-data
negative ELBO in nats.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any, ContextManager, Literal

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import (
    AutoDelta,
    AutoGuide,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from pyro.infer.autoguide.initialization import init_to_sample
from torch import Tensor

from probgen._types import SeedLike
from probgen._validate import check_choice, check_positive_float, check_positive_int, check_seed, lookup
from probgen.infer import _meanfield
from probgen.infer._progress import make_progress_bar, progress_enabled
from probgen.infer.results import SVIResult, SVIState
from probgen.models.bnn import BNN

__all__ = ["SVI", "fit_svi", "GuideName", "GUIDES"]

GuideName = Literal["normal", "lowrank", "mvn", "delta"]
ElboName = Literal["meanfield", "trace"]


def _auto_normal(model: BNN, init_scale: float, rank: int | None) -> AutoGuide:
    return AutoNormal(model, init_loc_fn=init_to_sample, init_scale=init_scale)


def _auto_lowrank(model: BNN, init_scale: float, rank: int | None) -> AutoGuide:
    return AutoLowRankMultivariateNormal(model, init_loc_fn=init_to_sample, init_scale=init_scale, rank=rank)


def _auto_mvn(model: BNN, init_scale: float, rank: int | None) -> AutoGuide:
    return AutoMultivariateNormal(model, init_loc_fn=init_to_sample, init_scale=init_scale)


def _auto_delta(model: BNN, init_scale: float, rank: int | None) -> AutoGuide:
    return AutoDelta(model, init_loc_fn=init_to_sample)


#: Guide families by name: mean-field Normal (default), low-rank plus diagonal covariance,
#: full covariance (small nets only), and a point mass (MAP).
GUIDES: dict[str, Callable[[BNN, float, int | None], AutoGuide]] = {
    "normal": _auto_normal,
    "lowrank": _auto_lowrank,
    "mvn": _auto_mvn,
    "delta": _auto_delta,
}

ELBOS: dict[str, type] = {"meanfield": TraceMeanField_ELBO, "trace": Trace_ELBO}


def _local_params() -> ContextManager[None]:
    """Keep autoguide parameters inside the guide module, out of Pyro's global param store."""
    return pyro.settings.context(module_local_params=True)


class SVI:
    """One SVI run as a step API: configure, ``init``, then ``update`` per step.

    :param BNN model: the model (used as given; :func:`fit_svi` passes a copy).
    :param str guide: a name from :data:`GUIDES`.
    :param float lr: Adam's learning rate.
    :param float final_lr: if given, the learning rate decays exponentially from ``lr`` to
        ``final_lr`` over ``decay_steps`` steps (then stays there).
    :param int decay_steps: the length of that decay.
    :param str elbo: ``"meanfield"`` (closed-form KL between Gaussian guide and prior sites
        where available; the default) or ``"trace"`` (Monte Carlo KL).
    :param int num_particles: ELBO particles per step.
    :param int batch_size: minibatch size; ``None`` uses all rows each step.
    :param float init_scale: the guide's initial standard deviation.
    :param int rank: covariance rank of the ``"lowrank"`` guide.
    :param bool fast_path: for the mean-field guide with ``elbo="meanfield"`` and Normal weight
        priors, evaluate that same ELBO estimator directly in torch (:mod:`probgen.infer._meanfield`)
        instead of through Pyro's traces; ``False`` forces ``TraceMeanField_ELBO``.

    >>> import torch
    >>> from torch import nn
    >>> from probgen.models.bnn import BNN
    >>> x, y = torch.randn(20, 1), torch.randn(20)
    >>> svi = SVI(BNN(nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1))), lr=0.01)
    >>> svi.init(x, y, seed=0)
    >>> loss = svi.update(x, y)
    >>> svi.state.step
    1
    """

    def __init__(
        self,
        model: BNN,
        *,
        guide: GuideName = "normal",
        lr: float = 1e-2,
        final_lr: float | None = None,
        decay_steps: int = 1000,
        elbo: ElboName = "meanfield",
        num_particles: int = 1,
        batch_size: int | None = None,
        init_scale: float = 0.1,
        rank: int | None = None,
        fast_path: bool = True,
    ) -> None:
        self.model = model
        self.final_lr = None if final_lr is None else check_positive_float("final_lr", final_lr)
        self.decay_steps = check_positive_int("decay_steps", decay_steps)
        self.guide_name = check_choice("guide", guide, GUIDES)
        self.lr = check_positive_float("lr", lr)
        self.elbo_name = check_choice("elbo", elbo, ELBOS)
        self.num_particles = check_positive_int("num_particles", num_particles)
        self.batch_size = None if batch_size is None else check_positive_int("batch_size", batch_size)
        self.init_scale = check_positive_float("init_scale", init_scale)
        self.rank = None if rank is None else check_positive_int("rank", rank)
        with _local_params():
            self.guide: AutoGuide = lookup("guide", guide, GUIDES)(model, self.init_scale, self.rank)
        self.elbo = lookup("elbo", elbo, ELBOS)(num_particles=self.num_particles, vectorize_particles=False)
        #: True when steps use probgen's direct evaluation of the mean-field ELBO.
        self.fast_path = bool(fast_path) and _meanfield.applies(model, self.guide, self.elbo_name)
        self._optim: torch.optim.Optimizer | None = None
        self._step = 0
        self._losses: list[float] = []

    def _subsample(self, n: int) -> int | None:
        return None if self.batch_size is None or self.batch_size >= n else self.batch_size

    def _parameters(self) -> list[Tensor]:
        return [p for p in (*self.guide.parameters(), *self.model.parameters()) if p.requires_grad]

    def init(self, x: Tensor, y: Tensor, *, seed: int, init_state: SVIState | None = None) -> None:
        """Seed the run, build the guide's parameters and the optimiser; restore ``init_state`` if given."""
        pyro.set_rng_seed(seed)
        with torch.no_grad(), _local_params():
            self.guide(x, y, subsample_size=self._subsample(x.shape[0]))
        # fused Adam: one kernel for all parameters, ~0.3 ms a step cheaper than the default
        # per-tensor loop on a 1-50-1 net (benchmarks/bnn_svi.py shows both).
        self._optim = torch.optim.Adam(self._parameters(), lr=self.lr, fused=True)
        if init_state is not None:
            if init_state.guide_name != self.guide_name:
                raise ValueError(
                    f"init_state comes from a {init_state.guide_name!r} guide but this run uses "
                    f"{self.guide_name!r}; pass guide={init_state.guide_name!r}."
                )
            self.guide.load_state_dict(init_state.guide_state)
            self.model.load_state_dict(init_state.model_state)
            self._optim.load_state_dict(init_state.optim_state)
            torch.set_rng_state(init_state.rng_state)
            self._step = init_state.step
            self._losses = init_state.losses.tolist()

    def _learning_rate(self, step: int) -> float:
        """``lr * (final_lr / lr) ** min(step / decay_steps, 1)``: exponential decay, then flat."""
        if self.final_lr is None:
            return self.lr
        return self.lr * (self.final_lr / self.lr) ** min(step / self.decay_steps, 1.0)

    def update(self, x: Tensor, y: Tensor) -> float:
        """Take one gradient step on the negative ELBO; returns the loss before the step."""
        if self._optim is None:
            raise RuntimeError("call init(x, y, seed=...) before update().")
        loss = self.loss(x, y, subsample_size=self._subsample(x.shape[0]), num_particles=self.num_particles)
        for group in self._optim.param_groups:
            group["lr"] = self._learning_rate(self._step)
        self._optim.zero_grad(set_to_none=True)
        loss.backward()
        self._optim.step()
        value = float(loss.detach())
        self._step += 1
        self._losses.append(value)
        return value

    def loss(self, x: Tensor, y: Tensor, *, subsample_size: int | None = None, num_particles: int = 1) -> Tensor:
        """A differentiable estimate of the negative ELBO (nats) under the current guide."""
        with _local_params():
            if self.fast_path:
                return _meanfield.meanfield_loss(
                    self.model, self.guide, x, y,  # type: ignore[arg-type]
                    subsample_size=subsample_size, num_particles=num_particles,
                )  # fmt: skip
            elbo = self.elbo
            if num_particles != self.num_particles:
                elbo = type(self.elbo)(num_particles=num_particles, vectorize_particles=False)
            return elbo.differentiable_loss(self.model, self.guide, x, y, subsample_size=subsample_size)

    def evaluate(self, x: Tensor, y: Tensor, *, num_particles: int = 10) -> float:
        """A low-variance estimate of the full-data negative ELBO, without a gradient step."""
        num_particles = check_positive_int("num_particles", num_particles)
        with torch.no_grad():
            return float(self.loss(x, y, num_particles=num_particles))

    @property
    def state(self) -> SVIState:
        """A snapshot of everything needed to resume (copies, safe to keep)."""
        if self._optim is None:
            raise RuntimeError("call init(x, y, seed=...) before reading the state.")
        return SVIState(
            step=self._step,
            guide_state=copy.deepcopy(self.guide.state_dict()),
            model_state=copy.deepcopy(self.model.state_dict()),
            optim_state=copy.deepcopy(self._optim.state_dict()),
            rng_state=torch.get_rng_state(),
            losses=torch.tensor(self._losses),
            guide_name=self.guide_name,
        )


class _EarlyStopping:
    """Stop when the monitored loss has not improved by ``min_delta`` for ``patience`` checks."""

    def __init__(self, patience: int, min_delta: float) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best = math.inf
        self.bad_checks = 0

    def should_stop(self, value: float) -> bool:
        if value < self.best - self.min_delta:
            self.best = value
            self.bad_checks = 0
        else:
            self.bad_checks += 1
        return self.bad_checks >= self.patience


def fit_svi(
    model: BNN,
    x: Any,
    y: Any,
    *,
    guide: GuideName = "normal",
    num_steps: int = 2000,
    lr: float = 1e-2,
    final_lr: float | None = None,
    batch_size: int | None = None,
    num_samples: int = 1000,
    num_particles: int = 1,
    elbo: ElboName = "meanfield",
    init_scale: float = 0.1,
    rank: int | None = None,
    fast_path: bool = True,
    patience: int | None = None,
    min_delta: float = 0.0,
    eval_every: int = 50,
    validation: tuple[Any, Any] | None = None,
    init_state: SVIState | None = None,
    checkpoint: str | None = None,
    seed: SeedLike = None,
    progress_bar: bool = True,
) -> SVIResult:
    """Fit a variational posterior to a BNN by maximising the ELBO with Adam.

    :param BNN model: the model; it is copied, so the caller's model keeps no fitted state.
    :param x: inputs, ``(n, features)``.
    :param y: targets, ``(n,)`` (or ``(n, d)`` for multi-output regression).
    :param str guide: ``"normal"`` (mean-field, default), ``"lowrank"``, ``"mvn"`` or ``"delta"`` (MAP).
    :param int num_steps: optimisation steps (more are added to ``init_state.step`` when resuming).
    :param float lr: Adam's (initial) learning rate.
    :param float final_lr: decay the learning rate exponentially to this value over ``num_steps``;
        small values let the guide settle instead of jittering about the optimum.
    :param int batch_size: minibatch size; the likelihood rescales by N / batch_size.
    :param int num_samples: draws from the fitted guide kept on the result (one chain).
    :param bool fast_path: evaluate the mean-field ELBO directly in torch where it applies
        (see :class:`SVI`); the estimator is the same as ``TraceMeanField_ELBO``'s.
    :param int patience: enable early stopping: stop after this many checks (every ``eval_every``
        steps) without improvement of the monitored loss, which is the held-out negative ELBO
        when ``validation=(x_val, y_val)`` is given and an exponential moving average of the
        training loss otherwise.
    :param float min_delta: the improvement (in nats) that counts.
    :param SVIState init_state: resume from ``result.state`` of an earlier run.
    :param str checkpoint: a path; the state is saved there every ``eval_every`` steps and at the end.
    :param int seed: seeds the run (recorded on the result); ``None`` draws one.
    :returns: an :class:`~probgen.infer.results.SVIResult`.
    :raises ValueError: for inconsistent data or options; :raises TypeError: for a non-BNN model.

    Example:

    >>> import torch
    >>> from torch import nn
    >>> from probgen.models.bnn import BNN
    >>> x = torch.linspace(-1, 1, 50).unsqueeze(-1)
    >>> y = 2 * x[:, 0] + 0.1 * torch.randn(50)
    >>> result = fit_svi(BNN(nn.Linear(1, 1)), x, y, num_steps=300, num_samples=100, seed=0, progress_bar=False)
    >>> result.get_samples(group_by_chain=True)["weight"].shape
    torch.Size([1, 100, 1, 1])
    """
    if not isinstance(model, BNN):
        raise TypeError(f"model must be a probgen.BNN, got {type(model).__name__}.")
    x_t, y_opt = model.check_data(x, y)
    if y_opt is None:
        raise ValueError("y is required to fit a model.")
    y_t = y_opt
    num_steps = check_positive_int("num_steps", num_steps)
    num_samples = check_positive_int("num_samples", num_samples)
    eval_every = check_positive_int("eval_every", eval_every)
    min_delta = check_positive_float("min_delta", min_delta, allow_zero=True)
    stopper = None if patience is None else _EarlyStopping(check_positive_int("patience", patience), min_delta)
    val = None if validation is None else model.check_data(*validation)
    seed = check_seed(seed)

    start = time.perf_counter()
    model = copy.deepcopy(model)
    svi = SVI(
        model,
        guide=guide,
        lr=lr,
        final_lr=final_lr,
        decay_steps=num_steps + (0 if init_state is None else init_state.step),
        elbo=elbo,
        num_particles=num_particles,
        batch_size=batch_size,
        init_scale=init_scale,
        rank=rank,
        fast_path=fast_path,
    )
    svi.init(x_t, y_t, seed=seed, init_state=init_state)
    smoothed = math.nan
    stopped_early = False
    with make_progress_bar(num_steps, desc="SVI", enabled=progress_enabled(progress_bar)) as bar:
        for i in range(num_steps):
            loss = svi.update(x_t, y_t)
            smoothed = loss if math.isnan(smoothed) else 0.98 * smoothed + 0.02 * loss
            bar.update()
            if (i + 1) % eval_every == 0 or i + 1 == num_steps:
                bar.set_postfix(elbo=f"{-smoothed:.4g}")
                if checkpoint is not None:
                    svi.state.save(checkpoint)
                if stopper is not None:
                    monitored = smoothed if val is None else svi.evaluate(val[0], val[1])  # type: ignore[arg-type]
                    if stopper.should_stop(monitored):
                        stopped_early = True
                        break
    if not math.isfinite(smoothed):
        raise FloatingPointError("the ELBO became NaN or infinite; lower lr or standardise x and y.")
    state = svi.state
    if checkpoint is not None:
        state.save(checkpoint)
    with torch.no_grad():
        samples = _guide_draws(svi, num_samples)
    return SVIResult(
        model=model,
        samples=samples,
        x=x_t,
        y=y_t,
        seed=seed,
        wall_time=time.perf_counter() - start,
        guide=svi.guide,
        losses=state.losses,
        state=state,
        stopped_early=stopped_early,
        guide_name=svi.guide_name,
    )


def _guide_draws(svi: SVI, num_samples: int) -> dict[str, Tensor]:
    """``num_samples`` joint draws of every latent site from the guide, as one chain.

    Vectorised by an outer plate: every latent site has an empty batch shape (priors are
    whole-parameter events), so the plate's dim -1 is free.
    """
    with pyro.plate("_draws", num_samples, dim=-1), _local_params():
        draws = svi.guide()
    priors = svi.model.priors
    return {name: draws[name].reshape((1, num_samples) + tuple(priors[name].event_shape)) for name in priors}
