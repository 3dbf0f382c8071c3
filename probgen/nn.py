"""Turning torch modules into Bayesian modules.

Two views of the same conversion, both driven by a :class:`~probgen.priors.Prior`:

* :func:`make_bayesian` returns a ``PyroModule`` copy whose Bayesian parameters are
  ``PyroSample`` attributes: the classic Pyro idiom, for users composing their own models.
* :func:`split_parameters` returns a copy with the Bayesian parameters removed, plus their
  priors, so that a forward pass can take the weights as an argument through
  ``torch.func.functional_call``. :class:`probgen.BNN` uses this view: it is what lets
  prediction run over thousands of posterior draws in one vectorised call, and what lets
  NUTS evaluate the log joint without tracing.

The user's module is never modified; both functions work on a deep copy.
"""

from __future__ import annotations

import copy
from typing import cast

import pyro.distributions as dist
from pyro.nn import PyroModule, PyroSample
from pyro.nn.module import to_pyro_module_
from torch import nn

from probgen.priors import Prior

__all__ = ["make_bayesian", "split_parameters", "input_features"]


def _check_module(net: object) -> nn.Module:
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}.")
    if next(net.parameters(), None) is None:
        raise ValueError("net has no parameters; a BNN needs at least one Linear or Conv layer.")
    return net


def _owner(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The submodule that owns parameter ``name`` and the parameter's attribute name."""
    path, _, attr = name.rpartition(".")
    return (root.get_submodule(path) if path else root), attr


def make_bayesian(net: nn.Module, prior: Prior) -> PyroModule:
    """A ``PyroModule`` copy of ``net`` whose Bayesian parameters are ``PyroSample`` sites.

    Site names are the parameter paths (``"0.weight"``); parameters the prior leaves
    deterministic stay ``nn.Parameter``. ``net`` itself is left untouched.

    >>> from probgen.priors import GaussianPrior
    >>> pnet = make_bayesian(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)), GaussianPrior())
    >>> type(pnet).__name__, isinstance(pnet[0], PyroModule)
    ('PyroSequential', True)
    """
    _check_module(net)
    priors = prior.apply(net)
    bayes_net = copy.deepcopy(net)
    to_pyro_module_(bayes_net)
    for name, site_prior in priors.items():
        module, attr = _owner(bayes_net, name)
        delattr(module, attr)
        setattr(module, attr, PyroSample(site_prior))
    return cast(PyroModule, bayes_net)


def split_parameters(net: nn.Module, prior: Prior) -> tuple[nn.Module, dict[str, dist.TorchDistribution]]:
    """A copy of ``net`` without its Bayesian parameters, and those parameters' priors.

    The copy keeps the deterministic parameters as ordinary ``nn.Parameter`` s; the removed
    ones must be supplied to ``torch.func.functional_call`` by name.
    """
    _check_module(net)
    priors = prior.apply(net)
    if not priors:
        raise ValueError("the prior makes no parameter Bayesian; check its deterministic= paths.")
    functional = copy.deepcopy(net)
    for name in priors:
        module, attr = _owner(functional, name)
        del module._parameters[attr]
        setattr(module, attr, None)
    return functional, priors


def input_features(net: nn.Module) -> int | None:
    """Number of input features of the first Linear layer, or ``None`` if it does not start with one."""
    for module in net.modules():
        if isinstance(module, nn.Linear):
            return module.in_features
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return None
    return None
