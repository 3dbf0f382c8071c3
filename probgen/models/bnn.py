"""Bayesian neural networks as plain Pyro models.

A :class:`BNN` joins three independent pieces, each swappable on its own: a torch
architecture, a :class:`~probgen.priors.Prior` over its parameters and a
:class:`~probgen.likelihoods.Likelihood`. Calling it runs the generative program::

    weights ~ prior                      # one sample site per Bayesian parameter
    globals ~ likelihood.global_priors   # e.g. "noise_scale"
    for i in plate("data", N, subsample_size=B):
        y_i ~ likelihood(f(x_i; weights))

It holds no inference state: fit it with :func:`probgen.fit_svi` or :func:`probgen.fit_nuts`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from probgen._validate import as_tensor, check_same_length
from probgen.likelihoods import Gaussian, Likelihood
from probgen.nn import input_features, split_parameters
from probgen.priors import GaussianPrior, Prior

__all__ = ["BNN"]


class BNN(nn.Module):
    """A Bayesian neural network: ``model(x, y=None, *, subsample_size=None)``.

    :param nn.Module net: the architecture; it is copied, never modified. Its output must
        have ``likelihood.output_dim(...)`` columns.
    :param Prior prior: which parameters are Bayesian and their priors; defaults to
        ``GaussianPrior(1.0, fan_in=True)``.
    :param Likelihood likelihood: defaults to :class:`~probgen.likelihoods.Gaussian` with a
        learned noise scale.

    Deterministic parameters (those the prior leaves out) are ordinary ``nn.Parameter`` s of
    this module: SVI fits them by maximising the ELBO, NUTS holds them at their current values.

    Example:

    >>> net = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
    >>> model = BNN(net)
    >>> model.site_names
    ('0.weight', '0.bias', '2.weight', '2.bias', 'noise_scale')
    >>> model(torch.zeros(5, 1)).shape  # prior predictive draw of y
    torch.Size([5])
    """

    def __init__(self, net: nn.Module, prior: Prior | None = None, likelihood: Likelihood | None = None) -> None:
        super().__init__()
        if prior is None:
            prior = GaussianPrior(1.0, fan_in=True)
        if likelihood is None:
            likelihood = Gaussian()
        if not isinstance(prior, Prior):
            raise TypeError(f"prior must be a probgen.priors.Prior, got {type(prior).__name__}.")
        if not isinstance(likelihood, Likelihood):
            raise TypeError(f"likelihood must be a probgen.likelihoods.Likelihood, got {type(likelihood).__name__}.")
        # the layers as the user built them: once the Bayesian parameters are split off, torch's own
        # repr would show every Linear layer with bias=False
        self._net_repr = repr(net)
        self.net, self.weight_priors = split_parameters(net, prior)
        self.prior = prior
        self.likelihood = likelihood
        self.in_features = input_features(net)
        self._shapes = {name: tuple(d.event_shape) for name, d in self.weight_priors.items()}

    def __repr__(self) -> str:
        net = self.__dict__.get("_net_repr", "?").replace("\n", "\n  ")
        bayesian = sum(math.prod(shape) for shape in self._shapes.values())
        return (
            f"BNN(\n  net={net},\n  prior={self.prior!r},\n  likelihood={self.likelihood!r},\n"
            f"  latent sites: {len(self._shapes)} weight tensors ({bayesian} numbers) + {list(self.global_priors) or 'no globals'}\n)"
        )

    # -- structure -------------------------------------------------------------------------

    @property
    def global_priors(self) -> dict[str, dist.TorchDistribution]:
        """Priors of the likelihood's global sites, such as ``"noise_scale"``."""
        return self.likelihood.global_priors()

    @property
    def priors(self) -> dict[str, dist.TorchDistribution]:
        """Every latent site's prior in sampling order: weights first, then globals."""
        return {**self.weight_priors, **self.global_priors}

    @property
    def site_names(self) -> tuple[str, ...]:
        """Names of the latent sample sites, in the order the model samples them."""
        return tuple(self.priors)

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the network (inputs are cast to it at the fit boundary)."""
        for d in self.weight_priors.values():
            return d.mean.dtype
        return torch.get_default_dtype()

    # -- checks ----------------------------------------------------------------------------

    def check_x(self, x: object) -> Tensor:
        """Validate inputs: 2-D (or image-shaped for conv nets), finite, with the right width."""
        tensor = as_tensor("x", x, dtype=self.dtype, ndim=None if self.in_features is None else 2)
        if self.in_features is not None and tensor.shape[-1] != self.in_features:
            raise ValueError(
                f"x has {tensor.shape[-1]} features but the network expects {self.in_features}; "
                "check the first Linear layer."
            )
        return tensor

    def check_data(self, x: object, y: object | None) -> tuple[Tensor, Tensor | None]:
        """Validate a data set: inputs, targets, their agreement in length, and the network's output
        width against what the likelihood reads for these targets.

        A single target column ``(n, 1)`` is taken as ``(n,)``: against one network output it would
        otherwise broadcast the likelihood to an ``n x n`` grid.
        """
        x_t = self.check_x(x)
        if y is None:
            return x_t, None
        y_t = self.likelihood.check_target(y)
        if y_t.is_floating_point():
            y_t = y_t.to(self.dtype)
        if y_t.dim() == 2 and y_t.shape[1] == 1:
            y_t = y_t[:, 0]
        check_same_length("x", x_t, "y", y_t)
        self.check_outputs(x_t, y_t)
        return x_t, y_t

    def output_width(self, x: Tensor) -> int:
        """The network's number of outputs, from one forward pass on the first row of ``x``."""
        weights = {name: _any_value(prior) for name, prior in self.weight_priors.items()}
        with torch.no_grad():
            out = self.forward_with(weights, x[:1])
        return int(out.shape[-1]) if out.dim() > 1 else 1

    def check_outputs(self, x: Tensor, y: Tensor) -> None:
        """Raise a ValueError when the network's output width is not what the likelihood needs for ``y``."""
        target_dim = y.shape[1] if y.dim() == 2 else 1
        needed = self.likelihood.output_dim(target_dim)
        width = self.output_width(x)
        if width != needed:
            raise ValueError(
                f"the network has {width} output(s) but {self.likelihood!r} needs {needed} for targets "
                f"with {target_dim} column(s) ({self.likelihood.output_hint(target_dim)}); change the last "
                "layer's width or the likelihood."
            )

    # -- the network as a function of its weights -------------------------------------------

    def forward_with(self, weights: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """Network output ``f(x; weights)`` for one set of weights."""
        return functional_call(self.net, dict(weights), (x,))

    def forward_batched(self, weights: Mapping[str, Tensor], x: Tensor, batch_dims: int = 1) -> Tensor:
        """``f(x; w_s)`` for stacked weights whose leading ``batch_dims`` dims index draws.

        Vectorised with ``torch.func.vmap``: no Python loop over draws.
        """
        fn = self.forward_with
        for _ in range(batch_dims):
            fn = vmap(fn, in_dims=(0, None))
        return fn(dict(weights), x)

    # -- the Pyro program ------------------------------------------------------------------

    def forward(self, x: Tensor, y: Tensor | None = None, *, subsample_size: int | None = None) -> Tensor:
        """Run the generative program; observe ``y`` when given, otherwise sample it.

        :param int subsample_size: minibatch size; the likelihood's plate rescales to the full data.
        """
        if x.dim() < 2:
            raise ValueError(f"x must be 2-D (rows, features), got shape {tuple(x.shape)}.")
        weights = {name: pyro.sample(name, prior) for name, prior in self.weight_priors.items()}
        return self.likelihood(lambda xb: self.forward_with(weights, xb), x, y, subsample_size=subsample_size)


def _any_value(prior: dist.TorchDistribution) -> Tensor:
    """A value of the prior's shape (its mean, or a draw where the mean is undefined)."""
    try:
        return prior.mean
    except NotImplementedError:
        return prior.sample()
