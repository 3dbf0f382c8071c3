"""Posterior prediction for BNNs, vectorised over draws.

The network runs once for all draws through ``torch.func.vmap``; the likelihood then turns
the stacked outputs into draws of ``y`` and into the two parts of predictive variance
(law of total variance)::

    Var[y | x, D] = Var_s E[y | f_s]  +  E_s Var[y | f_s]
                    (epistemic)          (aleatoric)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from probgen._device import fork_rng
from probgen._types import SAMPLE_DIMS, Samples
from probgen._validate import check_probability
from probgen.models.bnn import BNN

__all__ = ["Prediction", "predict", "log_likelihood", "network_outputs"]

NUM_SAMPLE_DIMS = len(SAMPLE_DIMS)


@dataclass(frozen=True)
class Prediction:
    """Posterior predictive draws and summaries at ``n`` inputs.

    Every draw array leads with ``(chain, draw)``.

    :ivar f: network outputs per draw, ``(chain, draw, n, outputs)``; logits for classifiers.
    :ivar y: one draw of the observation per posterior draw, ``(chain, draw, n[, d])``.
    :ivar mean: posterior predictive mean, ``(n[, d])``; class probabilities ``(n, K)`` for classifiers.
    :ivar epistemic_var: variance over draws of ``E[y | f_s]`` (uncertainty about the function).
    :ivar aleatoric_var: mean over draws of ``Var[y | f_s]`` (noise the model expects).
    :ivar probs: class probabilities per draw ``(chain, draw, n, K)`` for classifiers, else ``None``.
    """

    f: Tensor
    y: Tensor
    mean: Tensor
    epistemic_var: Tensor
    aleatoric_var: Tensor
    probs: Tensor | None = None

    @property
    def variance(self) -> Tensor:
        """Total predictive variance, epistemic plus aleatoric."""
        return self.epistemic_var + self.aleatoric_var

    @property
    def std(self) -> Tensor:
        """Total predictive standard deviation."""
        return self.variance.sqrt()

    @property
    def num_draws(self) -> int:
        return self.y.shape[0] * self.y.shape[1]

    def interval(self, level: float = 0.9) -> tuple[Tensor, Tensor]:
        """Central ``level`` interval of the posterior predictive, from the draws of ``y``."""
        level = check_probability("level", level)
        flat = self.y.reshape((-1,) + self.y.shape[NUM_SAMPLE_DIMS:])
        q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=flat.dtype, device=flat.device)
        lo, hi = torch.quantile(flat, q, dim=0)
        return lo, hi

    def function_interval(self, level: float = 0.9) -> tuple[Tensor, Tensor]:
        """Central ``level`` interval of the predictive mean function ``E[y | f_s]`` (epistemic only)."""
        level = check_probability("level", level)
        flat = self.f.reshape((-1,) + self.f.shape[NUM_SAMPLE_DIMS:])[..., 0]
        q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=flat.dtype, device=flat.device)
        lo, hi = torch.quantile(flat, q, dim=0)
        return lo, hi


def _split(model: BNN, samples: Samples) -> tuple[Samples, Samples]:
    weights = {k: samples[k] for k in model.weight_priors}
    globals_ = {k: samples[k] for k in model.global_priors}
    return weights, globals_


def network_outputs(model: BNN, samples: Samples, x: Tensor) -> Tensor:
    """``f(x; w_s)`` for every draw: ``(chain, draw, n, outputs)``."""
    weights, _ = _split(model, samples)
    with torch.no_grad():
        return model.forward_batched(weights, x, batch_dims=NUM_SAMPLE_DIMS)


def log_likelihood(model: BNN, samples: Samples, x: Tensor, y: Tensor) -> Tensor:
    """Pointwise ``log p(y_i | x_i, theta_s)`` for every draw: ``(chain, draw, n)``."""
    f = network_outputs(model, samples, x)
    _, globals_ = _split(model, samples)
    with torch.no_grad():
        return model.likelihood.distribution(f, globals_).log_prob(y)


def predict(model: BNN, samples: Samples, x: Tensor, *, seed: int) -> Prediction:
    """Posterior predictive at ``x`` from draws shaped ``(chain, draw, ...)``.

    :param int seed: seeds the draws of ``y``; torch's global RNG is left as it was.
    """
    f = network_outputs(model, samples, x)
    _, globals_ = _split(model, samples)
    lik = model.likelihood
    with torch.no_grad(), fork_rng(f.device):
        torch.manual_seed(seed)
        d = lik.distribution(f, globals_)
        y = d.sample()
        cond_mean, cond_var = lik.mean_variance(f, globals_)
    probs = None
    if lik.is_classification:
        probs = lik.class_probs(f)  # type: ignore[attr-defined]
        cond_mean = probs
        cond_var = probs * (1 - probs)
    flat_mean = cond_mean.reshape((-1,) + cond_mean.shape[NUM_SAMPLE_DIMS:])
    flat_var = cond_var.reshape((-1,) + cond_var.shape[NUM_SAMPLE_DIMS:])
    return Prediction(
        f=f,
        y=y,
        mean=flat_mean.mean(0),
        epistemic_var=flat_mean.var(0, unbiased=False),
        aleatoric_var=flat_var.mean(0),
        probs=probs,
    )
