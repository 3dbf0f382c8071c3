"""The flat log density of any static Pyro program: the ``"trace"`` kernel.

The program runs under :class:`~probgen.infer._trace.Unconstrain`, which reads every latent site
from a slice of one unconstrained vector ``u`` and maps it through ``biject_to(support)`` as the
program runs, so the log joint in the unconstrained space is::

    log p(u) = sum_sample_sites scale * mask * log p(value) + sum_latent_sites log |det dT/du|

Chains are batched with ``torch.func.vmap`` over the rows of ``u``, or, for programs whose
operations cannot be batched, by a loop over rows. The evaluation is plain tensor code, so a
sampler on a long run captures it into a graph (:func:`~probgen.infer._capture.capture`), checks
the graph at a second point and compiles it.

Example:

>>> import pyro, pyro.distributions as dist
>>> def model(y):
...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
...     scale = pyro.sample("scale", dist.HalfNormal(1.0))
...     with pyro.plate("n", len(y)):
...         pyro.sample("obs", dist.Normal(mu, scale), obs=y)
>>> density = TraceLogDensity(model, (torch.zeros(3),), {}, {"mu": (), "scale": ()}, torch.float64)
>>> value, grad = density.value_and_grad(torch.zeros(2, 2, dtype=torch.float64))
>>> value.shape, grad.shape
(torch.Size([2]), torch.Size([2, 2]))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import pyro
import torch
from torch import Tensor
from torch.distributions import biject_to

from probgen._device import device_of
from probgen.infer import _trace
from probgen.infer._flat import FlatLogDensity, SiteSlice

__all__ = ["TraceLogDensity", "INIT_RADIUS", "INIT_ATTEMPTS"]

#: Starting points are drawn uniformly from ``[-INIT_RADIUS, INIT_RADIUS]`` in the unconstrained
#: space, as Pyro's and NumPyro's ``init_to_uniform`` do.
INIT_RADIUS = 2.0
#: Draws per chain before giving up on finding a starting point with a finite log density.
INIT_ATTEMPTS = 100

Program = Callable[..., Any]


def _unconstrained_shape(value: Tensor, support: Any) -> torch.Size:
    """The shape of ``biject_to(support).inv(value)`` (a simplex of K has K - 1 free coordinates)."""
    transform = biject_to(support)
    with torch.no_grad():
        return transform.inv(value).shape


class TraceLogDensity(FlatLogDensity):
    """The log joint of a Pyro program's latent sites, as a function of one flat unconstrained vector.

    :param program: the Pyro callable.
    :param tuple args: its positional data.
    :param dict kwargs: its keyword data.
    :param latent: ``{site: shape}`` of every latent site, in sampling order.
    :param dtype: the floating dtype of ``u``.
    :param dict params: values of the program's ``pyro.param`` statements (unconstrained), held fixed.
    :param dict param_constraints: their constraints.
    :param dict values: a prototype value of every latent site, to size its unconstrained slice;
        drawn from the program when not given.
    """

    kernel = "trace"

    def __init__(
        self,
        program: Program,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        latent: Mapping[str, tuple[int, ...]],
        dtype: torch.dtype,
        *,
        params: dict[str, Tensor] | None = None,
        param_constraints: dict[str, Any] | None = None,
        values: Mapping[str, Tensor] | None = None,
        supports: Mapping[str, Any] | None = None,
    ) -> None:
        self.program = program
        self.args = args
        self.kwargs = kwargs
        self.params = {} if params is None else params
        self.param_constraints = {} if param_constraints is None else param_constraints
        if values is None or supports is None:
            values, supports = self._prototype()
        layout: dict[str, tuple[torch.Size, int, int]] = {}
        sites = []
        start = 0
        for name, shape in latent.items():
            raw_shape = _unconstrained_shape(values[name], supports[name])
            size = math.prod(raw_shape)
            transform = biject_to(supports[name])
            identity = transform == biject_to(torch.distributions.constraints.real)
            sites.append(SiteSlice(name, torch.Size(shape), start, start + size, transform, identity))
            layout[name] = (raw_shape, start, start + size)
            start += size
        self.layout = layout
        super().__init__(tuple(sites), dtype, device_of(*args, *kwargs.values(), *values.values()))
        self._use_vmap = True

    def _prototype(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        with _trace.quiet_validation():
            trace = _trace.run_traced(self.program, self.args, self.kwargs, *self._handlers())
        nodes: Any = trace.nodes
        latent = [site for site in nodes.values() if _trace.is_latent(site)]
        return {s["name"]: s["value"] for s in latent}, {s["name"]: s["fn"].support for s in latent}

    def _handlers(self) -> list[Any]:
        return [_trace.LocalParams(self.params, self.param_constraints, trainable=False)]

    # -- the eager function ---------------------------------------------------------------------

    def _one(self, u: Tensor) -> Tensor:
        """``log p(u)`` for one point ``(dim,)``."""
        unconstrain = _trace.Unconstrain(self.layout, u)
        trace = _trace.run_traced(self.program, self.args, self.kwargs, *self._handlers(), unconstrain)
        if len(unconstrain.seen) != len(self.layout):
            missing = sorted(set(self.layout) - set(unconstrain.seen))
            raise ValueError(
                f"the model did not sample {', '.join(map(repr, missing))} on this run; probgen needs a "
                "static model, which samples the same latent sites with the same shapes on every run."
            )
        return _trace.log_joint(trace) + unconstrain.log_abs_det

    def _batched(self, u: Tensor, use_vmap: bool) -> Tensor:
        if use_vmap:
            return torch.func.vmap(self._one)(u)
        return torch.stack([self._one(row) for row in u])

    def eager_value_and_grad(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`value_and_grad` through the program itself (no capture)."""
        with torch.enable_grad(), _trace.quiet_validation():
            u = u.detach().requires_grad_(True)
            if self._use_vmap:
                try:
                    value = self._batched(u, True)
                except (RuntimeError, ValueError, TypeError, NotImplementedError) as error:
                    if "static model" in str(error):
                        raise
                    self._use_vmap = False
            if not self._use_vmap:
                value = self._batched(u, False)
            (grad,) = torch.autograd.grad(value.sum(), u, allow_unused=True)
        if grad is None:
            grad = torch.zeros_like(u)
        return value.detach(), grad.detach()

    def value_and_grad(self, u: Tensor) -> tuple[Tensor, Tensor]:
        return self.eager_value_and_grad(u)

    # -- starting points and draws ----------------------------------------------------------------

    def init_positions(self, num: int, generator: torch.Generator) -> Tensor:
        """Uniform draws from ``[-2, 2]`` per unconstrained coordinate, redrawn where the log density is not finite.

        :raises ValueError: if some chain finds no finite point in :data:`INIT_ATTEMPTS` draws.
        """
        def uniform() -> Tensor:
            return torch.rand(num, self.dim, generator=generator, dtype=self.dtype, device=self.device) * 2 - 1

        u = uniform() * INIT_RADIUS
        for _ in range(INIT_ATTEMPTS):
            bad = ~torch.isfinite(self.eager_value_and_grad(u)[0])
            if not bad.any():
                return u
            fresh = uniform() * INIT_RADIUS
            u = torch.where(bad[:, None], fresh, u)
        raise ValueError(
            f"found no starting point with a finite log density in {INIT_ATTEMPTS} uniform draws from "
            f"[-{INIT_RADIUS}, {INIT_RADIUS}] (unconstrained); check that the data are possible under the "
            "model's supports (e.g. positive data for a positive distribution)."
        )

    def replay(self, u: Tensor) -> dict[str, Tensor]:
        """The latent and deterministic site values at unconstrained points ``u`` ``(num, dim)``."""

        def one(row: dict[str, Tensor]) -> dict[str, Tensor]:
            unconstrain = _trace.Unconstrain(self.layout, row["u"])
            trace = _trace.run_traced(self.program, self.args, self.kwargs, *self._handlers(), unconstrain)
            nodes: Any = trace.nodes
            return {
                name: site["value"] for name, site in nodes.items() if _trace.is_latent(site) or _trace.is_deterministic(site)
            }

        with torch.no_grad(), _trace.quiet_validation():
            out, _ = _trace.vectorise(one, {"u": u}, u.shape[0], try_vmap=self._use_vmap)
        return out

    def pack(self, values: Mapping[str, Tensor]) -> Tensor:
        """Unconstrained points ``(num, dim)`` from every latent site's value ``{name: (num, *shape)}``.

        Each row runs the program conditioned on its values, so that a site whose support depends on
        other sites (``Uniform(0, tau)``) is unconstrained by the support it has there.
        """
        num = next(iter(values.values())).shape[0]
        rows = []
        with torch.no_grad(), _trace.quiet_validation():
            for row in range(num):
                given = {name: torch.as_tensor(values[name][row], dtype=self.dtype) for name in self.layout}
                program = pyro.poutine.condition(self.program, data=given)
                trace = _trace.run_traced(program, self.args, self.kwargs, *self._handlers())
                nodes: Any = trace.nodes
                pieces = [biject_to(nodes[name]["fn"].support).inv(given[name]).reshape(-1) for name in self.layout]
                rows.append(torch.cat(pieces))
        return torch.stack(rows).to(self.dtype)

    def unpack(self, u: Tensor) -> dict[str, Tensor]:
        """Site values (deterministic sites included) from ``u`` of shape ``(*batch, dim)``."""
        batch = u.shape[:-1]
        flat = self.replay(u.reshape(-1, self.dim))
        return {name: value.reshape(batch + value.shape[1:]) for name, value in flat.items()}
