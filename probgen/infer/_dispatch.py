"""Which :class:`~probgen.infer._model.InferenceModel` serves a model: the one place that decides."""

from __future__ import annotations

from typing import Any

from probgen.infer._bnn_model import BNNModel
from probgen.infer._model import InferenceModel
from probgen.infer._pyro_model import PyroModel
from probgen.models.bnn import BNN

__all__ = ["as_inference_model"]


def as_inference_model(model: Any) -> InferenceModel:
    """:class:`~probgen.infer._bnn_model.BNNModel` for a :class:`~probgen.models.bnn.BNN` (the fast
    case), :class:`~probgen.infer._pyro_model.PyroModel` for any other callable Pyro program; an
    :class:`InferenceModel` is returned as it is. The user's model is copied where it has state.

    :raises TypeError: if ``model`` is not callable.
    """
    if isinstance(model, InferenceModel):
        return model
    if isinstance(model, BNN):
        return BNNModel(model)
    if not callable(model):
        raise TypeError(
            "model must be a probgen.BNN or a callable Pyro program (a function that calls pyro.sample), "
            f"got {type(model).__name__}."
        )
    return PyroModel(model)
