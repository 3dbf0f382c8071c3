"""Running a Pyro program under probgen's control: messengers, site classification and vectorised replay.

Inference on a user's Pyro program needs these effects, each a small Pyro messenger:

* :class:`SetLatent` fixes latent sample sites at given (constrained) values, as NumPyro's
  ``substitute`` does: the sites stay latent, so their log density still counts;
* :class:`Unconstrain` fixes them from one flat unconstrained vector, mapping each slice through
  ``biject_to(site.support)`` *as the program runs*, so a support that depends on another latent
  value (``Uniform(0, tau)``) gets the right transform, and records every ``log |det J|``;
* :class:`LocalParams` serves global ``pyro.param`` statements from a dict that belongs to one fit,
  so that fits never share parameters through Pyro's global store.

:func:`vectorise` maps a function of one draw over a batch of draws with ``torch.func.vmap``, and
falls back to a loop for programs whose operations cannot be batched (in-place updates, Python
branches on values).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import _PYRO_PARAM_STORE
from pyro.poutine.subsample_messenger import _Subsample
from pyro.poutine.trace_struct import Trace
from torch import Tensor
from torch.distributions import biject_to, constraints

from probgen._device import device_of

__all__ = [
    "SetLatent",
    "Unconstrain",
    "Unobserve",
    "LocalParams",
    "Plate",
    "is_subsample",
    "is_factor",
    "is_deterministic",
    "is_latent",
    "is_observed",
    "run_traced",
    "log_joint",
    "vectorise",
    "quiet_validation",
]


class Plate(NamedTuple):
    """A plate a site sits in: its name, the batch dim it owns (negative) and its size."""

    name: str
    dim: int
    size: int


def is_subsample(site: Mapping[str, Any]) -> bool:
    """The sample site a plate records for its indices."""
    return site["type"] == "sample" and isinstance(site["fn"], _Subsample)


def is_factor(site: Mapping[str, Any]) -> bool:
    """A ``pyro.factor`` site: an auxiliary observed ``Unit`` distribution with no data behind it."""
    return site["type"] == "sample" and bool(site["infer"].get("is_auxiliary")) and site["is_observed"]


def is_deterministic(site: Mapping[str, Any]) -> bool:
    """A ``pyro.deterministic`` site."""
    return site["type"] == "sample" and bool(site["infer"].get("_deterministic"))


def is_latent(site: Mapping[str, Any]) -> bool:
    """A sampled, unobserved site that inference must infer."""
    return site["type"] == "sample" and not site["is_observed"] and not is_subsample(site) and not is_deterministic(site)


def is_observed(site: Mapping[str, Any]) -> bool:
    """An observed data site (not a factor, not a deterministic site)."""
    return site["type"] == "sample" and site["is_observed"] and not is_factor(site) and not is_deterministic(site)


class SetLatent(Messenger):
    """Fix latent sites at ``values`` (constrained); the sites stay latent and keep their log density."""

    def __init__(self, values: Mapping[str, Tensor]) -> None:
        super().__init__()
        self.values = values

    def _pyro_sample(self, msg: Any) -> None:
        if msg["is_observed"] or msg["name"] not in self.values:
            return
        msg["value"] = self.values[msg["name"]]
        msg["done"] = True


class Unconstrain(Messenger):
    """Fix latent sites from the flat unconstrained vector ``u``, one slice per site.

    :param layout: ``{site: (unconstrained shape, start, stop)}``.
    :param Tensor u: one point, ``(dim,)``.

    After the program has run, :attr:`log_abs_det` holds ``sum_sites log |det dT/du|``.
    """

    def __init__(self, layout: Mapping[str, tuple[torch.Size, int, int]], u: Tensor) -> None:
        super().__init__()
        self.layout = layout
        self.u = u
        self.log_abs_det: Tensor = u.new_zeros(())
        self.seen: list[str] = []

    def _pyro_sample(self, msg: Any) -> None:
        name = msg["name"]
        if msg["is_observed"] or name not in self.layout:
            return
        shape, start, stop = self.layout[name]
        raw = self.u[start:stop].reshape(shape)
        transform = biject_to(msg["fn"].support)
        value = transform(raw)
        self.log_abs_det = self.log_abs_det + transform.log_abs_det_jacobian(raw, value).sum()
        msg["value"] = value
        msg["done"] = True
        self.seen.append(name)


class Unobserve(Messenger):
    """Sample the observed sites ``names`` instead of observing them (posterior predictive replicates).

    Unlike ``poutine.uncondition`` it leaves deterministic and factor sites alone: redrawing a
    deterministic site from its ``Delta`` inside a plate would broadcast it into the plate's dims.
    """

    def __init__(self, names: set[str]) -> None:
        super().__init__()
        self.names = names

    def _pyro_sample(self, msg: Any) -> None:
        if msg["is_observed"] and msg["name"] in self.names:
            msg["is_observed"] = False
            msg["value"] = None
            msg["done"] = False


class LocalParams(Messenger):
    """Serve global ``pyro.param`` statements from :attr:`store` instead of Pyro's param store.

    The store maps a parameter's name to its *unconstrained* leaf tensor; a statement seen for the
    first time creates it from its initial value. A module's own parameters (``PyroModule`` in
    module-local mode, or ``pyro.module``, whose initial value is the module's ``nn.Parameter``)
    are used as they are. With ``trainable=False`` new leaves do not require gradients.
    """

    def __init__(self, store: dict[str, Tensor], constraints_: dict[str, Any], *, trainable: bool = True) -> None:
        super().__init__()
        self.store = store
        self.constraints = constraints_
        self.trainable = trainable

    def _pyro_param(self, msg: Any) -> None:
        if getattr(msg["fn"], "__self__", None) is not _PYRO_PARAM_STORE:
            return  # a PyroModule's module-local parameter: it holds its own value
        name = msg["args"][0]
        constraint = msg["kwargs"].get("constraint", constraints.real)
        if name not in self.store:
            if len(msg["args"]) < 2 or msg["args"][1] is None:
                raise ValueError(f"pyro.param({name!r}) has no initial value and none was stored for it.")
            init = msg["args"][1]
            init = init() if callable(init) and not isinstance(init, Tensor) else init
            leaf: Tensor
            if isinstance(init, torch.nn.Parameter) and constraint is constraints.real:
                leaf = init  # pyro.module: train the module's own parameter
            else:
                with torch.no_grad():
                    leaf = biject_to(constraint).inv(torch.as_tensor(init)).clone()
                leaf.requires_grad_(self.trainable)
            self.store[name] = leaf
            self.constraints[name] = constraint
        leaf = self.store[name]
        if self.trainable and not leaf.requires_grad:  # first seen by a run that held it fixed
            leaf.requires_grad_(True)
        value = biject_to(self.constraints[name])(leaf)
        msg["value"] = value
        msg["done"] = True


@contextlib.contextmanager
def quiet_validation() -> Iterator[None]:
    """Pyro's and torch's argument validation off: its checks branch on values (no ``vmap``) and cost time."""
    with pyro.validation_enabled(False):
        yield


def run_traced(
    model: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any], *handlers: Messenger
) -> Trace:
    """Run ``model(*args, **kwargs)`` under ``handlers`` (outermost first) and return its trace.

    The run is blocked from any handler the caller has open, so it leaves no trace outside.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(poutine.block())
        tracer = stack.enter_context(poutine.trace())
        for handler in handlers:
            stack.enter_context(handler)
        model(*args, **kwargs)
    return tracer.trace


