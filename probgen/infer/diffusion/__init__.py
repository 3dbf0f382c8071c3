"""Training, bound evaluation and sampling for :class:`~probgen.models.diffusion.DiffusionChain`.

* ``objective.py``: :func:`estimate_bound`, the unbiased one-step estimator of the negative ELBO (its
  expectation is what :class:`pyro.infer.TraceMeanField_ELBO` computes on ``chain.model`` and
  ``chain.guide``, tested), the step sampler :class:`TimestepSampler` (uniform or importance-sampled
  ``t`` with the correct ``1 / (T p(t))`` weights) and the simplified :func:`eps_mse`, a reweighted
  objective that trains good samplers but is not the ELBO;
* ``train.py``: :func:`fit_diffusion`, Adam on minibatches with EMA, learning-rate decay, checkpoints
  and exact resumption from ``init_state``;
* ``evaluate.py``: :func:`evaluate_bound`, every term of the bound for every data point, in nats and bits
  per dimension with standard errors and the per-``t`` breakdown;
* ``sample.py``: :func:`sample_ancestral` runs the Pyro model, :func:`sample_ddim` the DDIM update with
  ``eta`` and fewer steps, :func:`sample_conditional` conditions the model on known coordinates; all
  return draws shaped ``(chain, draw, *event_shape)``;
* ``ensemble.py``: :func:`fit_ensemble`, a deep ensemble of independently initialised and trained chains;
* ``uncertainty.py``: read-outs under weight uncertainty, for a Bayesian denoiser (a chain built with
  ``prior=``, trained by :func:`fit_diffusion` on the ELBO that includes ``KL(q(w) || p(w))``) or an
  ensemble: :func:`sample_uncertainty` (epistemic and aleatoric variance of generated samples),
  :func:`predictive_uncertainty` (the law of total variance at given conditions),
  :func:`mutual_information` (DECU's per-step score) and :func:`filter_by_uncertainty`; the bound under
  weight uncertainty is :func:`evaluate_bound` with ``num_posterior_draws=``.

A chain whose net is conditional (``MLPDenoiser(..., num_classes=K)`` or ``cond_dim=k``) models
``p(x_0 | c)``, and every function here takes ``condition=``: class labels ``(N,)`` or covariates
``(N, k)``, one row per data row for :func:`fit_diffusion`, :func:`evaluate_bound` and
:func:`estimate_bound`, one row per draw for :func:`sample_ancestral` and :func:`sample_ddim`
(``samples[:, i]`` is drawn given ``condition[i]``), one row per observation for
:func:`sample_conditional`; a single row serves every row. A missing or unexpected condition is an
error that says which.

The results (:class:`~probgen.infer.results.DiffusionFitResult`, :class:`~probgen.infer.results.DiffusionTrainState`,
:class:`~probgen.infer.results.BoundResult`, :class:`~probgen.infer.results.DiffusionSamples`) live with
every other result in :mod:`probgen.infer.results` and are re-exported here. Scores of samples
(:func:`probgen.metrics.energy_distance`, :func:`probgen.metrics.gaussian_nll`) are in :mod:`probgen.metrics`.

References:

[1] J. Ho, A. Jain, P. Abbeel (2020), "Denoising Diffusion Probabilistic Models", NeurIPS.
[2] A. Nichol, P. Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models", ICML.
[3] J. Song, C. Meng, S. Ermon (2021), "Denoising Diffusion Implicit Models", ICLR.
[4] D. P. Kingma, T. Salimans, B. Poole, J. Ho (2021), "Variational Diffusion Models", NeurIPS.
"""

from probgen.infer.diffusion.ensemble import fit_ensemble, member_seeds
from probgen.infer.diffusion.evaluate import evaluate_bound
from probgen.infer.diffusion.objective import (
    OBJECTIVES,
    TIMESTEP_SAMPLINGS,
    BayesianLossEstimate,
    BoundEstimate,
    Objective,
    TimestepSampler,
    TimestepSampling,
    eps_mse,
    estimate_bayesian_loss,
    estimate_bound,
)
from probgen.infer.diffusion.sample import ddim_step, sample_ancestral, sample_conditional, sample_ddim
from probgen.infer.diffusion.train import fit_diffusion
from probgen.infer.diffusion.uncertainty import (
    FilteredSamples,
    filter_by_uncertainty,
    mutual_information,
    predictive_uncertainty,
    sample_uncertainty,
)
from probgen.infer.results import (
    SAMPLERS,
    BayesianBoundResult,
    BoundResult,
    DiffusionFitResult,
    DiffusionSamples,
    DiffusionTrainState,
    EnsembleFit,
    MutualInformation,
    PredictiveUncertainty,
    Sampler,
    SampleUncertainty,
)

__all__ = [
    "OBJECTIVES",
    "SAMPLERS",
    "TIMESTEP_SAMPLINGS",
    "BayesianBoundResult",
    "BayesianLossEstimate",
    "BoundEstimate",
    "BoundResult",
    "DiffusionFitResult",
    "DiffusionSamples",
    "DiffusionTrainState",
    "EnsembleFit",
    "FilteredSamples",
    "MutualInformation",
    "Objective",
    "PredictiveUncertainty",
    "SampleUncertainty",
    "Sampler",
    "TimestepSampler",
    "TimestepSampling",
    "ddim_step",
    "eps_mse",
    "estimate_bayesian_loss",
    "estimate_bound",
    "evaluate_bound",
    "filter_by_uncertainty",
    "fit_diffusion",
    "fit_ensemble",
    "member_seeds",
    "mutual_information",
    "predictive_uncertainty",
    "sample_ancestral",
    "sample_conditional",
    "sample_ddim",
    "sample_uncertainty",
]
