"""Conditioning a diffusion chain's model on known coordinates of ``x_0``: the replacement method.

:class:`InpaintMessenger` is an effect handler around :meth:`DiffusionChain.model
<probgen.models.diffusion.chain.DiffusionChain.model>`; :func:`~probgen.infer.diffusion.sample_conditional`
runs the model under it.

References:

[1] Y. Song, J. Sohl-Dickstein, D. P. Kingma, A. Kumar, S. Ermon, B. Poole (2021), "Score-Based
    Generative Modeling through Stochastic Differential Equations", ICLR, Appendix I.2 (imputation).
[2] A. Lugmayr, M. Danelljan, A. Romero, F. Yu, R. Timofte, L. Van Gool (2022), "RePaint: Inpainting
    using Denoising Diffusion Probabilistic Models", CVPR, eq. 8.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from pyro.poutine.messenger import Messenger
from torch import Tensor

from probgen.models.diffusion.chain import DiffusionChain

__all__ = ["InpaintMessenger"]

_SITE = re.compile(r"^x_(\d+)$")


class InpaintMessenger(Messenger):
    """Condition a :class:`DiffusionChain`'s model on known coordinates of ``x_0``, approximately.

    An effect handler for :meth:`DiffusionChain.model`: at every latent site ``"x_{t-1}"`` it keeps the
    model's draw ``x_{t-1} ~ p_theta(x_{t-1} | x_t)`` for the unknown coordinates and replaces the known
    ones (``mask`` true) by a fresh draw from ``q(x_{t-1} | x_0^obs)``, the forward process applied to
    the observed values; at ``"x_0"`` the known coordinates are the observed values themselves. This is
    the replacement method of [1] Appendix I.2 and [2] eq. 8 (without RePaint's resampling).

    **Approximation.** The exact conditional ``p_theta(x_0^unk | x_0^obs)`` needs
    ``p_theta(x_{t-1}^unk | x_t, x_0^obs)``, which is intractable. Replacement draws the known
    coordinates' noise independently of the unknown ones at each step, so it samples the exact
    conditional only when the two groups are independent under the model; otherwise the samples are
    consistent with the observation at ``t = 0`` but may be less coherent than true conditional draws.

    A conditional chain's model is run with its ``condition=`` as usual
    (:func:`~probgen.infer.diffusion.sample_conditional` takes one condition per observed row); the
    messenger only handles the ``"x_t"`` sites, so the condition reaches every reverse step unchanged.

    :param DiffusionChain chain: the chain whose sites ``"x_t"`` are handled.
    :param Tensor x_observed: values for the known coordinates, shape ``(N, *event_shape)`` (entries
        where ``mask`` is false are ignored).
    :param Tensor mask: boolean, broadcastable to ``x_observed``; true where a coordinate is known.

    Example::

        >>> from probgen.models.diffusion import MLPDenoiser, get_schedule
        >>> chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("linear", 5), event_shape=(2,))
        >>> x_obs, mask = torch.zeros(4, 2), torch.tensor([True, False])
        >>> with InpaintMessenger(chain, x_obs, mask):
        ...     x0 = chain.model(num_samples=4)
        >>> x0[:, 0].tolist()
        [0.0, 0.0, 0.0, 0.0]
    """

    def __init__(self, chain: DiffusionChain, x_observed: Tensor, mask: Tensor) -> None:
        super().__init__()
        self.chain = chain
        self.x_observed = chain._check_x("x_observed", x_observed)
        self.mask = torch.as_tensor(mask, dtype=torch.bool, device=self.x_observed.device).expand_as(self.x_observed)

    def _pyro_sample(self, msg: Any) -> None:
        match = _SITE.match(str(msg["name"]))
        if match is None or msg["is_observed"] or msg["value"] is not None:
            return
        t = int(match.group(1))
        with torch.no_grad():
            known = self.x_observed if t == 0 else self.chain.q_sample(self.x_observed, t)
            drawn = msg["fn"](*msg["args"], **msg["kwargs"])
        msg["value"] = torch.where(self.mask, known.to(drawn.dtype), drawn)
