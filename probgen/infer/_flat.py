"""A model's log joint as a function of one flat, unconstrained vector; the BNN's kernels.

NUTS evaluates ``log p(theta, y | x)`` and its gradient thousands of times per draw. Running
the Pyro model under ``poutine.trace`` for each of them costs more than the network itself on
small models, so :func:`compile_bnn` does the bookkeeping once: every latent site becomes a
slice of one vector ``u`` together with the bijection ``biject_to(prior.support)`` from the
real line onto the site's support, and the log joint in the unconstrained space::

    log p(u) = sum_sites [log prior(T(u_site)) + log|det J_T(u_site)|] + sum_i log p(y_i | f(x_i; w), globals)

is evaluated as plain torch on a batch of vectors ``u`` of shape ``(chains, dim)``, one row
per chain, so that all chains share the same tensor operations.

Three kernels compute it, all behind :class:`FlatLogDensity`:

* ``"mlp"``: an ``nn.Sequential`` of ``Linear`` layers and elementwise activations with
  Gaussian weight priors and a Gaussian, Bernoulli or categorical likelihood. The forward and
  backward passes are written out by hand (no autograd graph), and the first layer of all
  chains is one matrix product with the shared inputs.
* ``"fused"``: the same models and the same log joint in one C++ pass over blocks of data rows
  (:mod:`probgen.infer._native`), on the CPU, where a C++ compiler can build it; ``"auto"``
  takes it there, and ``"mlp"`` elsewhere.
* ``"autograd"``: any other BNN. The network runs through :meth:`BNN.forward_batched`
  (``torch.func.vmap``), priors and likelihood through their ``log_prob``, and the gradient
  comes from ``torch.autograd``.

Example:

>>> from torch import nn
>>> from probgen.models.bnn import BNN
>>> model = BNN(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)))
>>> density = compile_bnn(model, torch.randn(10, 2), torch.randn(10), kernel="mlp")
>>> density.kernel, density.dim   # 2*3 + 3 + 3 + 1 weights and the noise scale
('mlp', 14)
>>> value, grad = density.value_and_grad(torch.zeros(4, density.dim))
>>> value.shape, grad.shape
(torch.Size([4]), torch.Size([4, 14]))
>>> density.unpack(torch.zeros(4, density.dim))["noise_scale"]  # exp(0)
tensor([1., 1., 1., 1.])
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple, get_args

import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.distributions import biject_to, constraints
from torch.distributions.transforms import Transform

from probgen._device import fork_rng
from probgen._validate import check_choice
from probgen.infer import _native
from probgen.likelihoods import Bernoulli, Categorical, Gaussian
from probgen.models.bnn import BNN
from probgen.priors import normal_loc_scale

__all__ = ["FlatLogDensity", "BNNLogDensity", "SiteSlice", "compile_bnn", "Kernel", "KERNELS"]

Kernel = Literal["auto", "fused", "mlp", "autograd"]
KERNELS: tuple[str, ...] = get_args(Kernel)
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class SiteSlice(NamedTuple):
    """Where one latent site lives in the flat vector.

    :ivar str name: the Pyro site name.
    :ivar torch.Size shape: the site's (event) shape.
    :ivar int start: first index of its slice.
    :ivar int stop: one past the last index.
    :ivar transform: ``biject_to(prior.support)``, from the unconstrained slice to the site value.
    :ivar bool is_identity: whether the transform is the identity (real support).
    """

    name: str
    shape: torch.Size
    start: int
    stop: int
    transform: Transform
    is_identity: bool


def _layout(priors: Mapping[str, Any]) -> tuple[SiteSlice, ...]:
    sites = []
    start = 0
    for name, prior in priors.items():
        shape = prior.batch_shape + prior.event_shape
        size = math.prod(shape)
        transform = biject_to(prior.support)
        identity = prior.support is constraints.real or isinstance(
            prior.support, constraints.independent
        ) and prior.support.base_constraint is constraints.real
        sites.append(SiteSlice(name, torch.Size(shape), start, start + size, transform, identity))
        start += size
    return tuple(sites)


def _sum_rightmost(value: Tensor, batch_dims: int) -> Tensor:
    """Sum every dimension after the first ``batch_dims``."""
    return value.reshape(value.shape[:batch_dims] + (-1,)).sum(-1)


class FlatLogDensity(ABC):
    """``log p(u)`` of a model's latent sites packed into one unconstrained vector ``u``.

    Subclasses implement :meth:`value_and_grad` for ``u`` of shape ``(chains, dim)`` and
    :meth:`init_positions`; the layout (:attr:`sites`), :meth:`pack` and :meth:`unpack` are shared.
    :meth:`unpack` uses each site's static transform; a density whose transforms depend on other
    sites (the trace kernel) overrides it.

    :param sites: the layout, one :class:`SiteSlice` per latent site, in sampling order.
    :param dtype: the floating dtype of ``u``.
    :param device: the device of ``u`` (the data's); the CPU by default.
    """

    #: Which kernel this is (``"fused"``, ``"mlp"``, ``"autograd"`` or ``"trace"``).
    kernel: str = ""

    def __init__(self, sites: tuple[SiteSlice, ...], dtype: torch.dtype, device: torch.device | None = None) -> None:
        self.sites = sites
        self.dim = sites[-1].stop if sites else 0
        self._dtype = dtype
        #: Where ``u``, the data and every tensor of the sampler live.
        self.device = torch.device("cpu") if device is None else device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def work(self) -> int:
        """A rough count of multiply-adds per gradient of one chain (what compiling saves on)."""
        return self.dim

    @abstractmethod
    def value_and_grad(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """``log p(u)`` per row, ``(chains,)``, and its gradient, ``(chains, dim)``."""

    def log_density(self, u: Tensor) -> Tensor:
        """``log p(u)`` per row, without the gradient."""
        return self.value_and_grad(u)[0]

    @abstractmethod
    def init_positions(self, num: int, generator: torch.Generator) -> Tensor:
        """``num`` starting points in the unconstrained space, ``(num, dim)``, from ``generator``."""

    def start_from(self, values: Mapping[str, Tensor], fallback: Tensor) -> Tensor:
        """Starting points ``(chains, dim)`` at the given constrained site values, ``{name: (chains, *shape)}``.

        A site missing from ``values`` keeps its value at ``fallback`` (the default starting points,
        ``(chains, dim)``), so a user may start some sites and leave the rest to the sampler.

        :raises ValueError: for a value outside its site's support (its unconstrained value is not
            finite), or a point where the log density is not finite; the message names the chain.
        """
        current = {name: value for name, value in self.unpack(fallback).items() if name in self.names}
        current.update({name: value.to(device=self.device, dtype=self.dtype) for name, value in values.items()})
        u = self.pack(current).to(self.dtype)
        for site in self.sites:
            bad = ~torch.isfinite(u[:, site.start : site.stop]).all(dim=1)
            if bad.any():
                chain = int(bad.nonzero()[0, 0])
                raise ValueError(
                    f"init_params[{site.name!r}] for chain {chain} is outside the site's support or not finite; "
                    "start it at a value the site can take."
                )
        logp = self.log_density(u)
        if not torch.isfinite(logp).all():
            chain = int((~torch.isfinite(logp)).nonzero()[0, 0])
            raise ValueError(
                f"the log density is not finite at chain {chain}'s starting point (init_params); start it where the "
                "data are possible under the model."
            )
        return u

    @property
    def names(self) -> tuple[str, ...]:
        """The latent sites of the layout, in sampling order."""
        return tuple(site.name for site in self.sites)

    def unpack(self, u: Tensor) -> dict[str, Tensor]:
        """Constrained site values from ``u`` of shape ``(*batch, dim)``: ``{name: (*batch, *shape)}``."""
        batch = u.shape[:-1]
        out = {}
        for site in self.sites:
            raw = u[..., site.start : site.stop].reshape(batch + site.shape)
            out[site.name] = raw if site.is_identity else site.transform(raw)
        return out

    def pack(self, values: Mapping[str, Tensor]) -> Tensor:
        """The inverse of :meth:`unpack`: site values ``(*batch, *shape)`` to ``(*batch, dim)``."""
        pieces = []
        batch: tuple[int, ...] | None = None
        for site in self.sites:
            value = torch.as_tensor(values[site.name], dtype=self.dtype)
            if batch is None:
                batch = tuple(value.shape[: value.dim() - len(site.shape)])
            raw = value if site.is_identity else site.transform.inv(value)
            pieces.append(raw.reshape(batch + (-1,)))
        return torch.cat(pieces, dim=-1)


class BNNLogDensity(FlatLogDensity):
    """The flat log joint of a BNN conditioned on ``(x, y)``; its kernels subclass it.

    :param BNN model: the model; its deterministic parameters are held at their current values.
    :param Tensor x: inputs ``(n, features)``.
    :param Tensor y: targets ``(n,)`` or ``(n, d)``.
    """

    def __init__(self, model: BNN, x: Tensor, y: Tensor) -> None:
        self.model = model
        self.x = x
        self.y = y
        self.priors = model.priors
        super().__init__(_layout(self.priors), x.dtype, x.device)

    @property
    def work(self) -> int:
        return self.x.shape[0] * self.dim

    def sample_prior(self, num: int, generator: torch.Generator) -> Tensor:
        """``num`` prior draws in the unconstrained space, ``(num, dim)``, from ``generator``."""
        with fork_rng(self.device):
            torch.manual_seed(int(torch.randint(2**62, (), generator=generator, device=generator.device)))
            values = {name: prior.sample((num,)) for name, prior in self.priors.items()}
        return self.pack(values).to(self.dtype)

    def init_positions(self, num: int, generator: torch.Generator) -> Tensor:
        """Independent prior draws (what the ``"pyro"`` backend starts from too)."""
        return self.sample_prior(num, generator)


# -- autograd kernel: any BNN ------------------------------------------------------------------


class AutogradLogDensity(BNNLogDensity):
    """The log joint through the model's own pieces, with the gradient from autograd."""

    kernel = "autograd"

    def _log_joint(self, u: Tensor) -> Tensor:
        batch = u.shape[:-1]
        nb = len(batch)
        total = u.new_zeros(batch)
        values = {}
        for site in self.sites:
            raw = u[..., site.start : site.stop].reshape(batch + site.shape)
            if site.is_identity:
                value = raw
            else:
                value = site.transform(raw)
                total = total + _sum_rightmost(site.transform.log_abs_det_jacobian(raw, value), nb)
            total = total + _sum_rightmost(self.priors[site.name].log_prob(value), nb)
            values[site.name] = value
        weights = {k: values[k] for k in self.model.weight_priors}
        globals_ = {k: values[k] for k in self.model.global_priors}
        f = self.model.forward_batched(weights, self.x, batch_dims=nb)
        log_lik = self.model.likelihood.distribution(f, globals_).log_prob(self.y)
        return total + _sum_rightmost(log_lik, nb)

    def value_and_grad(self, u: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            u = u.detach().requires_grad_(True)
            value = self._log_joint(u)
            (grad,) = torch.autograd.grad(value.sum(), u)
        return value.detach(), grad

    def log_density(self, u: Tensor) -> Tensor:
        with torch.no_grad():
            return self._log_joint(u)


# -- mlp kernel: hand-written forward and backward passes -----------------------------------


def _tanh(z: Tensor) -> Tensor:
    # tanh(z) = 2 sigmoid(2z) - 1. torch's CPU tanh costs ~10x its sigmoid here (0.67 ms vs
    # 0.04 ms for 200k float32 values), and the network's activations dominate a gradient.
    return torch.sigmoid(2 * z).mul_(2).sub_(1)


def _tanh_grad(a: Tensor) -> Tensor:
    return 1 - a * a


def _sigmoid_grad(a: Tensor) -> Tensor:
    return a * (1 - a)


def _relu_grad(a: Tensor) -> Tensor:
    return (a > 0).to(a.dtype)


#: activation module type -> (forward, derivative as a function of the activation's output)
_ACTIVATIONS: dict[type, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor] | None]] = {
    nn.Tanh: (_tanh, _tanh_grad),
    nn.Sigmoid: (torch.sigmoid, _sigmoid_grad),
    nn.ReLU: (torch.relu, _relu_grad),
    nn.Identity: (lambda z: z, None),
}


