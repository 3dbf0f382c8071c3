"""Argument checks shared by diffusion training, evaluation and sampling, and the weight draws of read-outs."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from probgen._validate import as_tensor, check_positive_int
from probgen.infer.results import DiffusionFitResult, EnsembleFit
from probgen.models.diffusion.chain import DiffusionChain


def check_chain(chain: Any) -> DiffusionChain:
    """``chain`` if it is a :class:`DiffusionChain`, else a TypeError."""
    if not isinstance(chain, DiffusionChain):
        raise TypeError(f"chain must be a DiffusionChain, got {type(chain).__name__}.")
    return chain


def check_data(chain: DiffusionChain, data: Any, name: str = "data") -> Tensor:
    """``data`` as a tensor of rows ``(N, *event_shape)`` in the chain's dtype, on its device."""
    data = as_tensor(name, data, dtype=chain._dtype()).to(chain.device)
    if tuple(data.shape[1:]) != tuple(chain.event_shape):
        raise ValueError(
            f"{name} must have shape (N, {', '.join(map(str, chain.event_shape))}) to match the chain's "
            f"event_shape, got {tuple(data.shape)}."
        )
    return data


def check_condition(chain: DiffusionChain, condition: Any, num_rows: int, rows_of: str) -> Tensor | None:
    """``condition`` checked against ``chain``'s net and broadcast to ``num_rows`` rows, or ``None``.

    Class labels come back ``(num_rows,)``, covariates ``(num_rows, cond_dim)``; a single row is
    repeated. An unconditional chain must get ``None``, a conditional one a condition.

    :param str rows_of: what has the rows, for messages (``"data"``).
    """
    checked = chain._check_condition("condition", condition, torch.Size([num_rows]), rows_of)
    return None if checked is None else checked.to(chain.device)


def repeat_rows(values: Tensor, times: int) -> Tensor:
    """``values`` ``(N, ...)`` repeated as ``(times * N, ...)``: row ``k * N + i`` is row ``i``."""
    return values.expand(times, *values.shape).reshape(-1, *values.shape[1:])


class WeightDraws(NamedTuple):
    """``S`` parameter sets of one denoiser: posterior draws of a Bayesian chain, or an ensemble's members.

    :ivar DiffusionChain chain: the chain whose maths (schedule, decoder, options) and net architecture
        evaluate every draw, through ``weights=``.
    :ivar dict weights: the parameter values by path, each stacked ``(S, *shape)``: a Bayesian chain's
        Bayesian parameters, or every parameter and buffer of the members' nets.
    :ivar int num_draws: ``S``.
    :ivar str source: ``"posterior"`` or ``"ensemble"``.
    """

    chain: DiffusionChain
    weights: dict[str, Tensor]
    num_draws: int
    source: str


def weight_seed(seed: int) -> int:
    """The seed of a read-out's weight draws, derived from its ``seed`` (``numpy.random.SeedSequence``).

    A stream of its own, so that the weight draws are independent of the noise that the same ``seed``
    drives (a torch generator seeded with ``seed`` would repeat the noise's numbers), and the noise is
    that of the point-estimate functions with the same seed.
    """
    return int(np.random.SeedSequence((seed, 0xB4E5)).generate_state(1, dtype=np.uint32)[0])


def weight_draws(source: Any, num_posterior_draws: Any, seed: int, *, what: str, min_draws: int = 1) -> WeightDraws:
    """The parameter sets that a read-out under weight uncertainty averages over.

    :param source: a Bayesian :class:`DiffusionChain`, a :class:`~probgen.infer.results.DiffusionFitResult`
        of one, or an :class:`~probgen.infer.results.EnsembleFit`.
    :param num_posterior_draws: ``S`` for a Bayesian source (required); for an ensemble ``None`` or its
        number of members.
    :param int seed: the read-out's seed; the posterior's draws come from :func:`weight_seed` of it.
    :param str what: the calling function, for messages.
    :param int min_draws: the fewest draws the read-out can use (2 for a variance).
    :raises ValueError: for a point-estimate source or a bad ``num_posterior_draws``.
    :raises TypeError: for a source of another type.
    """
    if isinstance(source, EnsembleFit):
        members = source.num_members
        if num_posterior_draws is not None and num_posterior_draws != members:
            raise ValueError(
                f"num_posterior_draws={num_posterior_draws!r}, but the ensemble has {members} members, which are its "
                f"draws; drop num_posterior_draws or pass {members}."
            )
        if members < min_draws:
            raise ValueError(f"{what} needs at least {min_draws} ensemble members, got {members}.")
        return WeightDraws(source.chains[0], source.stacked_parameters(), members, "ensemble")
    chain = source.chain if isinstance(source, DiffusionFitResult) else source
    if not isinstance(chain, DiffusionChain):
        raise TypeError(
            f"{what} takes a Bayesian DiffusionChain, its DiffusionFitResult or an EnsembleFit, "
            f"got {type(source).__name__}."
        )
    posterior = chain.weight_posterior
    if posterior is None:
        raise ValueError(
            f"{what} reads out weight uncertainty, but this is a point-estimate chain (no prior), which has none; "
            "build the chain with prior=GaussianPrior(...) and fit it, or fit a deep ensemble with fit_ensemble."
        )
    if num_posterior_draws is None:
        raise ValueError(f"{what} of a Bayesian chain needs num_posterior_draws=S, the number of weight draws.")
    num_draws = check_positive_int("num_posterior_draws", num_posterior_draws)
    if num_draws < min_draws:
        raise ValueError(f"{what} needs num_posterior_draws >= {min_draws} (a variance over draws), got {num_draws}.")
    generator = torch.Generator(chain.device).manual_seed(weight_seed(seed))
    return WeightDraws(chain, posterior.sample(num_draws, generator), num_draws, "posterior")
