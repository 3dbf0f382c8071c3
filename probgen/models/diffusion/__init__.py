"""Diffusion models as Pyro latent-variable chains: schedules, the chain (model and guide), decoders, denoisers.

:class:`DiffusionChain` writes the reverse chain as the Pyro model and the fixed noising process,
in posterior order, as the guide, so :class:`pyro.infer.TraceMeanField_ELBO` computes the DDPM bound.
:func:`save_chain` and :func:`load_chain` keep a chain in one file. Training, evaluation of the bound
and sampling live in :mod:`probgen.infer.diffusion`.

* ``schedules.py``: beta schedules as pure functions of ``num_timesteps``, and every derived quantity;
* ``chain.py``: :class:`DiffusionChain` (``q_sample``, ``q_posterior``, ``p_mean_variance``, the terms of
  the bound, ``model`` and ``guide``);
* ``inpaint.py``: :class:`InpaintMessenger`, which conditions the model on known coordinates;
* ``decoders.py``: the last reverse step ``p_theta(x_0 | x_1)``, continuous or discretised;
* ``networks.py``: time-conditioned denoisers for vectors and small images, optionally also conditioned
  on class labels (``num_classes=``) or covariates (``cond_dim=``), which makes the chain model
  ``p(x_0 | c)``, and :class:`MeanShiftDenoiser`, a denoiser of the residual ``y - m(c)`` for diffusion regression;
* ``weights.py``: :class:`MeanFieldWeights` and :class:`LowRankWeights`, the weight posteriors of a
  Bayesian denoiser (a chain built with ``prior=``, and ``posterior_rank=`` for the low-rank one), and
  :func:`call_with_weights`, the net run with given (or ``S`` stacked) weights;
* ``io.py``: :func:`save_chain`, :func:`load_chain` and the versioned file format.
"""

from probgen.models.diffusion.chain import (
    PREDICTIONS,
    VARIANCES,
    DiffusionChain,
    PMeanVariance,
    Prediction,
    Variance,
)
from probgen.models.diffusion.decoders import Decoder, DiscretizedGaussianDecoder, DiscretizedNormal, GaussianDecoder
from probgen.models.diffusion.inpaint import InpaintMessenger
from probgen.models.diffusion.io import load_chain, save_chain
from probgen.models.diffusion.networks import ConvDenoiser, MeanShiftDenoiser, MLPDenoiser, SinusoidalEmbedding
from probgen.models.diffusion.weights import WEIGHT_INIT_SCALE, LowRankWeights, MeanFieldWeights, call_with_weights
from probgen.models.diffusion.schedules import (
    SCHEDULE_NAMES,
    Schedule,
    ScheduleName,
    cosine_schedule,
    get_schedule,
    linear_schedule,
    log_snr_schedule,
    make_schedule,
)

__all__ = [
    "PREDICTIONS",
    "SCHEDULE_NAMES",
    "VARIANCES",
    "WEIGHT_INIT_SCALE",
    "ConvDenoiser",
    "Decoder",
    "DiffusionChain",
    "DiscretizedGaussianDecoder",
    "DiscretizedNormal",
    "GaussianDecoder",
    "InpaintMessenger",
    "LowRankWeights",
    "MLPDenoiser",
    "MeanShiftDenoiser",
    "MeanFieldWeights",
    "PMeanVariance",
    "Prediction",
    "Schedule",
    "ScheduleName",
    "SinusoidalEmbedding",
    "Variance",
    "call_with_weights",
    "cosine_schedule",
    "get_schedule",
    "linear_schedule",
    "load_chain",
    "log_snr_schedule",
    "make_schedule",
    "save_chain",
]
