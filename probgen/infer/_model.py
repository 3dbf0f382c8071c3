"""What inference needs from a model, for probgen's BNN and for any static Pyro program.

Every inference entry point (:func:`~probgen.infer.mcmc.fit_nuts`, :func:`~probgen.infer.svi.fit_svi`,
:func:`~probgen.infer.arviz.load_result`) and every result talks to a model through one seam, the
:class:`InferenceModel`. It answers the questions inference asks:

* which data the model conditions on (:meth:`InferenceModel.bind` validates them once, at the boundary);
* which latent sites it samples, with which shapes and supports, and whether any is discrete;
* its log joint as a function of one flat unconstrained vector (:meth:`InferenceModel.flat_density`),
  which is what probgen's NUTS samples;
* how to complete, predict and score draws (deterministic sites, the posterior predictive, the
  pointwise log-likelihood of every observed site);
* what goes into ArviZ (dims, observed and constant data, attributes) and how to read it back.

Two implementations exist. :class:`~probgen.infer._bnn_model.BNNModel` is the fast, specialised
case: a :class:`~probgen.models.bnn.BNN`, whose flat density has hand-written kernels and whose
predictions are :class:`~probgen.infer.predictive.Prediction` objects.
:class:`~probgen.infer._pyro_model.PyroModel` is the general case: any callable Pyro program,
traced once, with its log joint evaluated by replaying the program.
:func:`~probgen.infer._dispatch.as_inference_model` picks one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from probgen._device import move
from probgen._types import SAMPLE_DIMS, Samples
from probgen.infer._flat import FlatLogDensity

__all__ = [
    "InferenceModel", "ModelData", "param_dims", "resolve_dim_clashes", "check_draw_shapes", "check_no_extra_latents",
    "check_model_kwargs",
]  # fmt: skip

#: Layers whose parameters get named dims: weights ``(out, in, *kernel)``, biases ``(out,)``.
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class ModelData:
    """The data a model is conditioned on, already validated: ``model(*args, **kwargs)``.

    :ivar tuple args: positional arguments, as the model's signature takes them.
    :ivar dict kwargs: keyword arguments (``model_kwargs=`` of the entry points).
    """

    args: tuple[Any, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)


class InferenceModel(ABC):
    """The seam between inference and a model; see the module docstring.

    Subclasses hold a private copy of the user's model (:attr:`model`) and implement the abstract
    methods. Draws passed in and returned are always shaped ``(chain, draw, *site_shape)``.
    """

    #: ``"bnn"`` or ``"pyro"``: which implementation this is (recorded in ArviZ attributes).
    kind: ClassVar[str] = ""
    #: The model as the user wrote it: a private copy, never the caller's object when it has state.
    model: Any

    # -- data -----------------------------------------------------------------------------------

    @abstractmethod
    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None, *, fit: bool) -> ModelData:
        """Validate and convert data for a fit (``fit=True``: something must be observed) or a prediction.

        :raises TypeError: for arguments the model does not take, or of the wrong type.
        :raises ValueError: for bad values (NaN, wrong shapes), or a fit that observes nothing.
        """

    def bind_on(
        self, device: torch.device | None, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None, *, fit: bool
    ) -> ModelData:
        """:meth:`bind`, with the data's tensors moved to ``device`` (``None``: where they are).

        The moved data are bound again, so whatever :meth:`bind` records of them (a Pyro program's
        structure, traced on the data) is of the data on ``device``.
        """
        data = self.bind(args, kwargs, fit=fit)
        if device is None:
            return data
        return self.bind(move(data.args, device), move(dict(data.kwargs), device), fit=fit)

    # -- structure ------------------------------------------------------------------------------

    @abstractmethod
    def latent_shapes(self, data: ModelData) -> dict[str, tuple[int, ...]]:
        """Every latent (sampled, unobserved, continuous) site and its shape, in sampling order."""

    def discrete_latents(self, data: ModelData) -> tuple[str, ...]:
        """Latent sites with a discrete support (only Pyro's own NUTS can enumerate them)."""
        return ()

    def subsampled_plates(self, data: ModelData) -> dict[str, tuple[int, int]]:
        """Plates that subsample: ``{name: (subsample_size, size)}``."""
        return {}

    def plate_nesting(self, data: ModelData) -> int:
        """How many batch dims the model's plates use (the dim left of them is free for draws)."""
        return 0

    # -- inference ------------------------------------------------------------------------------

    @abstractmethod
    def flat_density(self, data: ModelData) -> FlatLogDensity:
        """The log joint of the latent sites as a function of one flat unconstrained vector."""

    @abstractmethod
    def unpack(self, density: FlatLogDensity, draws: Tensor) -> Samples:
        """Unconstrained draws ``(chain, draw, dim)`` of ``density`` as site values, deterministic sites included."""

    @abstractmethod
    def complete(self, samples: Samples, data: ModelData) -> Samples:
        """``samples`` of the latent sites plus every deterministic site the model records."""

    def initial_values(self, data: ModelData) -> dict[str, Tensor]:
        """Starting values for some latent sites given the data (constrained); the rest start as the method's
        init strategy says. None by default."""
        return {}

    def program(self, *, trainable: bool = False) -> Any:
        """The Pyro callable to hand to Pyro's own inference (its NUTS, its ELBOs).

        :param bool trainable: whether the program's own parameters are being fitted (SVI).
        """
        return self.model

    def call_kwargs(self, *, batch_size: int | None) -> dict[str, Any]:
        """Extra keyword arguments of the Pyro program for one SVI step (minibatching)."""
        if batch_size is not None:
            raise ValueError(
                "batch_size minibatches probgen's BNN; in your own Pyro model write "
                "pyro.plate(name, size, subsample_size=...) instead."
            )
        return {}

    # -- predictions ----------------------------------------------------------------------------

    @abstractmethod
    def predict(self, samples: Samples, data: ModelData, *, seed: int) -> Any:
        """The posterior predictive at ``data``, vectorised over draws."""

    @abstractmethod
    def log_likelihood(self, samples: Samples, data: ModelData) -> dict[str, Tensor]:
        """Pointwise ``log p(obs_i | theta)`` of every observed site, ``(chain, draw, *batch)``."""

    @abstractmethod
    def posterior_predictive(self, samples: Samples, data: ModelData, *, seed: int) -> dict[str, Tensor]:
        """One draw of every observed site per posterior draw, at the data's own inputs."""

    # -- ArviZ ----------------------------------------------------------------------------------

    @abstractmethod
    def observed(self, data: ModelData) -> dict[str, Tensor]:
        """The observed values by site name (``observed_data``)."""

    @abstractmethod
    def constant(self, data: ModelData) -> dict[str, Tensor]:
        """The other inputs and the model's fixed parameters (``constant_data``)."""

    @abstractmethod
    def dims(self, samples: Samples, data: ModelData | None) -> dict[str, list[str]]:
        """ArviZ dims of every variable (without the leading ``chain``, ``draw``)."""

    @abstractmethod
    def attrs(self, samples: Samples, data: ModelData) -> dict[str, Any]:
        """NetCDF-safe attributes that :meth:`restore` needs to rebuild the data."""

    @abstractmethod
    def restore(
        self, observed: Mapping[str, np.ndarray], constant: Mapping[str, np.ndarray], attrs: Mapping[str, Any]
    ) -> ModelData | None:
        """The inverse of :meth:`observed`, :meth:`constant` and :meth:`attrs`; restores fixed parameters.

        Returns ``None`` when the file does not hold the whole data set.
        """

    @abstractmethod
    def check_sites(
        self, posterior: Mapping[str, np.ndarray], attrs: Mapping[str, Any], data: ModelData | None
    ) -> Samples:
        """The latent draws of a saved posterior as tensors, after checking them against this model
        (with ``data``, the data restored from the same file, when it holds them).

        :raises ValueError: if a site is missing, has another shape, or the file has latent sites
            that this model does not sample.
        """


def param_dims(net: nn.Module, name: str, ndim: int) -> list[str]:
    """Dims of parameter ``name`` of ``net``, named after its place in the module tree.

    A Linear or convolution layer at path ``"0"`` gives ``"0.weight"`` the dims
    ``("0.out", "0.in"[, "0.kernel_0", ...])`` and ``"0.bias"`` the dim ``("0.out",)``, so a
    layer's weight and bias share their output dim. Anything else gets ``"<name>_dim_<i>"``.
    """
    path, _, attr = name.rpartition(".")
    prefix = f"{path}." if path else ""
    try:
        module: nn.Module | None = net.get_submodule(path)
    except AttributeError:  # not a parameter path of this module
        module = None
    if isinstance(module, _LAYERS):
        if attr == "weight" and ndim >= 2:
            return [f"{prefix}out", f"{prefix}in", *(f"{prefix}kernel_{i}" for i in range(ndim - 2))]
        if attr == "bias" and ndim == 1:
            return [f"{prefix}out"]
    return [f"{name}_dim_{i}" for i in range(ndim)]


def resolve_dim_clashes(
    proposed: Mapping[str, list[str]], shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, list[str]]:
    """Dims per variable where a dim name that would get two sizes falls back to ``"<name>_dim_<i>"``."""
    sizes: dict[str, int] = {}
    dims: dict[str, list[str]] = {}
    for name, names in proposed.items():
        shape = shapes[name]
        if any(sizes.get(d, n) != n for d, n in zip(names, shape)) or len(set(names)) != len(names):
            names = [f"{name}_dim_{i}" for i in range(len(shape))]
        sizes.update(zip(names, shape))
        dims[name] = list(names)
    return dims


def check_draw_shapes(posterior: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]], dtype: torch.dtype) -> Samples:
    """Draws ``(chain, draw, *shape)`` of every site in ``shapes`` from a saved posterior, checked."""
    missing = [name for name in shapes if name not in posterior]
    if missing:
        raise ValueError(
            f"the posterior has no draws of {', '.join(map(repr, missing))}; it holds "
            f"{', '.join(map(repr, map(str, posterior)))}. Pass the model that was fitted "
            "(for a BNN: the same architecture, prior and likelihood)."
        )
    samples: Samples = {}
    for name, shape in shapes.items():
        values = posterior[name]
        if values.shape[len(SAMPLE_DIMS) :] != tuple(shape):
            raise ValueError(
                f"the posterior's {name!r} has shape {values.shape[len(SAMPLE_DIMS):]} but the model expects "
                f"{tuple(shape)}; pass the model that was fitted (the same architecture and data shapes)."
            )
        samples[name] = torch.tensor(values, dtype=dtype if np.issubdtype(values.dtype, np.floating) else None)
    return samples


def check_no_extra_latents(posterior_latents: list[str], model_latents: Mapping[str, Any]) -> None:
    """Raise if the file sampled latent sites that the model does not."""
    extra = [name for name in posterior_latents if name not in model_latents]
    if extra:
        raise ValueError(
            f"the posterior has draws of {', '.join(map(repr, extra))}, which this model does not sample "
            f"(it samples {', '.join(map(repr, model_latents)) or 'nothing'}); pass the model that was "
            "fitted, e.g. with the same likelihood (a learned or a fixed noise scale)."
        )


def check_model_kwargs(model_kwargs: Any) -> Mapping[str, Any]:
    """``model_kwargs`` as a mapping (``None`` is empty); anything else is a TypeError that says so."""
    if model_kwargs is None:
        return {}
    if not isinstance(model_kwargs, Mapping):
        raise TypeError(f"model_kwargs must be a dict of keyword data, got {type(model_kwargs).__name__}.")
    return model_kwargs
