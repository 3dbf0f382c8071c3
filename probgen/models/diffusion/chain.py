"""A diffusion model as a Pyro latent-variable chain: the reverse chain is the model, the noising process the guide.

The generative model is the reverse Markov chain

    p(x_T) prod_{t=2}^T p_theta(x_{t-1} | x_t) p_theta(x_0 | x_1),   p(x_T) = N(0, I),

with one ``pyro.sample`` site ``"x_t"`` per step, and the variational posterior is the fixed noising
process ``q(x_{1:T} | x_0)``. :meth:`DiffusionChain.guide` writes ``q`` in *posterior order*,

    q(x_T | x_0) prod_{t=2}^T q(x_{t-1} | x_t, x_0),

which is the same joint distribution as the forward chain ``prod_t q(x_t | x_{t-1})`` ([1] eq. 5-7),
but visits the sites in the model's order, each conditioned on the site the model conditions on.
Then the per-site analytic KL that :class:`pyro.infer.TraceMeanField_ELBO` substitutes is
``KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))`` at the sampled ``x_t``, and the ELBO it
estimates is exactly the DDPM bound ``-(L_T + sum_{t=2}^T L_{t-1} + L_0)`` of [1] eq. 5. Written in
forward order (:meth:`DiffusionChain.forward_guide`) the same joint is correct for
:class:`pyro.infer.Trace_ELBO`, but the analytic-KL estimator is then wrong, because each guide
site's KL is taken against a model conditional whose parent is drawn *after* it.

One implementation serves every data shape: the chain broadcasts over ``event_shape``, so the same
code runs 2-D points, vectors and ``(1, 8, 8)`` images. Step indices ``t`` follow the papers,
``1..T``; the :class:`~probgen.models.diffusion.schedules.Schedule` stores step ``t`` at index ``t - 1``.

A chain whose network is conditional (built with ``num_classes=`` or ``cond_dim=``) models
``p_theta(x_0 | c)``: every method that calls the network takes ``condition=``, class labels ``(N,)`` or
covariates ``(N, k)``, one row per row of the data (or a single row for all), and passes it to every
reverse step, ``p_theta(x_{t-1} | x_t, c)``. The guide ``q`` does not depend on ``c``, so the bound is
the DDPM bound on ``-log p_theta(x_0 | c)``. This gives class-conditional generation and, with
covariates ``x`` and data ``y``, "diffusion regression" ``p(y | x)``.

A chain built with ``prior=`` (a :class:`~probgen.priors.Prior` such as
:class:`~probgen.priors.GaussianPrior`) has a *Bayesian denoiser*: the net's parameters that the prior
selects are latent variables ``w``, and the rest stay point estimates (``GaussianPrior(deterministic=...)``
keeps module paths out, so "last layer only" and "all weights" are one argument). The model is then

    p(w) prod_{i=1}^N p(x_T^i) prod_t p_w(x_{t-1}^i | x_t^i) p_w(x_0^i | x_1^i),

one sample site per Bayesian parameter, named by its path in the net (``"blocks.0.1.weight"``) and
drawn *once*, outside the plate ``"data"`` that holds every data point's reverse chain; the guide is
``q(w)``, a mean-field Normal (:class:`~probgen.models.diffusion.weights.MeanFieldWeights`, the chain's
:attr:`~DiffusionChain.weight_posterior`), times the noising process in posterior order in the same
plate. :class:`pyro.infer.TraceMeanField_ELBO` on the pair is the ELBO on ``log p(x_0^{1:N})`` with
``KL(q(w) || p(w))`` counted once; with ``subsample_size=B`` the plate scales each data term by
``N / B``, so a minibatch estimate needs no hand-written factor ([4]). With ``posterior_rank=r``,
``q(w)`` is instead a Normal whose covariance is diagonal plus rank ``r``
(:class:`~probgen.models.diffusion.weights.LowRankWeights`), which correlates all the Bayesian weights;
the guide then draws the flat weight vector once, at an auxiliary site ``"_weights"``, and gives each
parameter's site its piece as a ``Delta``, as :class:`pyro.infer.autoguide.AutoLowRankMultivariateNormal`
does, so :class:`pyro.infer.Trace_ELBO` (and ``TraceMeanField_ELBO``) on the pair is again the ELBO.

References:

[1] J. Ho, A. Jain, P. Abbeel (2020), "Denoising Diffusion Probabilistic Models", NeurIPS.
[2] J. Sohl-Dickstein, E. Weiss, N. Maheswaranathan, S. Ganguli (2015), "Deep Unsupervised Learning
    using Nonequilibrium Thermodynamics", ICML.
[3] A. Nichol, P. Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models", ICML.
[4] C. Blundell, J. Cornebise, K. Kavukcuoglu, D. Wierstra (2015), "Weight Uncertainty in Neural
    Networks", ICML, Section 3.4 (minibatches and the KL term).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple, cast, get_args

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from probgen._device import check_device
from probgen._math import normal_kl
from probgen._types import DeviceLike
from probgen._validate import as_tensor, check_choice, check_positive_int
from probgen.models.diffusion._util import check_condition, check_condition_options, sum_event
from probgen.models.diffusion.decoders import Decoder, GaussianDecoder
from probgen.models.diffusion.networks import MeanShiftDenoiser
from probgen.models.diffusion.schedules import Schedule
from probgen.models.diffusion.weights import (
    WEIGHT_INIT_SCALE,
    LowRankWeights,
    MeanFieldWeights,
    call_with_weights,
    check_rank,
    check_weights,
)
from probgen.priors import Prior

__all__ = [
    "PREDICTIONS",
    "VARIANCES",
    "DiffusionChain",
    "PMeanVariance",
    "Prediction",
    "Variance",
]

Variance = Literal["fixed_small", "fixed_large"]
#: Reverse-variance choices, in the order of :data:`Variance`.
VARIANCES: tuple[Variance, ...] = get_args(Variance)
Prediction = Literal["epsilon", "x0"]
#: What the network predicts, in the order of :data:`Prediction`.
PREDICTIONS: tuple[Prediction, ...] = get_args(Prediction)

class PMeanVariance(NamedTuple):
    """The reverse step ``p_theta(x_{t-1} | x_t)`` at given ``x_t`` and ``t``, with the net's predictions.

    :ivar Tensor mean: ``mu_theta(x_t, t)``, shape of ``x_t``.
    :ivar Tensor variance: ``sigma_t^2``, broadcastable to ``x_t``.
    :ivar Tensor log_variance: ``log sigma_t^2``, broadcastable to ``x_t``.
    :ivar Tensor pred_x0: the implied prediction of ``x_0``.
    :ivar Tensor pred_eps: the implied prediction of the noise ``epsilon``.
    """

    mean: Tensor
    variance: Tensor
    log_variance: Tensor
    pred_x0: Tensor
    pred_eps: Tensor


class DiffusionChain:
    """A denoising diffusion model ([1], [2]) as a pair of Pyro programs, :meth:`model` and :meth:`guide`.

    The chain holds a denoising network, a :class:`~probgen.models.diffusion.schedules.Schedule` and a
    :class:`~probgen.models.diffusion.decoders.Decoder`, and no inference state. It provides the paper's
    building blocks (:meth:`q_sample`, :meth:`q_posterior`, :meth:`p_mean_variance`, :meth:`p_sample`), the closed-form
    terms of the bound (:meth:`prior_kl`, :meth:`vlb_term`), and the Pyro callables.

    :param nn.Module net: a denoiser ``net(x_t, t)`` returning a tensor shaped like ``x_t``; ``t`` is a
        ``torch.long`` tensor of the batch shape with values in ``1..T``. A conditional denoiser is
        called as ``net(x_t, t, c)`` and says what it is conditioned on with an attribute ``num_classes``
        (class labels ``c`` of the batch shape) or ``cond_dim`` (covariates ``c``, ``(*batch, cond_dim)``),
        as :class:`~probgen.models.diffusion.networks.MLPDenoiser` does; the chain reads them into
        :attr:`num_classes` and :attr:`cond_dim`.
    :param Schedule schedule: the noise schedule, e.g. ``get_schedule("cosine", 100)``.
    :param event_shape: the shape of one data point, e.g. ``(2,)`` or ``(1, 8, 8)``.
    :param Decoder decoder: ``p(x_0 | x_1)``; defaults to
        :class:`~probgen.models.diffusion.decoders.GaussianDecoder`. Use
        :class:`~probgen.models.diffusion.decoders.DiscretizedGaussianDecoder` for quantised data.
    :param str variance: the reverse variances ``sigma_t^2`` ([1] Section 3.2): ``"fixed_large"`` is
        ``beta_t`` (the default), ``"fixed_small"`` is ``beta~_t`` (with ``beta~_1`` replaced by ``beta~_2``,
        [3]). For data that are smooth on the scale of the first noise levels the true reverse
        variance is close to ``beta_t``, and ``"fixed_small"`` pays about ``(beta_2 / beta_1) / 2`` nats
        per dimension in ``L_1`` (5 nats on 2-D data with the linear schedule at ``T = 50``), so the
        default is ``"fixed_large"``; DDIM with ``eta = 1`` reproduces the ``"fixed_small"`` chain.
    :param str prediction: what ``net`` predicts: ``"epsilon"`` ([1] eq. 11) or ``"x0"``.
    :param prior: a :class:`~probgen.priors.Prior` over the net's parameters, which makes the denoiser
        Bayesian (see the module docstring); ``None`` (the default) for point estimates. The net's own
        values of the Bayesian parameters start the posterior's locations; the Pyro programs never use
        them otherwise, and :func:`~probgen.infer.diffusion.fit_diffusion` sets them to the posterior
        means. A prior that keeps every parameter deterministic gives a chain equal to the point chain.
    :param init_scale: the initial standard deviation of the weight posterior ``q(w)``; with ``prior``
        only; :data:`~probgen.models.diffusion.weights.WEIGHT_INIT_SCALE` by default.
    :param posterior_rank: with ``prior`` only: ``None`` (the default) for the mean-field ``q(w)``
        (:class:`~probgen.models.diffusion.weights.MeanFieldWeights`), or the rank of the covariance
        factor of a :class:`~probgen.models.diffusion.weights.LowRankWeights` posterior, from 1 to the
        number of Bayesian weights (small heads afford a large rank; the cost is ``rank`` times the
        mean-field's memory).
    :raises ValueError: for unknown ``variance`` or ``prediction``, a net with both ``num_classes``
        and ``cond_dim``, ``init_scale`` or ``posterior_rank`` without ``prior``, or a ``posterior_rank``
        outside ``1..num_weights``.
    :raises TypeError: for a ``prior`` that is not a :class:`~probgen.priors.Prior`.

    Example::

        >>> from probgen.models.diffusion import MLPDenoiser, get_schedule
        >>> chain = DiffusionChain(MLPDenoiser(2, hidden_dim=16), get_schedule("linear", 10), event_shape=(2,))
        >>> trace = pyro.poutine.trace(chain.model).get_trace(num_samples=5)
        >>> trace.stochastic_nodes[1:4], trace.nodes["x_0"]["value"].shape
        (['x_10', 'x_9', 'x_8'], torch.Size([5, 2]))

    A class-conditional chain takes one label per row::

        >>> net = MLPDenoiser(2, hidden_dim=16, num_classes=3)
        >>> labelled = DiffusionChain(net, get_schedule("linear", 10), event_shape=(2,))
        >>> labelled.conditional, labelled.model(num_samples=4, condition=torch.tensor([0, 1, 2, 2])).shape
        (True, torch.Size([4, 2]))

    A Bayesian denoiser whose last layer is Bayesian: its weights are sample sites outside the plate::

        >>> from probgen.priors import GaussianPrior
        >>> prior = GaussianPrior(1.0, fan_in=True, deterministic=("embed", "inp", "blocks"))
        >>> bayes = DiffusionChain(MLPDenoiser(2, hidden_dim=16), get_schedule("linear", 10), event_shape=(2,), prior=prior)
        >>> bayes.weight_sites
        ('out.1.weight', 'out.1.bias')
        >>> trace = pyro.poutine.trace(bayes.guide).get_trace(torch.zeros(8, 2), subsample_size=4)
        >>> trace.nodes["out.1.weight"]["value"].shape, trace.nodes["x_10"]["value"].shape
        (torch.Size([2, 16]), torch.Size([4, 2]))
    """

    def __init__(
        self,
        net: nn.Module,
        schedule: Schedule,
        *,
        event_shape: Sequence[int],
        decoder: Decoder | None = None,
        variance: Variance = "fixed_large",
        prediction: Prediction = "epsilon",
        prior: Prior | None = None,
        init_scale: float | None = None,
        posterior_rank: int | None = None,
    ) -> None:
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}.")
        if not isinstance(schedule, Schedule):
            raise TypeError(
                f"schedule must be a Schedule, got {type(schedule).__name__}; "
                "build one with get_schedule or make_schedule."
            )
        decoder = GaussianDecoder() if decoder is None else decoder
        if not isinstance(decoder, Decoder):
            raise TypeError(f"decoder must be a Decoder, got {type(decoder).__name__}.")
        self.net = net
        self.schedule = schedule
        self.event_shape = torch.Size(check_positive_int("event_shape entry", int(s)) for s in event_shape)
        self.decoder = decoder
        self.variance: Variance = check_choice("variance", variance, VARIANCES)
        self.prediction: Prediction = check_choice("prediction", prediction, PREDICTIONS)
        if isinstance(net, MeanShiftDenoiser):
            if net.prediction != self.prediction:
                raise ValueError(
                    f"the MeanShiftDenoiser was built with prediction={net.prediction!r} but the chain has "
                    f"prediction={self.prediction!r}; build both with the same."
                )
            if net.num_timesteps != schedule.num_timesteps:
                raise ValueError(
                    f"the MeanShiftDenoiser was built for a schedule of {net.num_timesteps} steps but the chain's "
                    f"has {schedule.num_timesteps}; pass the chain's schedule to both."
                )
        #: The number of classes of a class-conditional net (``net.num_classes``), else ``None``.
        self.num_classes: int | None
        #: The number of covariates of a covariate-conditional net (``net.cond_dim``), else ``None``.
        self.cond_dim: int | None
        self.num_classes, self.cond_dim = check_condition_options(
            getattr(net, "num_classes", None), getattr(net, "cond_dim", None), prefix="net."
        )
        if prior is not None and not isinstance(prior, Prior):
            raise TypeError(
                f"prior must be a probgen.priors.Prior (e.g. GaussianPrior(1.0, fan_in=True)), got {type(prior).__name__}."
            )
        if prior is None and init_scale is not None:
            raise ValueError("init_scale sets the weight posterior of a Bayesian chain; pass prior= too, or drop it.")
        if prior is None and posterior_rank is not None:
            raise ValueError(
                "posterior_rank sets the weight posterior of a Bayesian chain; pass prior= too, or drop it."
            )
        #: The prior over the net's parameters of a Bayesian chain, else ``None``.
        self.prior = prior
        #: The variational posterior ``q(w)`` over the Bayesian parameters (a :class:`LowRankWeights`
        #: with ``posterior_rank``), else ``None``.
        self.weight_posterior: MeanFieldWeights | None = None
        self._prior_cache: tuple[Any, dict[str, Any]] | None = None
        self._tables: dict[tuple[int, torch.device], Tensor] = {}
        if prior is not None:
            sites = prior.apply(net)
            start = {name: param for name, param in net.named_parameters() if name in sites}
            scale = WEIGHT_INIT_SCALE if init_scale is None else init_scale
            if posterior_rank is None:
                self.weight_posterior = MeanFieldWeights(start, init_scale=scale)
            else:
                num_weights = sum(int(param.numel()) for param in start.values())
                rank = check_rank("posterior_rank", posterior_rank, num_weights)
                self.weight_posterior = LowRankWeights(start, init_scale=scale, rank=rank)

    def __repr__(self) -> str:
        condition = ""
        if self.num_classes is not None:
            condition = f", num_classes={self.num_classes}"
        elif self.cond_dim is not None:
            condition = f", cond_dim={self.cond_dim}"
        if self.prior is not None:
            condition += f", prior={self.prior!r} over {len(self.weight_sites)} parameters"
        if self.posterior_rank is not None:
            condition += f", posterior_rank={self.posterior_rank}"
        return (
            f"DiffusionChain(net={type(self.net).__name__}, num_timesteps={self.num_timesteps}, "
            f"event_shape={tuple(self.event_shape)}, decoder={self.decoder!r}, variance={self.variance!r}, "
            f"prediction={self.prediction!r}{condition})"
        )

    @property
    def bayesian(self) -> bool:
        """Whether the chain has a prior over its net's parameters (a Bayesian denoiser)."""
        return self.prior is not None

    @property
    def posterior_rank(self) -> int | None:
        """The rank of a low-rank :attr:`weight_posterior`; ``None`` for a mean-field one or a point chain."""
        return self.weight_posterior.rank if isinstance(self.weight_posterior, LowRankWeights) else None

    @property
    def weight_sites(self) -> tuple[str, ...]:
        """The Pyro sites of the Bayesian parameters, their paths in the net; empty for a point chain."""
        return () if self.weight_posterior is None else self.weight_posterior.names

    def weight_priors(self) -> dict[str, Any]:
        """``p(w_i)`` of every Bayesian parameter, by path, in the net's current dtype; empty for a point chain.

        Built once per dtype and device of the net and then reused (the prior is a frozen rule), so the
        same mapping comes back while the net stays where it is; do not change it.
        """
        if self.prior is None:
            return {}
        first = next(self.net.parameters(), None)
        key = None if first is None else (first.dtype, first.device)
        if self._prior_cache is None or self._prior_cache[0] != key:
            self._prior_cache = (key, self.prior.apply(self.net))
        return self._prior_cache[1]

    @property
    def conditional(self) -> bool:
        """Whether the net takes a condition (class labels or covariates), so every call needs ``condition=``."""
        return self.num_classes is not None or self.cond_dim is not None

    @property
    def num_timesteps(self) -> int:
        """The number of diffusion steps ``T``."""
        return self.schedule.num_timesteps

    @property
    def event_dim(self) -> int:
        """The number of data dimensions, ``len(event_shape)``."""
        return len(self.event_shape)

    @property
    def num_dims(self) -> int:
        """The number of scalars in one data point (``D`` for bits per dimension)."""
        return int(self.event_shape.numel())

    def describe(self) -> dict[str, Any]:
        """The chain's configuration as plain data, for records: ArviZ attributes and saved files.

        Example::

            >>> from probgen.models.diffusion import MLPDenoiser, get_schedule
            >>> DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("cosine", 10), event_shape=(2,)).describe()
            {'net': 'MLPDenoiser', 'schedule': 'cosine', 'num_timesteps': 10, 'event_shape': [2], 'decoder': 'GaussianDecoder()', 'variance': 'fixed_large', 'prediction': 'epsilon', 'num_classes': None, 'cond_dim': None}
        """
        return {
            "net": type(self.net).__name__,
            "schedule": self.schedule.name,
            "num_timesteps": self.num_timesteps,
            "event_shape": list(self.event_shape),
            "decoder": repr(self.decoder),
            "variance": self.variance,
            "prediction": self.prediction,
            "num_classes": self.num_classes,
            "cond_dim": self.cond_dim,
            **({} if self.prior is None else {"prior": repr(self.prior), "weight_sites": list(self.weight_sites)}),
            **({} if self.posterior_rank is None else {"posterior_rank": self.posterior_rank}),
        }

    def replace_net(self, net: nn.Module) -> DiffusionChain:
        """A new chain with the same schedule, decoder and options, and another network.

        A Bayesian chain's copy has the same prior and a fresh weight posterior of the same kind (and
        rank), located at ``net``'s values with the same initial scale.
        """
        return DiffusionChain(
            net,
            self.schedule,
            event_shape=self.event_shape,
            decoder=self.decoder,
            variance=self.variance,
            prediction=self.prediction,
            prior=self.prior,
            init_scale=None if self.weight_posterior is None else self.weight_posterior.init_scale,
            posterior_rank=self.posterior_rank,
        )

    def with_weights(self, weights: Mapping[str, Tensor]) -> DiffusionChain:
        """A point-estimate chain (no prior) whose net is a copy of this one's with ``weights`` put in.

        For one posterior draw, ``chain.with_weights({k: v[s] for k, v in draws.items()})`` with
        ``draws = chain.weight_posterior.sample(S)``; for the posterior mean,
        ``chain.with_weights(chain.weight_posterior.mean())``. Every sampler and evaluation of a point
        chain then applies to that draw.

        :param weights: one value per Bayesian parameter (or per any parameter of the net), by path,
            shaped like the parameter.
        :raises ValueError: for unknown names or values of the wrong shape (a stack of draws included).
        """
        weights = check_weights(self.net, weights)
        for name, value in weights.items():
            if value.shape != self.net.get_parameter(name).shape:
                raise ValueError(
                    f"weights[{name!r}] has shape {tuple(value.shape)}; with_weights takes one draw, shaped like "
                    f"the parameter {tuple(self.net.get_parameter(name).shape)} (index a stack of draws first)."
                )
        net = copy.deepcopy(self.net)
        with torch.no_grad():
            for name, value in weights.items():
                net.get_parameter(name).copy_(value)
        return DiffusionChain(
            net,
            self.schedule,
            event_shape=self.event_shape,
            decoder=self.decoder,
            variance=self.variance,
            prediction=self.prediction,
        )

    # ----------------------------------------------------------------- helpers
    def _dtype(self) -> torch.dtype:
        for param in self.net.parameters():
            return param.dtype
        return torch.get_default_dtype()

    @property
    def device(self) -> torch.device:
        """Where the net's parameters are (the CPU for a net without any); data and samples go there."""
        for param in self.net.parameters():
            return param.device
        return torch.device("cpu")

    def to(self, device: DeviceLike) -> DiffusionChain:
        """Move the net (and a Bayesian chain's weight posterior) to ``device``, in place like ``nn.Module.to``; returns the chain."""
        target = check_device(device)
        assert target is not None
        self.net.to(target)
        if self.weight_posterior is not None:
            self.weight_posterior.to(target)
        return self

    def _table(self, values: Tensor, device: torch.device) -> Tensor:
        """A schedule's tensor on ``device``, copied there once and kept."""
        if values.device == device:
            return values
        key = (id(values), device)
        if key not in self._tables:
            self._tables[key] = values.to(device)
        return self._tables[key]

    def _steps(self, t: Tensor | int, like: Tensor) -> Tensor:
        """``t`` as a long tensor of the batch shape of ``like``."""
        batch_shape = like.shape[: like.dim() - self.event_dim]
        return torch.as_tensor(t, dtype=torch.long, device=like.device).expand(batch_shape)

    def _gather(self, values: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """``values[t - 1]`` in ``like``'s dtype, shaped to broadcast against ``like``."""
        out = self._table(values, like.device)[t - 1].to(like.dtype)
        return out.reshape(t.shape + (1,) * self.event_dim)

    def _check_condition(
        self, name: str, condition: Any, batch_shape: Sequence[int], rows_of: str = "x"
    ) -> Tensor | None:
        """``condition`` checked against the net and broadcast to ``batch_shape`` (see :meth:`p_mean_variance`).

        :param str rows_of: what has the rows the condition must match, for messages (``"x0"``).
        :returns: ``None`` for an unconditional chain, else labels ``batch_shape`` or covariates
            ``(*batch_shape, cond_dim)``.
        """
        return check_condition(
            name, condition, num_classes=self.num_classes, cond_dim=self.cond_dim, batch_shape=torch.Size(batch_shape),
            dtype=self._dtype(), owner=f"the chain's net ({type(self.net).__name__})", rows_of=rows_of,
        )  # fmt: skip

    def _denoise(
        self, x_t: Tensor, t: Tensor, condition: Tensor | None, weights: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """The net's output at ``x_t`` and ``t``; a checked ``condition`` is broadcast to ``t``'s shape first.

        With ``weights`` the named parameters take those values (see :func:`call_with_weights`).
        """
        if weights:
            return call_with_weights(
                self.net, weights, x_t, t, condition, event_dim=self.event_dim, labels=self.num_classes is not None
            )
        if condition is None:
            return self.net(x_t, t)
        # e.g. under Pyro's vectorised particles x_t gains a leading dim that the rows' condition lacks
        shape = t.shape if self.num_classes is not None else t.shape + condition.shape[-1:]
        return self.net(x_t, t, condition.expand(shape))

    def _check_x(self, name: str, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            x = as_tensor(name, x, dtype=self._dtype())
        if tuple(x.shape[x.dim() - self.event_dim :]) != tuple(self.event_shape) or x.dim() < self.event_dim:
            raise ValueError(
                f"{name} must have shape (batch, {', '.join(map(str, self.event_shape))}), got {tuple(x.shape)}."
            )
        return x

    # ------------------------------------------------------ forward process q
    def q_sample(self, x0: Tensor, t: Tensor | int, noise: Tensor | None = None) -> Tensor:
        """Draw ``x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)`` ([1] eq. 4).

        :param Tensor x0: data, shape ``(*batch, *event_shape)``.
        :param t: steps in ``1..T``, an int or a long tensor of the batch shape.
        :param noise: the standard normal noise ``epsilon``; drawn if ``None``.
        """
        t = self._steps(t, x0)
        noise = torch.randn_like(x0) if noise is None else noise
        # [1] eq. 4 reparametrised: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) epsilon
        return (
            self._gather(self.schedule.sqrt_alphas_cumprod, t, x0) * x0
            + self._gather(self.schedule.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor | int) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and log-variance of ``q(x_{t-1} | x_t, x_0)`` ([1] eqs. 6-7).

        The log-variance is clipped at ``t = 1`` (where ``beta~_1 = 0``) to ``log beta~_2``; the
        variance is the exact ``beta~_t``.
        """
        t = self._steps(t, x_t)
        # [1] eq. 7: mu~_t(x_t, x_0) = coef1 x_0 + coef2 x_t
        mean = (
            self._gather(self.schedule.posterior_mean_coef1, t, x_t) * x0
            + self._gather(self.schedule.posterior_mean_coef2, t, x_t) * x_t
        )
        variance = self._gather(self.schedule.posterior_variance, t, x_t)
        log_variance = self._gather(self.schedule.posterior_log_variance_clipped, t, x_t)
        return mean, variance, log_variance

    # ------------------------------------------------------ reverse process p
    def model_log_variance(self, t: Tensor | int, like: Tensor) -> Tensor:
        """``log sigma_t^2`` of the reverse step, shaped to broadcast against ``like``."""
        t = self._steps(t, like)
        if self.variance == "fixed_large":
            # [1] Section 3.2: sigma_t^2 = beta_t
            return self._gather(self.schedule.betas, t, like).log()
        # [1] Section 3.2: sigma_t^2 = beta~_t, with beta~_1 -> beta~_2 ([3], clipped log-variance)
        return self._gather(self.schedule.posterior_log_variance_clipped, t, like)

    def p_mean_variance(
        self,
        x_t: Tensor,
        t: Tensor | int,
        *,
        condition: Tensor | None = None,
        weights: Mapping[str, Tensor] | None = None,
    ) -> PMeanVariance:
        """The reverse step ``p_theta(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I)`` ([1] eqs. 1, 11).

        :param Tensor x_t: the noisy input, shape ``(*batch, *event_shape)``.
        :param t: steps in ``1..T``, an int or a long tensor of the batch shape.
        :param condition: for a conditional chain only (and required there): class labels, an integer
            tensor of the batch shape with values in ``[0, num_classes)``, or covariates, a finite float
            tensor ``(*batch, cond_dim)``. A dimension of size 1 (or a missing leading one) is broadcast,
            so one row conditions every row of ``x_t``.
        :raises ValueError: for a missing or unexpected condition, one of the wrong shape, labels out of
            range or covariates that are not finite.
        :param weights: values for some of the net's parameters, by path (for a Bayesian chain, draws of
            its Bayesian parameters: ``chain.weight_posterior.sample(S)``); the others keep the net's
            values. One draw is shaped like the parameters; ``S`` draws stacked in a leading dimension
            go with ``x_t`` of shape ``(S, *batch, *event_shape)``, draw ``s`` with ``x_t[s]``, in one
            vectorised call. ``None`` uses the net as it is (a Bayesian chain's posterior means, once fitted).
        :raises TypeError: for labels that are not integers or covariates that are not floats.
        """
        t = self._steps(t, x_t)
        weights = None if weights is None else check_weights(self.net, weights)
        return self._p_mean_variance(x_t, t, self._check_condition("condition", condition, t.shape, "x_t"), weights)

    def _p_mean_variance(
        self, x_t: Tensor, t: Tensor, condition: Tensor | None, weights: Mapping[str, Tensor] | None = None
    ) -> PMeanVariance:
        """:meth:`p_mean_variance` for long steps ``t`` of the batch shape and a checked ``condition``."""
        output = self._denoise(x_t, t, condition, weights)
        sqrt_ab = self._gather(self.schedule.sqrt_alphas_cumprod, t, x_t)
        sqrt_1mab = self._gather(self.schedule.sqrt_one_minus_alphas_cumprod, t, x_t)
        if self.prediction == "epsilon":
            pred_eps = output
            pred_x0 = (x_t - sqrt_1mab * pred_eps) / sqrt_ab
            # [1] eq. 11: mu_theta = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta) / sqrt(alpha_t)
            betas = self._gather(self.schedule.betas, t, x_t)
            alphas = self._gather(self.schedule.alphas, t, x_t)
            mean = (x_t - betas / sqrt_1mab * pred_eps) / alphas.sqrt()
        else:
            pred_x0 = output
            pred_eps = (x_t - sqrt_ab * pred_x0) / sqrt_1mab
            mean = self.q_posterior(pred_x0, x_t, t)[0]
        log_variance = self.model_log_variance(t, x_t)
        return PMeanVariance(mean, log_variance.exp(), log_variance, pred_x0, pred_eps)

    def p_sample(
        self,
        x_t: Tensor,
        t: int,
        noise: Tensor | None = None,
        *,
        condition: Tensor | None = None,
        weights: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """Draw ``x_{t-1} ~ p_theta(x_{t-1} | x_t)``; at ``t = 1`` draw ``x_0`` from the decoder.

        :param Tensor x_t: the current state, shape ``(*batch, *event_shape)``.
        :param int t: the current step in ``1..T``.
        :param noise: standard normal noise for ``t >= 2``; drawn if ``None``.
        :param condition: the condition of a conditional chain, as for :meth:`p_mean_variance`.
        :param weights: values for the net's (Bayesian) parameters, as for :meth:`p_mean_variance`.
        """
        out = self.p_mean_variance(x_t, t, condition=condition, weights=weights)
        scale = (0.5 * out.log_variance).exp()
        if t == 1:
            return self.decoder.distribution(out.mean, scale.expand_as(out.mean)).sample()
        noise = torch.randn_like(x_t) if noise is None else noise
        return out.mean + scale * noise

    # ------------------------------------------------------- terms of the bound
    def prior_kl(self, x0: Tensor) -> Tensor:
        """``L_T = KL(q(x_T | x_0) || N(0, I))`` per data point, in nats ([1] eq. 5). No network call."""
        t = self._steps(self.num_timesteps, x0)
        mean = self._gather(self.schedule.sqrt_alphas_cumprod, t, x0) * x0
        alpha_bar = self._gather(self.schedule.alphas_cumprod, t, t.double())  # in the schedule's float64
        log_var = (1.0 - alpha_bar).to(x0.dtype).log()
        kl = normal_kl(mean, log_var.expand_as(mean), torch.zeros_like(mean), torch.zeros_like(mean))
        return sum_event(kl, self.event_dim)

    def vlb_term(
        self,
        x0: Tensor,
        t: Tensor | int,
        noise: Tensor | None = None,
        *,
        condition: Tensor | None = None,
        weights: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """One term of the bound at step ``t``, per data point, in nats, with ``x_t ~ q(x_t | x_0)``.

        For ``t >= 2`` it is ``L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))`` in closed
        form; for ``t = 1`` it is ``L_0 = -log p_theta(x_0 | x_1)`` ([1] eq. 5). ``t`` may mix steps.

        :param Tensor x0: data, shape ``(*batch, *event_shape)``.
        :param t: steps in ``1..T``, an int or a long tensor of the batch shape.
        :param noise: the noise that draws ``x_t`` (see :meth:`q_sample`); drawn if ``None``.
        :param condition: the condition of a conditional chain, one row per row of ``x0`` (see
            :meth:`p_mean_variance`); the terms are then those of the bound on ``-log p_theta(x_0 | c)``.
        :param weights: values for the net's (Bayesian) parameters, as for :meth:`p_mean_variance`; with
            ``S`` stacked draws ``x0`` has the shape ``(S, *batch, *event_shape)`` (``x0.expand(S, ...)``
            shares the rows between draws) and the terms come back ``(S, *batch)``.
        :returns: a tensor of the batch shape.
        """
        weights = None if weights is None else check_weights(self.net, weights)
        t = self._steps(t, x0)
        condition = self._check_condition("condition", condition, t.shape, "x0")
        x_t = self.q_sample(x0, t, noise)
        out = self._p_mean_variance(x_t, t, condition, weights)
        true_mean, _, true_log_var = self.q_posterior(x0, x_t, t)
        kl = sum_event(normal_kl(true_mean, true_log_var, out.mean, out.log_variance), self.event_dim)
        scale = (0.5 * out.log_variance).exp().expand_as(out.mean)
        decoder_nll = -sum_event(self.decoder.distribution(out.mean, scale).log_prob(x0), self.event_dim)
        return torch.where(t == 1, decoder_nll, kl)

    # ----------------------------------------------------------- Pyro programs
    def _num_rows(self, x0: Tensor | None, num_samples: int | None) -> int:
        if x0 is not None:
            return int(self._check_x("x0", x0).shape[0])
        if num_samples is None:
            raise ValueError("model needs x0 or num_samples; pass num_samples=N to sample N points.")
        return check_positive_int("num_samples", num_samples)

    def model(
        self,
        x0: Tensor | None = None,
        *,
        num_samples: int | None = None,
        condition: Tensor | None = None,
        subsample_size: int | None = None,
    ) -> Tensor:
        """The reverse chain ``p(x_T) prod_t p_theta(x_{t-1} | x_t) p_theta(x_0 | x_1)`` as a Pyro program.

        Sites ``"x_T", ..., "x_1"`` are latent and ``"x_0"`` is the data, all inside the plate
        ``"data"`` and each with the data dimensions as its event. With ``x0=None`` running it is
        ancestral sampling. A conditional chain conditions every reverse step on ``condition``.

        A Bayesian chain first draws its weights from the prior, one site per Bayesian parameter
        (named by its path, :attr:`weight_sites`), once and outside the plate, and runs every data
        point's reverse chain with them: ``p(w) prod_i p_w(x_{0:T}^i)``. Run with nothing observed, it
        samples the *prior* predictive; samples under the fitted posterior come from
        :mod:`probgen.infer.diffusion`'s read-outs (or :meth:`with_weights`).

        :param x0: observed data ``(N, *event_shape)``, or ``None``.
        :param num_samples: the number of rows ``N`` when ``x0`` is ``None``.
        :param condition: the condition of a conditional chain (required there, refused otherwise):
            class labels ``(N,)`` or covariates ``(N, cond_dim)``, row ``i`` for row ``i`` of ``x0`` (or
            of the samples); a single row ``(1,)`` or ``(1, cond_dim)`` serves every row.
        :param subsample_size: visit a random minibatch of this many rows
            (``pyro.plate("data", N, subsample_size=B)``), whose terms the plate scales by ``N / B``;
            ``None`` visits every row. Give the guide the same value (Pyro passes both the same arguments).
        :returns: the value of ``"x_0"`` (of the minibatch's rows when subsampling).
        :raises ValueError: for a missing or unexpected condition, or one that does not match the rows.

        References: [1] eq. 1 and Algorithm 2; [2] Section 2.2.
        """
        n = self._num_rows(x0, num_samples)
        rows_of = "x0" if x0 is not None else f"the samples (num_samples={n})"
        cond = self._check_condition("condition", condition, (n,), rows_of)
        dtype = x0.dtype if x0 is not None else self._dtype()
        weights = self._weight_sites(self.weight_priors())
        with pyro.plate("data", n, subsample_size=subsample_size, device=str(self.device)) as rows:
            index = cast(Tensor, rows)  # the minibatch's rows (all of them without subsample_size)
            if index.shape[0] != n:  # a minibatch of the rows, scaled by N / B by the plate
                x0 = None if x0 is None else x0[index]
                cond = None if cond is None else cond[index]
            zeros = torch.zeros((index.shape[0], *self.event_shape), dtype=dtype, device=self.device)
            x = pyro.sample(f"x_{self.num_timesteps}", dist.Normal(zeros, 1.0).to_event(self.event_dim))
            for t in pyro.markov(range(self.num_timesteps, 1, -1)):
                out = self._p_mean_variance(x, self._steps(t, x), cond, weights)
                scale = (0.5 * out.log_variance).exp().expand_as(out.mean)
                x = pyro.sample(f"x_{t - 1}", dist.Normal(out.mean, scale).to_event(self.event_dim))
            out = self._p_mean_variance(x, self._steps(1, x), cond, weights)
            scale = (0.5 * out.log_variance).exp().expand_as(out.mean)
            decoder = self.decoder.distribution(out.mean, scale).to_event(self.event_dim)
            return pyro.sample("x_0", decoder, obs=x0)

    def _weight_sites(self, distributions: Mapping[str, Any]) -> dict[str, Tensor] | None:
        """One sample site per Bayesian parameter, drawn from ``distributions`` (the prior or ``q``)."""
        if self.weight_posterior is None:
            return None
        return {name: pyro.sample(name, distributions[name]) for name in self.weight_sites}

    def _posterior_weight_sites(self) -> dict[str, Tensor] | None:
        """The guide's weight sites, drawn from :attr:`weight_posterior` (``None`` for a point chain).

        A mean-field ``q(w)`` has one factor per parameter. A low-rank one does not factorise, so the
        flat vector is drawn once at the auxiliary site ``"_weights"`` (guide only; its ``log q`` is the
        ELBO's entropy term) and each parameter's site is a ``Delta`` at its piece, whose ``log q`` is 0
        and which the model's prior site scores: Pyro's ``AutoLowRankMultivariateNormal`` layout.
        """
        posterior = self.weight_posterior
        if not isinstance(posterior, LowRankWeights):
            return None if posterior is None else self._weight_sites(posterior.distributions())
        flat = pyro.sample("_weights", posterior.joint(), infer={"is_auxiliary": True})
        pieces = posterior.split(flat)
        return {
            name: pyro.sample(name, dist.Delta(pieces[name], event_dim=len(shape)))
            for name, shape in zip(posterior.names, posterior.shapes, strict=True)
        }

    def guide(
        self,
        x0: Tensor,
        *,
        num_samples: int | None = None,
        condition: Tensor | None = None,
        subsample_size: int | None = None,
    ) -> None:
        """The noising process in posterior order, ``q(x_T | x_0) prod_{t=2}^T q(x_{t-1} | x_t, x_0)``.

        Its sites are visited in the model's order, so :class:`pyro.infer.TraceMeanField_ELBO` replaces
        each site's ``log p - log q`` by the closed-form ``KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))``
        and estimates the DDPM bound ``L_T + sum_t L_{t-1} + L_0`` ([1] eq. 5, [2] eq. 14).

        A Bayesian chain's guide first draws the weights from :attr:`weight_posterior` (a mean-field
        Normal whose locations and scales are that module's parameters, not Pyro's global param store),
        so the ELBO also holds ``KL(q(w) || p(w))``, once, in closed form for Normal priors. A low-rank
        posterior (``posterior_rank=``) is drawn as one auxiliary site ``"_weights"``, the flat vector, and
        one ``Delta`` site per parameter at its piece; :class:`pyro.infer.Trace_ELBO` then has the
        ELBO, and ``TraceMeanField_ELBO`` too (its KL of a ``Delta`` is ``-log p(w)``). A loop of
        one's own can minimise ``TraceMeanField_ELBO().differentiable_loss(chain.model, chain.guide, x0,
        subsample_size=B)`` with a torch optimiser over ``chain.weight_posterior.parameters()`` and the
        net's deterministic parameters (Pyro's own optimisers see only the param store);
        :func:`~probgen.infer.diffusion.fit_diffusion` does the same, faster, with one step per row.

        :param Tensor x0: the data ``(N, *event_shape)``.
        :param num_samples: ignored; accepted so that the guide takes the model's arguments.
        :param condition: ignored (the noising process does not depend on it); accepted so that the
            guide takes the model's arguments.
        :param subsample_size: the minibatch size, as for :meth:`model`; the guide's plate draws the rows
            and Pyro replays them in the model.
        """
        x0 = self._check_x("x0", x0)
        T = self.num_timesteps
        self._posterior_weight_sites()
        with pyro.plate("data", x0.shape[0], subsample_size=subsample_size, device=str(x0.device)) as rows:
            index = cast(Tensor, rows)
            if index.shape[0] != x0.shape[0]:
                x0 = x0[index]
            t = self._steps(T, x0)
            mean = self._gather(self.schedule.sqrt_alphas_cumprod, t, x0) * x0
            scale = self._gather(self.schedule.sqrt_one_minus_alphas_cumprod, t, x0).expand_as(mean)
            x = pyro.sample(f"x_{T}", dist.Normal(mean, scale).to_event(self.event_dim))
            for step in pyro.markov(range(T, 1, -1)):
                mean, variance, _ = self.q_posterior(x0, x, step)
                posterior = dist.Normal(mean, variance.sqrt().expand_as(mean)).to_event(self.event_dim)
                x = pyro.sample(f"x_{step - 1}", posterior)

    def forward_guide(self, x0: Tensor, *, num_samples: int | None = None, condition: Tensor | None = None) -> None:
        """The same noising process in forward order, ``prod_{t=1}^T q(x_t | x_{t-1})`` ([1] eq. 2).

        The joint equals :meth:`guide`'s, so :class:`pyro.infer.Trace_ELBO` (Monte Carlo log-ratios)
        gives the same bound with it. :class:`pyro.infer.TraceMeanField_ELBO` does **not**: it would pair
        ``q(x_t | x_{t-1})`` with ``p_theta(x_t | x_{t+1})``, whose parent is drawn later, and its
        analytic KLs then estimate a different, wrong quantity (and Pyro warns about the site order).
        Kept to demonstrate exactly that; train and evaluate with :meth:`guide`.

        :param Tensor x0: the data ``(N, *event_shape)``.
        :param num_samples: ignored; accepted so that the guide takes the model's arguments.
        :param condition: ignored (the noising process does not depend on it); accepted so that the
            guide takes the model's arguments.
        """
        x0 = self._check_x("x0", x0)
        self._posterior_weight_sites()  # a Bayesian chain's weights first, as in guide
        with pyro.plate("data", x0.shape[0], device=str(x0.device)):
            x = x0
            for step in pyro.markov(range(1, self.num_timesteps + 1)):
                t = self._steps(step, x0)
                # [1] eq. 2: q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)
                mean = self._gather(self.schedule.alphas, t, x0).sqrt() * x
                scale = self._gather(self.schedule.betas, t, x0).sqrt().expand_as(mean)
                x = pyro.sample(f"x_{step}", dist.Normal(mean, scale).to_event(self.event_dim))