def log_joint(trace: Trace) -> Tensor:
    """``sum over sample sites of scale * mask * log p(value)``: latent, observed and factor sites."""
    total: Tensor | float = 0.0
    nodes: Any = trace.nodes
    for site in nodes.values():
        if site["type"] != "sample" or is_subsample(site) or is_deterministic(site):
            continue
        log_p = scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"], site["mask"])
        total = total + log_p.sum()
    return torch.as_tensor(total)


def pointwise_log_prob(site: Mapping[str, Any]) -> Tensor:
    """``log p(value)`` of an observed site per batch element, masked (``0`` where masked out)."""
    log_p = site["fn"].log_prob(site["value"])
    mask = site["mask"]
    if mask is None:
        return log_p
    if isinstance(mask, bool):
        return log_p if mask else torch.zeros_like(log_p)
    return torch.where(mask, log_p, torch.zeros_like(log_p))


def vectorise(
    fn: Callable[[dict[str, Tensor]], dict[str, Tensor]],
    inputs: Mapping[str, Tensor],
    num: int,
    *,
    try_vmap: bool = True,
    chunk_size: int = 1000,
) -> tuple[dict[str, Tensor], bool]:
    """``fn`` applied to each of ``num`` rows of ``inputs``, outputs stacked along a new leading dim.

    Uses ``torch.func.vmap`` (random draws differ between rows) in chunks of ``chunk_size`` rows;
    if ``vmap`` cannot batch the program (or ``try_vmap`` is False), runs a loop over rows.

    :returns: the stacked outputs and whether ``vmap`` was used.
    """
    if try_vmap:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # vmap's fallback-performance notices are not the user's
                pieces = []
                for start in range(0, num, chunk_size):
                    part = {k: v[start : start + chunk_size] for k, v in inputs.items()}
                    size = min(chunk_size, num - start)
                    index = torch.arange(size, device=device_of(inputs))
                    pieces.append(torch.func.vmap(lambda i, p: fn(p), randomness="different")(index, part))
            return _concat(pieces), True
        except (RuntimeError, ValueError, TypeError, NotImplementedError):
            pass  # not batchable: an in-place update, a Python branch on a value, an op without a batch rule
    rows = [fn({k: v[i] for k, v in inputs.items()}) for i in range(num)]
    return ({k: torch.stack([r[k] for r in rows]) for k in rows[0]} if rows else {}), False


def _concat(pieces: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    if len(pieces) == 1:
        return pieces[0]
    return {k: torch.cat([p[k] for p in pieces]) for k in pieces[0]}
