"""probgen's BNN behind the inference seam: the fast, specialised case of :class:`InferenceModel`.

Its data are ``(x, y)``, its flat density uses the hand-written MLP kernel of
:mod:`probgen.infer._flat` where it applies, and its predictions are
:class:`~probgen.infer.predictive.Prediction` objects. In ArviZ its sites keep their module paths
(``"0.weight"``, dims ``"0.out"``, ``"0.in"``), the data are ``"x"`` and ``"obs"`` over ``obs_id``,
and the parameters the prior leaves deterministic go into ``constant_data`` under their
``state_dict`` keys, so that a saved posterior rebuilds the model exactly.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from probgen._types import SAMPLE_DIMS, Samples
from probgen.infer._flat import FlatLogDensity, compile_bnn
from probgen.infer._model import (
    InferenceModel,
    ModelData,
    check_draw_shapes,
    check_model_kwargs,
    check_no_extra_latents,
    param_dims,
    resolve_dim_clashes,
)
from probgen.infer.predictive import Prediction
from probgen.infer.predictive import log_likelihood as _bnn_log_likelihood
from probgen.infer.predictive import predict as _bnn_predict
from probgen.models.bnn import BNN

__all__ = ["BNNModel", "OBS", "INPUTS", "OBS_DIM", "FEATURE_DIM", "TARGET_DIM"]

#: The BNN's observed site, and its variable name in every data-shaped ArviZ group.
OBS = "obs"
#: The BNN's inputs' variable name in ``constant_data`` and ``predictions_constant_data``.
INPUTS = "x"
#: Dimension of observations (rows of x and y).
OBS_DIM = "obs_id"
#: Dimension of the input features (columns of a 2-D x).
FEATURE_DIM = "feature"
#: Dimension of the target columns of multi-output regression.
TARGET_DIM = "target"


def _data_dims(value: Tensor | np.ndarray, inner: str) -> list[str]:
    """``(obs_id, inner)`` for 2-D data, ``(obs_id,)`` for 1-D, numbered inner dims beyond."""
    if value.ndim <= 2:
        return [OBS_DIM, inner][: value.ndim]
    return [OBS_DIM, *(f"{inner}_{i}" for i in range(value.ndim - 1))]



class BNNModel(InferenceModel):
    """A :class:`~probgen.models.bnn.BNN` behind the inference seam: the fast, specialised case.

    Data are ``(x, y)``; the flat density uses the hand-written MLP kernel where it applies;
    predictions are :class:`~probgen.infer.predictive.Prediction` objects.
    """

    kind = "bnn"

    def __init__(self, model: BNN) -> None:
        self.model: BNN = copy.deepcopy(model)

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None, *, fit: bool) -> ModelData:
        kwargs = check_model_kwargs(kwargs)
        if kwargs:
            raise TypeError(
                f"a BNN takes its data positionally, fit(model, x, y); got model_kwargs {sorted(kwargs)}."
            )
        if fit and len(args) != 2:
            raise TypeError(f"fitting a BNN needs its data as (x, y), got {len(args)} positional argument(s).")
        if not 1 <= len(args) <= 2:
            raise TypeError(f"a BNN takes (x) or (x, y), got {len(args)} positional argument(s).")
        x, y = self.model.check_data(args[0], args[1] if len(args) == 2 else None)
        if y is None:
            if fit:
                raise ValueError("y is required to fit a model.")
            return ModelData((x,))
        return ModelData((x, y))

    def latent_shapes(self, data: ModelData) -> dict[str, tuple[int, ...]]:
        return {name: tuple(prior.event_shape) for name, prior in self.model.priors.items()}

    def flat_density(self, data: ModelData) -> FlatLogDensity:
        x, y = data.args
        return compile_bnn(self.model, x, y)

    def unpack(self, density: FlatLogDensity, draws: Tensor) -> Samples:
        return density.unpack(draws)

    def complete(self, samples: Samples, data: ModelData) -> Samples:
        return {name: samples[name] for name in self.model.site_names}

    def initial_values(self, data: ModelData) -> dict[str, Tensor]:
        """The likelihood's starting globals (a learned noise scale starts small); weights start from the prior."""
        return self.model.likelihood.initial_globals(data.args[1])

    def call_kwargs(self, *, batch_size: int | None) -> dict[str, Any]:
        return {} if batch_size is None else {"subsample_size": batch_size}

    def predict(self, samples: Samples, data: ModelData, *, seed: int) -> Prediction:
        return _bnn_predict(self.model, samples, data.args[0], seed=seed)

    def log_likelihood(self, samples: Samples, data: ModelData) -> dict[str, Tensor]:
        x, y = data.args
        return {OBS: _bnn_log_likelihood(self.model, samples, x, y)}

    def posterior_predictive(self, samples: Samples, data: ModelData, *, seed: int) -> dict[str, Tensor]:
        return {OBS: self.predict(samples, data, seed=seed).y}

    def observed(self, data: ModelData) -> dict[str, Tensor]:
        return {OBS: data.args[1]}

    def fixed_parameters(self) -> dict[str, Tensor]:
        """``model.state_dict()``: the parameters the prior leaves deterministic (and buffers)."""
        return {key: value.detach() for key, value in self.model.state_dict().items()}

    def constant(self, data: ModelData) -> dict[str, Tensor]:
        return {INPUTS: data.args[0], **self.fixed_parameters()}

    def dims(self, samples: Samples, data: ModelData | None) -> dict[str, list[str]]:
        model = self.model
        shapes: dict[str, tuple[int, ...]] = {name: tuple(v.shape[len(SAMPLE_DIMS) :]) for name, v in samples.items()}
        proposed: dict[str, list[str]] = {}
        for name, shape in shapes.items():
            in_net = name in model.weight_priors  # globals such as "noise_scale" are not parameters of the net
            proposed[name] = param_dims(model.net if in_net else nn.Module(), name, len(shape))
        for key, value in self.fixed_parameters().items():
            shapes[key] = tuple(value.shape)
            net_key = key.removeprefix("net.")
            root = model.net if net_key != key else model
            proposed[key] = param_dims(root, net_key, value.dim())
        dims = resolve_dim_clashes(proposed, shapes)
        if data is not None:
            dims[INPUTS] = _data_dims(data.args[0], FEATURE_DIM)
            if len(data.args) > 1:
                dims[OBS] = _data_dims(data.args[1], TARGET_DIM)  # log_likelihood drops the target dim
        return dims

    def attrs(self, samples: Samples, data: ModelData) -> dict[str, Any]:
        return {"likelihood": repr(self.model.likelihood), "latent_sites": json.dumps(list(self.model.site_names))}

    def restore(
        self, observed: Mapping[str, np.ndarray], constant: Mapping[str, np.ndarray], attrs: Mapping[str, Any]
    ) -> ModelData | None:
        state = self.model.state_dict()
        absent = [key for key in state if key not in constant]
        if absent:
            raise ValueError(
                f"constant_data has no values for the deterministic parameter(s) {', '.join(map(repr, absent))}; "
                "build the model with the prior of the fit (its deterministic= paths)."
            )
        loaded = {key: torch.tensor(np.asarray(constant[key]), dtype=value.dtype) for key, value in state.items()}
        for key, value in loaded.items():
            if value.shape != state[key].shape:
                raise ValueError(
                    f"constant_data's {key!r} has shape {tuple(value.shape)} but the model's has "
                    f"{tuple(state[key].shape)}; build the model with the architecture of the fit."
                )
        self.model.load_state_dict(loaded)
        if INPUTS not in constant or OBS not in observed:
            raise ValueError("the file has no training data (constant_data 'x', observed_data 'obs').")
        return self.bind((constant[INPUTS], observed[OBS]), None, fit=True)

    def check_sites(
        self, posterior: Mapping[str, np.ndarray], attrs: Mapping[str, Any], data: ModelData | None
    ) -> Samples:
        shapes = self.latent_shapes(ModelData(()))
        samples = check_draw_shapes(posterior, shapes, self.model.dtype)
        saved = attrs.get("latent_sites")
        check_no_extra_latents(json.loads(saved) if saved else _guess_bnn_latents(posterior), shapes)
        return samples


def _guess_bnn_latents(posterior: Mapping[str, np.ndarray]) -> list[str]:
    """Files written before ``latent_sites`` was recorded: every posterior variable is a latent site."""
    return list(posterior)
