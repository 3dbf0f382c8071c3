"""Diffusion models as Pyro latent-variable chains: schedules, the chain (model and guide), denoisers.

:class:`DiffusionChain` writes the reverse chain as the Pyro model and the fixed noising process,
in posterior order, as the guide, so :class:`pyro.infer.TraceMeanField_ELBO` computes the DDPM bound.
Training, evaluation of the bound and sampling live in :mod:`probgen.infer.diffusion`.
"""

from probgen.models.diffusion.chain import (
    PREDICTIONS,
    VARIANCES,
    Decoder,
    DiffusionChain,
    DiscretizedGaussianDecoder,
    DiscretizedNormal,
    GaussianDecoder,
    InpaintMessenger,
    PMeanVariance,
    Prediction,
    Variance,
)
from probgen.models.diffusion.networks import ConvDenoiser, MLPDenoiser, SinusoidalEmbedding
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
    "ConvDenoiser",
    "Decoder",
    "DiffusionChain",
    "DiscretizedGaussianDecoder",
    "DiscretizedNormal",
    "GaussianDecoder",
    "InpaintMessenger",
    "MLPDenoiser",
    "PMeanVariance",
    "Prediction",
    "Schedule",
    "ScheduleName",
    "SinusoidalEmbedding",
    "Variance",
    "cosine_schedule",
    "get_schedule",
    "linear_schedule",
    "log_snr_schedule",
    "make_schedule",
]
