"""probgen: Bayesian neural networks and diffusion models as honest Pyro programs.

>>> import probgen
>>> sorted(probgen.__all__)[:3]
['BNN', 'Bernoulli', 'Categorical']
"""

__version__ = "0.1.0"

from probgen import datasets, metrics  # noqa: E402
from probgen.infer.diffusion import (  # noqa: E402
    DiffusionTrainState,
    evaluate_bound,
    filter_by_uncertainty,
    fit_diffusion,
    fit_ensemble,
    mutual_information,
    predictive_uncertainty,
    sample_ancestral,
    sample_conditional,
    sample_ddim,
    sample_uncertainty,
)
from probgen.infer import is_main_process  # noqa: E402
from probgen.infer.mcmc import fit_nuts  # noqa: E402
from probgen.infer.predictive import Prediction  # noqa: E402
from probgen.diagnostics import ConvergenceReport, ConvergenceWarning, check_convergence, summarize  # noqa: E402
from probgen.infer.arviz import load_result, to_arviz  # noqa: E402
from probgen.infer.results import MCMCResult, SVIResult, SVIState  # noqa: E402
from probgen.infer.svi import SVI, fit_svi  # noqa: E402
from probgen.likelihoods import Bernoulli, Categorical, Gaussian, HeteroskedasticGaussian, Likelihood  # noqa: E402
from probgen.models.bnn import BNN  # noqa: E402
from probgen.models.diffusion import (  # noqa: E402
    ConvDenoiser,
    DiffusionChain,
    MLPDenoiser,
    cosine_schedule,
    linear_schedule,
    load_chain,
    log_snr_schedule,
    save_chain,
)
from probgen.nn import make_bayesian  # noqa: E402
from probgen.priors import GaussianPrior, Prior  # noqa: E402

__all__ = [
    "__version__",
    "BNN",
    "GaussianPrior",
    "Prior",
    "Likelihood",
    "Gaussian",
    "HeteroskedasticGaussian",
    "Bernoulli",
    "Categorical",
    "make_bayesian",
    "fit_svi",
    "fit_nuts",
    "SVI",
    "SVIState",
    "SVIResult",
    "MCMCResult",
    "Prediction",
    "to_arviz",
    "load_result",
    "is_main_process",
    "summarize",
    "check_convergence",
    "ConvergenceReport",
    "ConvergenceWarning",
    "DiffusionChain",
    "MLPDenoiser",
    "ConvDenoiser",
    "linear_schedule",
    "cosine_schedule",
    "log_snr_schedule",
    "save_chain",
    "load_chain",
    "fit_diffusion",
    "DiffusionTrainState",
    "evaluate_bound",
    "sample_ancestral",
    "sample_ddim",
    "sample_conditional",
    "fit_ensemble",
    "sample_uncertainty",
    "predictive_uncertainty",
    "mutual_information",
    "filter_by_uncertainty",
    "datasets",
    "metrics",
]
