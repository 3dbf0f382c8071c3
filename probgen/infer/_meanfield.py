"""The mean-field ELBO of a BNN evaluated directly in torch: the fast path of ``fit_svi``.

For a :class:`~probgen.models.bnn.BNN` with Normal weight priors and Pyro's ``AutoNormal``
guide, this computes the same estimator as ``pyro.infer.TraceMeanField_ELBO``:

* weight sites: the closed-form KL between the guide's Normal and the Normal prior;
* global sites (such as ``noise_scale``): a one-sample Monte Carlo term
  ``log q(u) - log p(T(u)) - log|dT/du|``, with ``T = biject_to(prior.support)``, because the
  guide lives in the unconstrained space and there is no closed form against the prior;
* the likelihood: one reparameterised draw of the weights, rows subsampled without
  replacement and scaled by N / B, as the data plate does.

It reads the guide's parameters (``locs``/``scales``) and never runs ``poutine.trace``, which
is where Pyro spends most of an SVI step on a small network. ``tests/infer/test_svi.py``
checks that its value and gradient agree in expectation with ``TraceMeanField_ELBO``.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoGuide, AutoNormal
from torch import Tensor
from torch.distributions import biject_to

from probgen._math import normal_kl
from probgen.models.bnn import BNN
from probgen.priors import normal_loc_scale

__all__ = ["applies", "meanfield_loss"]


def applies(model: object, guide: AutoGuide, elbo_name: str) -> bool:
    """Whether the fast path computes exactly the ELBO that was asked for."""
    return (
        isinstance(model, BNN)
        and type(guide) is AutoNormal
        and elbo_name == "meanfield"
        and all(normal_loc_scale(p) is not None for p in model.weight_priors.values())
    )


def meanfield_loss(
    model: BNN,
    guide: AutoNormal,
    x: Tensor,
    y: Tensor,
    *,
    subsample_size: int | None = None,
    num_particles: int = 1,
) -> Tensor:
    """Negative ELBO (nats), averaged over ``num_particles`` draws vectorised in one pass."""
    shape = torch.Size([num_particles])
    kl = x.new_zeros(())
    weights: dict[str, Tensor] = {}
    for name, prior in model.weight_priors.items():
        loc, scale = guide._get_loc_and_scale(name)
        weights[name] = loc + scale * torch.randn(shape + loc.shape, dtype=loc.dtype, device=loc.device)
        normal = normal_loc_scale(prior)
        assert normal is not None  # guaranteed by applies()
        prior_loc, prior_scale = normal
        # the closed-form KL of the guide's Normal against the Normal prior, summed over the weights
        kl = kl + normal_kl(loc, 2.0 * scale.log(), prior_loc, 2.0 * prior_scale.log()).sum()
    globals_: dict[str, Tensor] = {}
    mc_terms = x.new_zeros(shape)
    for name, prior in model.global_priors.items():
        loc, scale = guide._get_loc_and_scale(name)
        q = dist.Normal(loc, scale)
        u = q.rsample(shape)
        transform = biject_to(prior.support)
        value = transform(u)
        log_q = q.log_prob(u).reshape(num_particles, -1).sum(-1)
        log_p = (prior.log_prob(value) + transform.log_abs_det_jacobian(u, value)).reshape(num_particles, -1).sum(-1)
        mc_terms = mc_terms + log_q - log_p
        globals_[name] = value
    n = x.shape[0]
    scale_factor = 1.0
    if subsample_size is not None and subsample_size < n:
        idx = torch.randperm(n)[:subsample_size]
        x, y = x[idx], y[idx]
        scale_factor = n / subsample_size
    if num_particles == 1:  # a plain forward pass; vmap costs more than it saves here
        f = model.forward_with({k: v[0] for k, v in weights.items()}, x)[None]
    else:
        f = model.forward_batched(weights, x, batch_dims=1)
    log_lik = model.likelihood.distribution(f, globals_).log_prob(y).sum(-1)
    return kl + (mc_terms - scale_factor * log_lik).mean()
