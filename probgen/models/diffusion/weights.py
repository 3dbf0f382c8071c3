"""The weights of a Bayesian denoiser: their variational posterior, and the net called with given weights.

A :class:`~probgen.models.diffusion.chain.DiffusionChain` built with ``prior=`` (a
:class:`~probgen.priors.Prior`, e.g. :class:`~probgen.priors.GaussianPrior`) treats the net's parameters
that the prior selects as latent variables ``w``. :class:`MeanFieldWeights` is their variational
posterior ``q(w) = prod_i N(w_i | loc_i, scale_i^2)``: a module whose parameters are the locations and
(softplus-transformed) scales, one pair per Bayesian parameter, named by the parameter's path in the
net (``"blocks.0.1.weight"``). :class:`LowRankWeights` adds a trainable factor ``W`` to the same
diagonal, ``q(w) = N(loc, D^2 + W W^T)``, which correlates the weights of every layer in ``rank``
directions (a chain built with ``posterior_rank=``), at ``rank`` times the memory of the diagonal.

:func:`call_with_weights` runs the net with some of its parameters replaced by given values, through
``torch.func.functional_call``; values with a leading draw dimension ``S`` run the net once per draw,
vectorised with ``torch.func.vmap``. That is how one chain evaluates ``S`` posterior draws (or the ``S``
members of a deep ensemble, whose parameters are stacked the same way) in one call.

References:

[1] C. Blundell, J. Cornebise, K. Kavukcuoglu, D. Wierstra (2015), "Weight Uncertainty in Neural
    Networks", ICML (the mean-field Gaussian posterior over weights, trained by the ELBO).
[2] A. Y. K. Foong, Y. Li, J. M. Hernandez-Lobato, R. E. Turner (2019), "'In-Between' Uncertainty in
    Bayesian Neural Networks", ICML Workshop on Uncertainty and Robustness in Deep Learning (what the
    mean-field posterior misses between clusters of data).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from probgen._validate import check_positive_float, check_positive_int
from probgen.priors import normal_loc_scale

__all__ = ["WEIGHT_INIT_SCALE", "LowRankWeights", "MeanFieldWeights", "call_with_weights", "check_rank", "check_weights"]

#: The initial standard deviation of :class:`MeanFieldWeights`: small, so that training starts near the
#: point estimate and the denoiser learns the data before the KL term spreads its weights (the same
#: reasoning as :data:`probgen.infer.svi.BNN_INIT_SCALE`). Measured on 8 gaussians
#: (``benchmarks/bayesian_diffusion.py --init-scales 1e-4,1e-3,1e-2,0.1``, 3000 steps, width 128, point
#: chain's test bound 3.35 nats): with every weight Bayesian the test bound plus KL/N was 9.3, 5.3, 5.2
#: and 6.0 nats (1e-4 leaves the KL huge, the scales grow too slowly from there; 0.1 drowns the denoiser
#: in weight noise, +1.6 nats of bound); with the last layer only it was 3.41, 3.41, 3.47 and 3.67.
WEIGHT_INIT_SCALE = 1e-3


def _inverse_softplus(value: Tensor) -> Tensor:
    """``x`` with ``softplus(x) = value`` (``value > 0``), accurate for small values."""
    return value + torch.log(-torch.expm1(-value))


class MeanFieldWeights(nn.Module):
    """The mean-field Normal posterior ``q(w) = prod_i N(loc_i, scale_i^2)`` over a net's Bayesian parameters.

    One location and one scale per scalar, both trainable, kept as two flat vectors (``loc`` and
    ``unconstrained_scale``, every parameter's entries in the order of :attr:`names`) so that a draw,
    its KL and Adam's step are a few vectorised operations whatever the number of layers; per-parameter
    views come from :meth:`locs`, :meth:`scales` and the draws. ``scale = softplus(unconstrained_scale)``,
    as in Pyro's ``AutoNormal``. The locations start at the given values (the net's initial weights)
    and the scales at ``init_scale``.

    :param params: the starting locations, by parameter path (``dict(net.named_parameters())``
        restricted to the Bayesian ones); may be empty, when a prior keeps every parameter deterministic.
    :param float init_scale: the initial standard deviation of every weight.
    :raises ValueError: for a non-positive ``init_scale``.

    Example::

        >>> posterior = MeanFieldWeights({"weight": torch.zeros(3, 2)}, init_scale=0.1)
        >>> draws = posterior.sample(5, torch.Generator().manual_seed(0))
        >>> draws["weight"].shape, round(float(posterior.scales()["weight"][0, 0].detach()), 6)
        (torch.Size([5, 3, 2]), 0.1)
    """

    def __init__(self, params: Mapping[str, Tensor], *, init_scale: float = WEIGHT_INIT_SCALE) -> None:
        super().__init__()
        init_scale = check_positive_float("init_scale", init_scale)
        #: The paths of the Bayesian parameters, in the net's order.
        self.names: tuple[str, ...] = tuple(params)
        #: Their shapes.
        self.shapes: tuple[torch.Size, ...] = tuple(torch.as_tensor(value).shape for value in params.values())
        self.init_scale = init_scale
        values = [torch.as_tensor(value).detach().reshape(-1) for value in params.values()]
        flat = torch.cat(values) if values else torch.zeros(0)
        self.loc = nn.Parameter(flat.clone())
        self.unconstrained_scale = nn.Parameter(_inverse_softplus(torch.full_like(flat, init_scale)))
        self._sizes = [int(value.numel()) for value in values]
        self._prior_moments: tuple[Any, Tensor, Tensor] | None = None

    def __repr__(self) -> str:
        return f"MeanFieldWeights({len(self.names)} parameters, {self.num_weights} weights)"

    @property
    def num_weights(self) -> int:
        """The number of Bayesian scalars."""
        return int(self.loc.numel())

    def _unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """``flat`` ``(*lead, num_weights)`` as views ``(*lead, *shape)``, by parameter path."""
        lead = flat.shape[:-1]
        pieces = flat.split(self._sizes, dim=-1)
        return {
            name: piece.reshape(tuple(lead) + tuple(shape))
            for name, shape, piece in zip(self.names, self.shapes, pieces, strict=True)
        }

    def locs(self) -> dict[str, Tensor]:
        """The posterior means, by parameter path (views of the trainable vector)."""
        return self._unflatten(self.loc)

    def scales(self) -> dict[str, Tensor]:
        """The posterior standard deviations, by parameter path."""
        return self._unflatten(F.softplus(self.unconstrained_scale))

    def mean(self) -> dict[str, Tensor]:
        """The posterior means as plain tensors (detached copies)."""
        return {name: loc.detach().clone() for name, loc in self.locs().items()}

    def distributions(self) -> dict[str, dist.TorchDistribution]:
        """``q(w_i)`` of every Bayesian parameter, ``Normal(loc, scale).to_event(dim)``, by parameter path."""
        return {
            name: dist.Normal(loc, scale).to_event(loc.dim())
            for (name, loc), scale in zip(self.locs().items(), self.scales().values(), strict=True)
        }

    def rsample(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """One reparameterised draw ``loc + scale * eps``, differentiable in the locations and scales.

        :param generator: the torch generator for ``eps``; torch's global one if ``None``.
        """
        eps = torch.randn(self.loc.shape, dtype=self.loc.dtype, device=self.loc.device, generator=generator)
        return self._unflatten(self.loc + F.softplus(self.unconstrained_scale) * eps)

    def sample(self, num_draws: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``num_draws`` independent draws of every Bayesian parameter, stacked: ``(num_draws, *shape)``.

        The draws carry no gradient. Pass them as ``weights=`` to the chain's methods (all draws at
        once), or one at a time (``{name: value[s] for ...}``) to
        :meth:`~probgen.models.diffusion.DiffusionChain.with_weights`.

        :param int num_draws: how many draws.
        :param generator: the torch generator; torch's global one if ``None``.
        :raises ValueError: for a non-positive ``num_draws``.
        """
        num_draws = check_positive_int("num_draws", num_draws)
        with torch.no_grad():
            shape = (num_draws, self.num_weights)
            eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device, generator=generator)
            flat = self.loc + F.softplus(self.unconstrained_scale) * eps
        return {name: value.clone() for name, value in self._unflatten(flat).items()}

    def _normal_prior(self, priors: Mapping[str, dist.TorchDistribution]) -> tuple[Tensor, Tensor] | None:
        """The priors' locations and scales as flat vectors if every one is a Normal, else ``None`` (cached)."""
        cached = self._prior_moments
        if cached is not None and cached[0] is priors:
            return cached[1], cached[2]
        moments = [normal_loc_scale(priors[name]) for name in self.names]
        if any(m is None for m in moments):
            return None
        locs = [m[0].reshape(-1) for m in moments if m is not None]
        scales = [m[1].reshape(-1) for m in moments if m is not None]
        loc = torch.cat(locs).to(self.loc) if locs else torch.zeros_like(self.loc)
        scale = torch.cat(scales).to(self.loc) if scales else torch.ones_like(self.loc)
        self._prior_moments = (priors, loc, scale)  # keyed on the mapping itself, which it keeps alive
        return loc, scale

    def kl(self, priors: Mapping[str, dist.TorchDistribution], draw: Mapping[str, Tensor] | None = None) -> Tensor:
        """``KL(q(w) || p(w))`` in nats, summed over every Bayesian parameter.

        In closed form for Normal priors (what :class:`~probgen.priors.GaussianPrior` gives, and what
        :class:`pyro.infer.TraceMeanField_ELBO` computes for these sites); for any other prior the
        single-draw Monte Carlo estimate ``log q(w) - log p(w)`` at ``draw``, again as Pyro does.

        :param priors: ``p(w_i)`` by parameter path (``chain.weight_priors()``).
        :param draw: the draw for the Monte Carlo terms (needed only for non-Normal priors).
        :raises ValueError: for priors of other parameters, or a non-Normal prior without ``draw``.
        """
        if set(priors) != set(self.names):
            raise ValueError(
                f"priors are given for {sorted(priors)}, but the posterior is over {sorted(self.names)}; "
                "pass chain.weight_priors()."
            )
        normal = self._normal_prior(priors)
        if normal is not None:
            prior_loc, prior_scale = normal
            scale = F.softplus(self.unconstrained_scale)
            # KL(N(m, s^2) || N(m0, s0^2)) = log(s0 / s) + (s^2 + (m - m0)^2) / (2 s0^2) - 1/2, per weight
            ratio = scale / prior_scale
            kl = -torch.log(ratio) + 0.5 * (ratio**2 + ((self.loc - prior_loc) / prior_scale) ** 2) - 0.5
            return kl.sum()
        if draw is None:
            raise ValueError("a prior here is not a Normal, so the KL is a Monte Carlo estimate; pass draw=.")
        total = torch.zeros((), dtype=self.loc.dtype, device=self.loc.device)
        for (name, loc), scale in zip(self.locs().items(), self.scales().values(), strict=True):
            p = priors[name]
            moments = normal_loc_scale(p)
            if moments is not None:
                q = torch.distributions.Normal(loc, scale)
                term = torch.distributions.kl_divergence(q, torch.distributions.Normal(*moments)).sum()
            else:
                term = dist.Normal(loc, scale).to_event(loc.dim()).log_prob(draw[name]) - p.log_prob(draw[name])
            total = total + term
        return total


