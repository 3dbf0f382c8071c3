"""Inference for probgen models: SVI, NUTS, prediction and result types."""

from probgen.infer._distributed import is_main as is_main_process
from probgen.infer.mcmc import fit_nuts
from probgen.infer.predictive import Prediction
from probgen.infer.arviz import load_result, to_arviz
from probgen.infer.results import MCMCResult, PosteriorResult, SVIResult, SVIState
from probgen.infer.svi import SVI, fit_svi

__all__ = ["fit_svi", "fit_nuts", "SVI", "SVIState", "SVIResult", "MCMCResult", "PosteriorResult", "Prediction", "to_arviz", "load_result", "is_main_process"]