class _Layer(NamedTuple):
    weight: str | Tensor  # site name, or a fixed tensor for a deterministic parameter
    bias: str | Tensor | None
    activation: type | None  # applied after the affine map


def _mlp_layers(model: BNN) -> list[_Layer] | None:
    """The network as affine layers with activations, or ``None`` if it is not such an MLP.

    Accepts an ``nn.Sequential`` of ``nn.Linear`` layers, each optionally followed by one
    activation from :data:`_ACTIVATIONS`, or a single ``nn.Linear``.
    """
    net = model.net
    if type(net) is nn.Linear:
        modules: list[tuple[str, nn.Module]] = [("", net)]
    elif isinstance(net, nn.Sequential):
        modules = [(f"{index}.", module) for index, module in enumerate(net)]
    else:
        return None
    layers: list[_Layer] = []
    for prefix, module in modules:
        if type(module) is nn.Linear:
            parts: list[str | Tensor | None] = []
            for attr in ("weight", "bias"):
                name = prefix + attr
                if name in model.weight_priors:
                    if normal_loc_scale(model.weight_priors[name]) is None:
                        return None
                    parts.append(name)
                else:
                    param = getattr(module, attr)
                    parts.append(None if param is None else param.detach())
            if parts[0] is None:
                return None
            layers.append(_Layer(parts[0], parts[1], None))
        elif type(module) in _ACTIVATIONS:
            if not layers or layers[-1].activation is not None:
                return None
            layers[-1] = layers[-1]._replace(activation=type(module))
        else:
            return None
    covered = {part for layer in layers for part in (layer.weight, layer.bias) if isinstance(part, str)}
    if not layers or covered != set(model.weight_priors):
        return None
    return layers