def check_rank(name: str, rank: Any, num_weights: int) -> int:
    """Check that ``rank`` is a positive int at most ``num_weights``, naming it ``name`` in the error.

    :raises TypeError: for a ``rank`` that is not an int.
    :raises ValueError: for a non-positive ``rank``, or one above the number of Bayesian weights.
    """
    rank = check_positive_int(name, rank)
    if rank > num_weights:
        raise ValueError(
            f"{name} must be at most the number of Bayesian weights ({num_weights}), got {rank}; a rank-r factor "
            "over n weights needs r <= n (r = n is already a full covariance), so lower it or make more weights Bayesian."
        )
    return rank


class LowRankWeights(MeanFieldWeights):
    """The low-rank-plus-diagonal Normal posterior ``q(w) = N(loc, D^2 + W W^T)`` over a net's Bayesian parameters.

    ``D = softplus(unconstrained_scale)`` is the diagonal of :class:`MeanFieldWeights`, and the factor
    :attr:`cov_factor` ``W`` of shape ``(num_weights, rank)`` adds ``rank`` directions of
    correlated uncertainty across *all* the Bayesian weights, whatever layer they belong to, as Pyro's
    :class:`~pyro.infer.autoguide.AutoLowRankMultivariateNormal` does over a model's whole latent
    vector. Mean-field VI cannot put weights' errors in step with one another, and so underestimates
    the uncertainty between separated clusters of data ([2]); the factor is what a small Bayesian head
    can afford in full (``rank = num_weights`` is a full covariance). Memory and time grow as
    ``num_weights * rank``: the ``n x n`` covariance is never formed.

    As in Pyro's guide, the trainable parameter is the factor *relative to the diagonal*,
    ``relative_factor`` ``C`` with ``W = D C`` (row ``i`` of ``C`` times ``D_i``), so that
    ``Sigma = D (I + C C^T) D``. Adam moves every entry by about its learning rate per step, so on
    ``W`` itself, whose entries start near ``init_scale / sqrt(2 rank)`` (0.009 at ``init_scale`` 0.05
    and rank 16), a step of lr 2e-3 is a 20% change: on the gap toy of
    ``benchmarks/bayesian_diffusion_toys.py`` (all weights Bayesian, 3000 steps) the factor came to
    hold 96% of the marginal variance, the marginal sds went from 0.05 to 0.3, and the denoiser's
    draws exploded (epistemic variances of 1e14 and more). On ``C``, whose entries are about
    ``1 / sqrt(rank)``, a step changes ``W`` relatively about as little as a step of
    ``unconstrained_scale`` changes ``D``.

    A draw is ``loc + W eps_1 + D eps_2`` with ``eps_1 ~ N(0, I_rank)`` and ``eps_2 ~ N(0, I_n)``; the
    KL against Normal priors is in closed form through the matrix determinant lemma. The weights of
    different parameters are correlated, so there is no per-parameter ``q(w_i)``: :meth:`joint` is the
    distribution of the flat vector, and :meth:`distributions` refuses. A Pyro guide draws the flat
    vector once (an auxiliary site) and hands each parameter its piece through a ``Delta`` site, as
    :meth:`~probgen.models.diffusion.DiffusionChain.guide` does.

    :param params: the starting locations, by parameter path, as for :class:`MeanFieldWeights`.
    :param float init_scale: the initial marginal standard deviation of every weight.
    :param int rank: the number of columns of ``W``, from 1 to the number of Bayesian weights.
    :param generator: the torch generator for ``W``'s random start; torch's global one if ``None``.
    :raises ValueError: for a non-positive ``init_scale``, or a ``rank`` that is not in ``1..num_weights``.
    :raises TypeError: for a ``rank`` that is not an int.

    References:

    [1] D. Rezende, S. Mohamed, D. Wierstra (2014), "Stochastic Backpropagation and Approximate
        Inference in Deep Generative Models", ICML, Section 4.3 (the factor-plus-diagonal covariance).
    [2] A. Y. K. Foong, Y. Li, J. M. Hernandez-Lobato, R. E. Turner (2019), "'In-Between' Uncertainty
        in Bayesian Neural Networks", ICML Workshop on Uncertainty and Robustness in Deep Learning.

    Example::

        >>> posterior = LowRankWeights({"weight": torch.zeros(3, 2), "bias": torch.zeros(3)}, init_scale=0.1, rank=2)
        >>> posterior, tuple(posterior.relative_factor.shape)
        (LowRankWeights(2 parameters, 9 weights, rank 2), (9, 2))
        >>> round(float(posterior.scales()["weight"][0, 0].detach()), 6)  # the marginal sd starts at init_scale
        0.1
        >>> posterior.joint().event_shape, posterior.sample(5)["bias"].shape
        (torch.Size([9]), torch.Size([5, 3]))
    """

    def __init__(
        self,
        params: Mapping[str, Tensor],
        *,
        init_scale: float = WEIGHT_INIT_SCALE,
        rank: int,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(params, init_scale=init_scale)
        self.rank = check_rank("rank", rank, self.num_weights)
        # W = 0 is a stationary point of the ELBO (the KL's gradient in W is Sigma^-1 W and the data
        # term's is H W), so the factor starts random and small. As in AutoLowRankMultivariateNormal,
        # half of each weight's initial variance goes to the diagonal and half to the factor: D^2 =
        # init_scale^2 / 2 and every row of C a random unit vector, so W's rows have length
        # init_scale / sqrt(2). Rows of exactly unit length (not Pyro's on average) start every marginal
        # sd at init_scale, as in the mean-field posterior, so the two start equally close to the point
        # estimate; the correlations start random, |rho| about 0.5 / sqrt(rank).
        half = init_scale / math.sqrt(2.0)
        with torch.no_grad():
            self.unconstrained_scale.copy_(_inverse_softplus(torch.full_like(self.loc, half)))
        shape = (self.num_weights, self.rank)
        direction = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device, generator=generator)
        direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(direction.dtype).tiny)
        #: The factor relative to the diagonal, ``C`` ``(num_weights, rank)``: ``W = D C``.
        self.relative_factor = nn.Parameter(direction)

    @property
    def cov_factor(self) -> Tensor:
        """The factor ``W = D C`` ``(num_weights, rank)`` of the covariance ``D^2 + W W^T`` (differentiable)."""
        return F.softplus(self.unconstrained_scale).unsqueeze(-1) * self.relative_factor

    def __repr__(self) -> str:
        return f"LowRankWeights({len(self.names)} parameters, {self.num_weights} weights, rank {self.rank})"

    def _draw(self, eps: Tensor) -> Tensor:
        """``loc + W eps_1 + D eps_2`` for ``eps = [eps_1, eps_2]`` of shape ``(*lead, rank + num_weights)``."""
        eps_factor, eps_diag = eps.split([self.rank, self.num_weights], dim=-1)
        # W eps_1 + D eps_2 = D (C eps_1 + eps_2)
        return self.loc + F.softplus(self.unconstrained_scale) * (eps_factor @ self.relative_factor.T + eps_diag)

    def scales(self) -> dict[str, Tensor]:
        """The posterior's marginal standard deviations ``sqrt(D^2 + rowsum(W^2))``, by parameter path."""
        variance = F.softplus(self.unconstrained_scale) ** 2 * (1.0 + self.relative_factor.pow(2).sum(-1))
        return self._unflatten(variance.sqrt())

    def joint(self) -> dist.LowRankMultivariateNormal:
        """``q(w)`` of the flat vector of every Bayesian weight, ``LowRankMultivariateNormal(loc, W, D^2)``.

        The vector holds every parameter's entries in the order of :attr:`names` (:meth:`split` cuts a
        draw into parameters); this is the guide's auxiliary site.
        """
        return dist.LowRankMultivariateNormal(self.loc, self.cov_factor, F.softplus(self.unconstrained_scale) ** 2)

    def split(self, flat: Tensor) -> dict[str, Tensor]:
        """A draw of :meth:`joint`, ``(*lead, num_weights)``, as views ``(*lead, *shape)`` by parameter path."""
        return self._unflatten(flat)

    def distributions(self) -> dict[str, dist.TorchDistribution]:
        """Refused: the weights of different parameters are correlated, so ``q`` has no per-parameter factors.

        Independent marginals in their place would make a guide (and its ELBO) mean-field without a
        word. Use :meth:`joint` for ``q(w)``, or :meth:`locs` and :meth:`scales` for the marginals.

        :raises NotImplementedError: always.
        """
        raise NotImplementedError(
            "a LowRankWeights posterior correlates the weights of different parameters, so it has no per-parameter "
            "distributions; sample the flat vector from joint() once and split it (DiffusionChain.guide does, with an "
            "auxiliary site and one Delta site per parameter), or read the marginals from locs() and scales()."
        )

    def rsample(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """One reparameterised draw ``loc + W eps_1 + D eps_2``, differentiable in ``loc``, ``W`` and ``D``.

        :param generator: the torch generator for the noise; torch's global one if ``None``.
        """
        shape = (self.rank + self.num_weights,)
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device, generator=generator)
        return self._unflatten(self._draw(eps))

    def sample(self, num_draws: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``num_draws`` independent draws of every Bayesian parameter, stacked: ``(num_draws, *shape)``.

        The draws carry no gradient; use them as those of :meth:`MeanFieldWeights.sample`.

        :param int num_draws: how many draws.
        :param generator: the torch generator; torch's global one if ``None``.
        :raises ValueError: for a non-positive ``num_draws``.
        """
        num_draws = check_positive_int("num_draws", num_draws)
        with torch.no_grad():
            shape = (num_draws, self.rank + self.num_weights)
            flat = self._draw(torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device, generator=generator))
        return {name: value.clone() for name, value in self._unflatten(flat).items()}

    def _flatten(self, draw: Mapping[str, Tensor]) -> Tensor:
        """The inverse of :meth:`_unflatten`: values ``(*lead, *shape)`` by path as one ``(*lead, num_weights)``."""
        pieces = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            value = draw[name]
            pieces.append(value.reshape(value.shape[: value.dim() - len(shape)] + (-1,)))
        return torch.cat(pieces, dim=-1)

    def kl(self, priors: Mapping[str, dist.TorchDistribution], draw: Mapping[str, Tensor] | None = None) -> Tensor:
        """``KL(q(w) || p(w))`` in nats, over every Bayesian weight together.

        In closed form when every prior is a Normal (independent, ``S_0 = diag(s_0^2)``), the KL of two
        multivariate Normals,

            ``0.5 [tr(S_0^-1 Sigma) + (m - m_0)^T S_0^-1 (m - m_0) - n + log det S_0 - log det Sigma]``,

        with ``tr(S_0^-1 Sigma) = sum_i (D_i^2 + sum_k W_ik^2) / s_0i^2`` and, by the matrix determinant
        lemma, ``log det Sigma = sum_i log D_i^2 + log det(I_rank + W^T D^-2 W)``: ``O(n rank^2)``, never
        the ``n x n`` matrix. With any other prior, the single-draw Monte Carlo estimate
        ``log q(w) - log p(w)`` at ``draw`` (as :class:`pyro.infer.Trace_ELBO` has it); ``q`` does not
        factorise, so no prior's term can be taken in closed form alone.

        :param priors: ``p(w_i)`` by parameter path (``chain.weight_priors()``).
        :param draw: the draw for the Monte Carlo estimate (needed only for non-Normal priors).
        :raises ValueError: for priors of other parameters, or a non-Normal prior without ``draw``.
        """
        if set(priors) != set(self.names):
            raise ValueError(
                f"priors are given for {sorted(priors)}, but the posterior is over {sorted(self.names)}; "
                "pass chain.weight_priors()."
            )
        diag = F.softplus(self.unconstrained_scale) ** 2
        normal = self._normal_prior(priors)
        if normal is not None:
            prior_loc, prior_scale = normal
            prior_var = prior_scale**2
            trace = (diag * (1.0 + self.relative_factor.pow(2).sum(-1)) / prior_var).sum()
            mahalanobis = ((self.loc - prior_loc) ** 2 / prior_var).sum()
            # matrix determinant lemma: det(D^2 + W W^T) = det(D^2) det(I + W^T D^-2 W), and D^-1 W = C
            factor = self.relative_factor
            capacitance = torch.eye(self.rank, dtype=self.loc.dtype, device=self.loc.device) + factor.T @ factor
            log_det = diag.log().sum() + 2.0 * torch.linalg.cholesky(capacitance).diagonal().log().sum()
            return 0.5 * (trace + mahalanobis - self.num_weights + prior_var.log().sum() - log_det)
        if draw is None:
            raise ValueError("a prior here is not a Normal, so the KL is a Monte Carlo estimate; pass draw=.")
        q = torch.distributions.LowRankMultivariateNormal(self.loc, self.cov_factor, diag)
        start = torch.zeros((), dtype=self.loc.dtype, device=self.loc.device)
        log_p = sum((priors[name].log_prob(draw[name]) for name in self.names), start)
        return q.log_prob(self._flatten(draw)) - log_p


def check_weights(net: nn.Module, weights: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``weights`` checked against ``net``: every key a parameter or buffer path, every value ending in its shape.

    All values must carry the same leading (draw) dimensions.

    :raises ValueError: for an unknown name, a wrong shape, or values with different leading dimensions.
    :raises TypeError: for a value that is not a tensor.
    """
    known: dict[str, Tensor] = dict(net.named_parameters())
    known.update(dict(net.named_buffers()))
    leads = set()
    for name, value in weights.items():
        if name not in known:
            raise ValueError(
                f"weights names {name!r}, which is not a parameter of the net ({type(net).__name__}); "
                f"its parameters are {', '.join(list(known)[:6])}{', ...' if len(known) > 6 else ''}."
            )
        if not isinstance(value, Tensor):
            raise TypeError(f"weights[{name!r}] must be a tensor, got {type(value).__name__}.")
        shape = tuple(known[name].shape)
        if value.dim() < len(shape) or tuple(value.shape[value.dim() - len(shape) :]) != shape:
            raise ValueError(
                f"weights[{name!r}] has shape {tuple(value.shape)}, but the parameter has shape {shape}; "
                "give one draw of that shape, or draws stacked along a leading dimension."
            )
        leads.add(tuple(value.shape[: value.dim() - len(shape)]))
    if len(leads) > 1:
        raise ValueError(
            f"the weights carry different leading (draw) dimensions: {sorted(leads)}; stack the same draws of each."
        )
    return dict(weights)


def _draw_dims(weights: Mapping[str, Tensor], shapes: Mapping[str, torch.Size]) -> tuple[int, ...]:
    name = next(iter(weights))
    value = weights[name]
    return tuple(value.shape[: value.dim() - len(shapes[name])])


def call_with_weights(
    net: nn.Module,
    weights: Mapping[str, Tensor],
    x: Tensor,
    t: Tensor,
    condition: Tensor | None,
    *,
    event_dim: int,
    labels: bool,
) -> Tensor:
    """``net(x, t[, condition])`` with the parameters named in ``weights`` replaced by their values.

    One draw (values shaped like the parameters) is a single ``functional_call``. Draws stacked along
    leading dimensions follow ``x``'s batch dimensions *from the left*, as Pyro lays out vectorised
    particles: values of shape ``(S, 1, ..., *shape)`` or ``(S, *shape)`` go with ``x`` of shape
    ``(S, *batch, *event)``, draw ``s`` with ``x[s]``, vectorised by ``torch.func.vmap`` (an ``x`` with a
    leading 1 is broadcast). Only the first draw dimension may exceed 1.

    :param Tensor t: steps of ``x``'s batch shape.
    :param condition: the condition, broadcast to ``t``'s shape (class labels) or ``(*t.shape, k)``.
    :param int event_dim: the number of event dimensions of ``x``.
    :param bool labels: whether the condition holds class labels (no trailing feature dimension).
    :raises ValueError: for draw dimensions that do not line up with ``x``.
    """
    shapes = {name: _param_shape(net, name) for name in weights}
    lead = _draw_dims(weights, shapes) if weights else ()
    batch = x.shape[: x.dim() - event_dim]
    spread = [i for i, size in enumerate(lead) if size != 1]
    if not spread:  # one draw, possibly with size-1 leading dims (a Pyro particle plate of size 1)
        flat = {name: value.reshape(shapes[name]) for name, value in weights.items()}
        return _call(net, flat, x, t, condition, labels)
    if spread != [0] or len(lead) > len(batch):
        raise ValueError(
            f"the weights' draw dimensions {lead} must line up with the leading batch dimensions of x_t "
            f"{tuple(batch)}, only the first of them larger than 1."
        )
    num_draws = lead[0]
    if batch[0] not in (1, num_draws):
        raise ValueError(
            f"the weights hold {num_draws} draws, but x_t's leading dimension is {batch[0]}; give x_t the shape "
            f"({num_draws}, ...), one slice per draw."
        )
    stacked = {name: value.reshape(num_draws, *shapes[name]) for name, value in weights.items()}
    xs = x.expand(num_draws, *x.shape[1:])
    ts = t.expand(num_draws, *t.shape[1:])
    per_draw = _per_draw_condition(condition, num_draws, len(batch), labels)
    if condition is not None and per_draw is None:  # a condition that differs between draws: one call each
        rows = [
            _call(net, {k: v[s] for k, v in stacked.items()}, xs[s], ts[s], condition[s], labels)
            for s in range(num_draws)
        ]
        return torch.stack(rows)

    def one(draw: dict[str, Tensor], x_s: Tensor, t_s: Tensor) -> Tensor:
        return _call(net, draw, x_s, t_s, per_draw, labels)

    return vmap(one)(stacked, xs, ts)


def _param_shape(net: nn.Module, name: str) -> torch.Size:
    try:
        return net.get_parameter(name).shape
    except AttributeError:
        return net.get_buffer(name).shape


def _per_draw_condition(condition: Tensor | None, num_draws: int, batch_len: int, labels: bool) -> Tensor | None:
    """The condition one draw sees, when every draw sees the same one (else ``None``)."""
    if condition is None:
        return None
    rows = condition.dim() - (0 if labels else 1)
    if rows < batch_len:  # it has no draw dim: every draw sees it whole
        return condition
    if condition.shape[0] == 1 or condition.stride(0) == 0 or num_draws == 1:
        return condition[0]
    return None


def _call(
    net: nn.Module, params: Mapping[str, Tensor], x: Tensor, t: Tensor, condition: Tensor | None, labels: bool
) -> Tensor:
    if condition is None:
        return functional_call(net, dict(params), (x, t))
    shape = t.shape if labels else t.shape + condition.shape[-1:]
    return functional_call(net, dict(params), (x, t, condition.expand(shape)))

