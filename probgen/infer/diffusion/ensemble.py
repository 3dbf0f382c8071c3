"""A deep ensemble of diffusion chains: the baseline for a Bayesian denoiser's weight uncertainty.

:func:`fit_ensemble` trains ``M`` copies of a point-estimate chain, each initialised and trained from its
own seed, derived from one seed by ``numpy.random.SeedSequence``. The read-outs of
:mod:`probgen.infer.diffusion.uncertainty` and :func:`~probgen.infer.diffusion.evaluate_bound` take the
resulting :class:`~probgen.infer.results.EnsembleFit` where they take a Bayesian fit, with the members
as the weight draws.

References:

[1] B. Lakshminarayanan, A. Pritzel, C. Blundell (2017), "Simple and Scalable Predictive Uncertainty
    Estimation using Deep Ensembles", NeurIPS.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from probgen._validate import check_positive_int, check_seed
from probgen.infer.diffusion._util import check_chain
from probgen.infer.diffusion.train import fit_diffusion
from probgen.infer.results import EnsembleFit
from probgen.models.diffusion.chain import DiffusionChain

__all__ = ["fit_ensemble", "member_seeds"]

#: Options of :func:`~probgen.infer.diffusion.fit_diffusion` that belong to one run and so cannot be
#: shared by the members, with what to do instead.
_PER_RUN_OPTIONS = {
    "init_state": "an ensemble is not resumed; fit each member with fit_diffusion to resume it",
    "checkpoint": "every member would write the same file; fit each member with fit_diffusion to checkpoint it",
    "checkpoint_every": "every member would write the same file; fit each member with fit_diffusion to checkpoint it",
}


def member_seeds(seed: int, num_members: int) -> tuple[int, ...]:
    """The members' seeds, derived from ``seed`` by ``numpy.random.SeedSequence(seed).spawn(num_members)``.

    Independent streams, the same for the same ``seed`` (and member ``k``'s does not depend on
    ``num_members``), each below ``2**31``.

    Example::

        >>> member_seeds(0, 3) == member_seeds(0, 4)[:3]
        True
    """
    children = np.random.SeedSequence(check_seed(seed)).spawn(check_positive_int("num_members", num_members))
    return tuple(int(child.generate_state(1, dtype=np.uint32)[0]) >> 1 for child in children)


def _reinitialise(net: nn.Module, seed: int) -> None:
    """Draw fresh initial weights for every submodule of ``net`` that has ``reset_parameters``, from ``seed``."""
    modules = [module for module in net.modules() if callable(getattr(module, "reset_parameters", None))]
    if not modules:
        raise ValueError(
            f"the net ({type(net).__name__}) has no submodule with reset_parameters(), so the members cannot be "
            "initialised independently; pass reinitialise=False to start every member from the net's weights."
        )
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        for module in modules:
            cast(Callable[[], None], getattr(module, "reset_parameters"))()


def fit_ensemble(
    chain: DiffusionChain,
    data: Tensor,
    *,
    num_members: int,
    seed: int | None = None,
    reinitialise: bool = True,
    **fit_options: Any,
) -> EnsembleFit:
    """Train a deep ensemble: ``num_members`` copies of ``chain``, each initialised and trained independently.

    Member ``k`` gets the seed ``member_seeds(seed, M)[k]``: it draws the member's initial weights
    (``reset_parameters()`` of every submodule that has one, e.g. every ``nn.Linear``) and seeds its
    :func:`~probgen.infer.diffusion.fit_diffusion` run (minibatches, steps, noise). Every other option
    is passed to each run unchanged. The result serves every read-out under weight uncertainty with the
    members as the draws.

    :param DiffusionChain chain: a point-estimate chain (no prior); its net is copied, never changed.
    :param Tensor data: the training data ``(N, *event_shape)``.
    :param int num_members: ``M``, the number of members (2 or more for a spread).
    :param seed: the ensemble's seed; ``None`` picks one and records it.
    :param bool reinitialise: draw each member's initial weights from its seed (the default); ``False``
        starts every member from ``chain``'s weights, so that only the training randomness differs.
    :param fit_options: options of :func:`~probgen.infer.diffusion.fit_diffusion` (``num_steps`` is
        required; ``condition=`` for a conditional chain); not ``seed``, ``init_state`` or ``checkpoint``.
    :returns: an :class:`~probgen.infer.results.EnsembleFit`.
    :raises ValueError: for a Bayesian chain, a bad ``num_members``, a per-run option, or a net that
        cannot be reinitialised.

    Example::

        >>> from probgen.models.diffusion import MLPDenoiser, get_schedule
        >>> chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("linear", 10), event_shape=(2,))
        >>> ensemble = fit_ensemble(chain, torch.randn(32, 2), num_members=3, seed=0, num_steps=4, progress_bar=False)
        >>> ensemble.num_members, ensemble.losses.shape
        (3, torch.Size([3, 4]))
    """
    chain = check_chain(chain)
    if chain.weight_posterior is not None:
        raise ValueError(
            "fit_ensemble trains point-estimate members, but this chain is Bayesian (prior=); pass a chain without "
            "prior, or fit the Bayesian chain itself with fit_diffusion."
        )
    num_members = check_positive_int("num_members", num_members)
    for name, remedy in _PER_RUN_OPTIONS.items():
        if name in fit_options:
            raise ValueError(f"fit_ensemble does not take {name}=; {remedy}.")
    seed = check_seed(seed)
    start = time.perf_counter()
    seeds = member_seeds(seed, num_members)
    members = []
    for member_seed in seeds:
        net = copy.deepcopy(chain.net)
        if reinitialise:
            _reinitialise(net, member_seed)
        members.append(fit_diffusion(chain.replace_net(net), data, seed=member_seed, **fit_options))
    return EnsembleFit(members=tuple(members), seeds=seeds, seed=seed, wall_time=time.perf_counter() - start)