class MLPLogDensity(BNNLogDensity):
    """Hand-written log joint and gradient of an MLP BNN, batched over chains.

    Activations are ``(n, chains, width)`` tensors, data-major, so that the first layer of
    every chain is one ``(n, in) @ (in, chains * width)`` product with the shared inputs, and
    its weight gradient the product ``x^T @ delta``.
    """

    kernel = "mlp"

    def __init__(self, model: BNN, x: Tensor, y: Tensor, layers: list[_Layer]) -> None:
        super().__init__(model, x, y)
        self.layers = layers
        self.index = {site.name: site for site in self.sites}
        self.x_t = x.T.contiguous()
        # 1. Gaussian weight priors as one vector each of means and precisions over u
        #    (zero precision on the slices of non-weight sites)
        loc = x.new_zeros(self.dim)
        prec = x.new_zeros(self.dim)
        const = 0.0
        for name in model.weight_priors:
            params = normal_loc_scale(model.weight_priors[name])
            if params is None:  # _mlp_layers checked every weight prior
                raise TypeError(f"the prior of {name!r} is not Normal.")
            site = self.index[name]
            mean, scale = (p.to(self.dtype).reshape(-1) for p in params)
            loc[site.start : site.stop] = mean
            prec[site.start : site.stop] = scale.pow(-2)
            const -= float(scale.log().sum()) + scale.numel() * _HALF_LOG_2PI
        self.prior_loc, self.prior_prec, self.prior_const = loc, prec, const
        # 2. the likelihood
        lik = model.likelihood
        self.lik = lik
        n = y.shape[0]
        if isinstance(lik, Categorical):
            self.target = nn.functional.one_hot(y.long(), lik.num_classes).to(self.dtype)[:, None, :]
        else:
            self.target = y.reshape(n, 1, -1).to(self.dtype)  # (n, 1, k) against f (n, chains, k)
        self.noise_site = self.index.get("noise_scale") if isinstance(lik, Gaussian) else None
        self.noise_prior_scale = 1.0
        if self.noise_site is not None:
            self.noise_prior_scale = float(model.global_priors["noise_scale"].scale)
        # 3. gradient pieces are concatenated in site order
        self.order = [site.name for site in self.sites]

    @staticmethod
    def supports(model: BNN) -> bool:
        """Whether the ``"mlp"`` kernel can evaluate ``model``."""
        lik = model.likelihood
        if type(lik) not in (Gaussian, Bernoulli, Categorical):
            return False
        globals_ = model.global_priors
        if type(lik) is Gaussian and lik.noise_scale is None:
            if set(globals_) != {"noise_scale"} or type(globals_["noise_scale"]) is not dist.HalfNormal:
                return False
        elif globals_:
            return False
        return _mlp_layers(model) is not None

    def _param(self, u: Tensor, part: str | Tensor | None) -> Tensor | None:
        if part is None or isinstance(part, Tensor):
            return part
        site = self.index[part]
        return u[:, site.start : site.stop].reshape((u.shape[0],) + site.shape)

    def _log_lik(self, f: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """``sum_i log p(y_i | f_i)`` per chain, its gradient in ``f``, and in ``log(noise_scale)``."""
        if isinstance(self.lik, Gaussian):
            n, _, k = self.target.shape
            res = self.target - f
            sq = res.square().sum((0, 2))
            if self.noise_site is None:
                log_s = torch.full_like(sq, math.log(self.lik.noise_scale))  # type: ignore[arg-type]
            else:
                log_s = u[:, self.noise_site.start]
            inv_var = torch.exp(-2 * log_s)
            value = -0.5 * sq * inv_var - n * k * (log_s + _HALF_LOG_2PI)
            grad_log_s = None if self.noise_site is None else sq * inv_var - n * k
            return value, res * inv_var[:, None], grad_log_s
        if isinstance(self.lik, Bernoulli):
            logits = f[..., 0]
            target = self.target[..., 0]
            value = (target * logits - nn.functional.softplus(logits)).sum(0)
            return value, (target - torch.sigmoid(logits))[..., None], None
        log_probs = torch.log_softmax(f, dim=-1)
        value = (log_probs * self.target).sum((0, 2))
        return value, self.target - log_probs.exp(), None

    def value_and_grad(self, u: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            return self._value_and_grad(u.detach())

    def _value_and_grad(self, u: Tensor) -> tuple[Tensor, Tensor]:
        chains = u.shape[0]
        n = self.x.shape[0]
        pieces: dict[str, Tensor] = {}
        # 1. forward pass: layer l maps inputs[l] to outputs[l], (n, chains, width) after layer 0
        inputs: list[Tensor] = []
        outputs: list[Tensor] = []
        h = self.x
        for index, layer in enumerate(self.layers):
            inputs.append(h)
            weight = self._param(u, layer.weight)
            bias = self._param(u, layer.bias)
            assert weight is not None  # _mlp_layers rejects layers without a weight
            if index == 0 and weight.dim() == 3:  # every chain in one product with the shared x
                out_dim = weight.shape[1]
                w = weight.reshape(-1, weight.shape[-1]).T
                if bias is not None and bias.dim() == 2:
                    pre = torch.addmm(bias.reshape(-1), h, w).view(n, chains, out_dim)
                else:
                    pre = (h @ w).view(n, chains, out_dim) + (0 if bias is None else bias)
            elif index == 0:
                pre = (h @ weight.T)[:, None, :] + (0 if bias is None else bias)
                pre = pre.expand(n, chains, weight.shape[0])
            else:
                if weight.dim() == 2:
                    pre = h @ weight.T
                elif weight.shape[1] == 1:
                    pre = (h * weight[:, 0]).sum(-1, keepdim=True)
                else:
                    pre = torch.einsum("nci,coi->nco", h, weight)
                if bias is not None:
                    pre = pre + bias
            h = pre if layer.activation is None else _ACTIVATIONS[layer.activation][0](pre)
            outputs.append(h)
        # 2. likelihood, and its gradient in the network output
        log_lik, delta, grad_log_s = self._log_lik(h, u)
        # 3. backward pass: delta is d log p / d (output of layer l)
        for index in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[index]
            if layer.activation is not None:
                derivative = _ACTIVATIONS[layer.activation][1]
                if derivative is not None:
                    delta = delta * derivative(outputs[index])
            if isinstance(layer.bias, str):
                pieces[layer.bias] = delta.sum(0)
            weight = self._param(u, layer.weight)
            assert weight is not None
            inp = inputs[index]
            if isinstance(layer.weight, str):
                if index == 0:  # (in, n) @ (n, chains * out): one product for every chain
                    g_w = (self.x_t @ delta.reshape(n, -1)).T
                elif weight.shape[1] == 1:
                    g_w = (delta * inp).sum(0)
                else:
                    g_w = torch.einsum("nco,nci->coi", delta, inp)
                pieces[layer.weight] = g_w.reshape(chains, -1)
            if index > 0:
                if weight.dim() == 2:
                    delta = delta @ weight
                elif weight.shape[1] == 1:
                    delta = delta * weight[:, 0]
                else:
                    delta = torch.einsum("nco,coi->nci", delta, weight)
        # 4. the noise scale: s = exp(u_s) ~ HalfNormal(s0), with log|ds/du_s| = u_s
        value = log_lik
        if self.noise_site is not None and grad_log_s is not None:
            log_s = u[:, self.noise_site.start]
            s0 = self.noise_prior_scale
            ratio = torch.exp(2 * log_s) / (s0 * s0)
            value = value + (math.log(2) - _HALF_LOG_2PI - math.log(s0)) - 0.5 * ratio + log_s
            pieces[self.noise_site.name] = (grad_log_s - ratio + 1)[:, None]
        # 5. Gaussian weight priors: log N(w; loc, scale) and its gradient -(w - loc) / scale^2
        diff = u - self.prior_loc
        scaled = diff * self.prior_prec
        value = value - 0.5 * (diff * scaled).sum(-1) + self.prior_const
        grad = torch.cat([pieces[name] for name in self.order], dim=-1) - scaled
        return value, grad


class FusedMLPLogDensity(MLPLogDensity):
    """The ``"mlp"`` kernel's log joint and gradient in one C++ pass, the operator ``probgen::fused_mlp``.

    :mod:`probgen.infer._native` builds and loads it; ``_mlp_kernel.cpp`` beside it is the pass.

    The data rows are the vector lanes, a block of rows at a time, so no unit is padded and no
    ``(n, chains, width)`` activation is written out; on the 8-50-1 BNN of
    ``benchmarks/fused_mlp.py`` it is about 1.3x faster than the compiled ``"mlp"`` kernel. The
    sampler's compiled loop calls it as one operator, from C++.
    """

    kernel = "fused"

    def __init__(self, model: BNN, x: Tensor, y: Tensor, layers: list[_Layer]) -> None:
        super().__init__(model, x, y, layers)
        self.fixed: list[Tensor] = []

        def offset(part: str | Tensor | None) -> tuple[int, int]:  # (offset in u, index in fixed)
            if isinstance(part, str):
                return self.index[part].start, -1
            if part is None:
                return -1, -1
            self.fixed.append(part.to(self.dtype).contiguous())
            return -1, len(self.fixed) - 1

        widths = [x.shape[1]]
        for layer in layers:
            weight = layer.weight
            widths.append((self.index[weight].shape if isinstance(weight, str) else weight.shape)[0])
        weights = [offset(layer.weight) for layer in layers]
        biases = [offset(layer.bias) for layer in layers]
        lik = self.lik
        kind = "gaussian" if isinstance(lik, Gaussian) else "bernoulli" if isinstance(lik, Bernoulli) else "categorical"
        self.spec = [
            _native.LIKELIHOODS[kind],
            -1 if self.noise_site is None else self.noise_site.start,
            len(layers),
            *widths,
            *(_native.ACTIVATIONS[_NATIVE_ACTIVATIONS[layer.activation]] for layer in layers),
            *(w for w, _ in weights),
            *(b for b, _ in biases),
            *(i for _, i in weights),
            *(i for _, i in biases),
        ]
        fixed_noise = lik.noise_scale if isinstance(lik, Gaussian) else None
        self.scalars = [math.log(fixed_noise) if fixed_noise else 0.0, self.prior_const, self.noise_prior_scale]
        self.target_t = self.target[:, 0, :].T.contiguous()

    @staticmethod
    def supports(model: BNN, x: Tensor | None = None) -> bool:
        """Whether the ``"fused"`` kernel can evaluate ``model`` (on inputs like ``x``) here."""
        if x is not None and (x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64)):
            return False
        layers = _mlp_layers(model)
        return layers is not None and len(layers) <= _native.MAX_LAYERS and MLPLogDensity.supports(model) and _native.available()

    def __setstate__(self, state: dict[str, Any]) -> None:
        # unpickled in another process (a spawned executor's job): the operator must be loaded there too
        self.__dict__.update(state)
        if not _native.available():
            raise RuntimeError("this process cannot build probgen's C++ MLP kernel; compile the model with kernel='mlp'.")

    def _value_and_grad(self, u: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ops.probgen.fused_mlp(u, self.x_t, self.target_t, self.prior_loc, self.prior_prec, self.fixed, self.spec, self.scalars)


#: activation module type -> the C++ pass's name for it
_NATIVE_ACTIVATIONS: dict[type | None, str] = {None: "identity", nn.Identity: "identity", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.ReLU: "relu"}


def compile_bnn(model: BNN, x: Tensor, y: Tensor, *, kernel: str = "auto") -> BNNLogDensity:
    """Compile ``model`` conditioned on ``(x, y)`` to a :class:`FlatLogDensity`.

    :param BNN model: the model; deterministic parameters are held at their current values.
    :param Tensor x: inputs, already checked by ``model.check_data``.
    :param Tensor y: targets, already checked by ``model.check_data``.
    :param str kernel: ``"auto"`` (``"fused"`` when the model is an MLP that kernel supports on
        ``x``'s device and dtype and a C++ compiler is at hand, else ``"mlp"`` when the model is
        such an MLP, else ``"autograd"``), ``"fused"``, ``"mlp"`` or ``"autograd"``.
    :raises ValueError: for an unknown kernel, or ``"fused"``/``"mlp"`` on a model it cannot evaluate.
    """
    check_choice("kernel", kernel, KERNELS)
    if kernel == "auto":
        kernel = "fused" if FusedMLPLogDensity.supports(model, x) else "mlp" if MLPLogDensity.supports(model) else "autograd"
    if kernel in ("fused", "mlp"):
        layers = _mlp_layers(model)
        if layers is None or not MLPLogDensity.supports(model):
            raise ValueError(
                f"the {kernel!r} kernel needs an nn.Sequential of Linear layers and Tanh/Sigmoid/ReLU "
                "activations with Normal priors and a Gaussian, Bernoulli or Categorical "
                "likelihood; use kernel='autograd' for this model."
            )
        if kernel == "mlp":
            return MLPLogDensity(model, x, y, layers)
        if not FusedMLPLogDensity.supports(model, x):
            raise ValueError(
                f"the 'fused' kernel runs on the CPU in float32 or float64, for at most {_native.MAX_LAYERS} layers, "
                "and needs a C++ compiler ($CXX or g++) to build it; use kernel='mlp'."
            )
        return FusedMLPLogDensity(model, x, y, layers)
    return AutogradLogDensity(model, x, y)
