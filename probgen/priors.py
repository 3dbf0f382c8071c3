"""Weight priors for Bayesian neural networks, written as rules over a module tree.

A prior decides, for every parameter of a torch ``nn.Module``, whether it is Bayesian
(and then which distribution it gets) or kept deterministic (point-estimated). The rule
is applied to the whole tree at once, so the same prior serves any architecture::

    prior = GaussianPrior(scale=1.0, fan_in=True, layer_scales={"2": 0.5}, deterministic=("0",))

Names are the parameter paths of the user's module, such as ``"0.weight"`` for the
first layer of an ``nn.Sequential``; they become the Pyro site names.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pyro.distributions as dist
import torch
from torch import Tensor, nn

from probgen._validate import check_positive_float

__all__ = ["Prior", "GaussianPrior", "fan_in", "normal_loc_scale"]


def fan_in(param: Tensor) -> int:
    """Number of inputs feeding one output unit of a weight: ``in_features`` for Linear,
    ``in_channels * prod(kernel_size)`` for Conv. Biases (1-D) have a fan-in of 1."""
    if param.dim() < 2:
        return 1
    return int(math.prod(param.shape[1:]))


def normal_loc_scale(prior: dist.TorchDistribution) -> tuple[Tensor, Tensor] | None:
    """``(loc, scale)``, expanded to the whole parameter, if ``prior`` is a Normal (or ``Normal(...).to_event(k)``).

    Inference reads a Normal prior in closed form (the flat NUTS kernel's log density, the mean-field
    KL); anything else, subclasses of Normal included, returns ``None`` and goes the general way.

    >>> loc, scale = normal_loc_scale(dist.Normal(0.0, 2.0).expand([2, 3]).to_event(2))
    >>> loc.shape, float(scale[0, 0])
    (torch.Size([2, 3]), 2.0)
    >>> normal_loc_scale(dist.Laplace(0.0, 1.0)) is None
    True
    """
    base = prior.base_dist if isinstance(prior, dist.Independent) else prior
    if type(base) not in (dist.Normal, torch.distributions.Normal):
        return None
    shape = prior.batch_shape + prior.event_shape
    return base.loc.expand(shape), base.scale.expand(shape)


def _matches(name: str, prefixes: Sequence[str]) -> bool:
    """True if ``name`` is one of ``prefixes`` or lies under one of them in the module tree."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


class Prior(ABC):
    """A rule that maps each parameter of a module to a prior distribution or to ``None``.

    Subclasses implement :meth:`distribution`; ``None`` keeps the parameter deterministic.
    :meth:`apply` walks the module and returns the Bayesian sites in a stable order.

    Example: a prior that makes only biases Bayesian.

    >>> class BiasOnly(Prior):
    ...     def distribution(self, name, param):
    ...         if not name.endswith("bias"):
    ...             return None
    ...         return dist.Normal(torch.zeros_like(param), 1.0).to_event(param.dim())
    >>> sorted(BiasOnly().apply(nn.Linear(2, 3)))
    ['bias']
    """

    @abstractmethod
    def distribution(self, name: str, param: Tensor) -> dist.TorchDistribution | None:
        """The prior of parameter ``name`` (its event shape is ``param.shape``), or ``None``."""

    def apply(self, net: nn.Module) -> dict[str, dist.TorchDistribution]:
        """Priors of every Bayesian parameter of ``net``, keyed by parameter path."""
        priors: dict[str, dist.TorchDistribution] = {}
        for name, param in net.named_parameters():
            prior = self.distribution(name, param.detach())
            if prior is not None:
                if tuple(prior.event_shape) != tuple(param.shape):
                    raise ValueError(
                        f"the prior for {name!r} has event shape {tuple(prior.event_shape)} "
                        f"but the parameter has shape {tuple(param.shape)}."
                    )
                priors[name] = prior
        return priors


@dataclass(frozen=True)
class GaussianPrior(Prior):
    """Independent zero-mean Gaussians over weights and biases.

    :param float scale: the prior standard deviation of every Bayesian parameter.
    :param dict layer_scales: per-module overrides ``{module path: scale}``, e.g. ``{"2": 0.1}``;
        a parameter takes the scale of the longest matching path.
    :param bool fan_in: divide each weight's scale by ``sqrt(fan_in)`` (Neal 1996), so that the
        prior over functions stays put as layers widen. Biases are not rescaled.
    :param float bias_scale: the scale of biases, if different from ``scale``.
    :param deterministic: module or parameter paths kept deterministic (point-estimated);
        everything else is Bayesian.

    References:
        Neal, R. M. (1996). Bayesian Learning for Neural Networks, section 2.2 (scaling priors by width).

    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    >>> priors = GaussianPrior(2.0, fan_in=True, deterministic=("2.bias",)).apply(net)
    >>> sorted(priors)
    ['0.bias', '0.weight', '2.weight']
    >>> float(priors["0.weight"].base_dist.scale[0, 0])  # 2 / sqrt(4)
    1.0
    """

    scale: float = 1.0
    layer_scales: Mapping[str, float] = field(default_factory=dict)
    fan_in: bool = False
    bias_scale: float | None = None
    deterministic: Sequence[str] = ()

    def __post_init__(self) -> None:
        check_positive_float("scale", self.scale)
        if self.bias_scale is not None:
            check_positive_float("bias_scale", self.bias_scale)
        for path, value in dict(self.layer_scales).items():
            check_positive_float(f"layer_scales[{path!r}]", value)
        if isinstance(self.deterministic, str):
            object.__setattr__(self, "deterministic", (self.deterministic,))

    def scale_of(self, name: str, param: Tensor) -> float:
        """The prior standard deviation for parameter ``name``."""
        matches = [p for p in self.layer_scales if _matches(name, [p])]
        is_bias = param.dim() < 2
        if matches:
            scale = self.layer_scales[max(matches, key=len)]
        elif is_bias and self.bias_scale is not None:
            scale = self.bias_scale
        else:
            scale = self.scale
        if self.fan_in and not is_bias:
            scale = scale / math.sqrt(fan_in(param))
        return scale

    def distribution(self, name: str, param: Tensor) -> dist.TorchDistribution | None:
        if _matches(name, self.deterministic):
            return None
        loc = torch.zeros_like(param)
        return dist.Normal(loc, torch.full_like(param, self.scale_of(name, param))).to_event(param.dim())
