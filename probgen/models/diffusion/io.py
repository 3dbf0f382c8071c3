"""Saving and loading diffusion chains, and the versioned file format that training checkpoints share.

:func:`save_chain` writes everything that defines a :class:`~probgen.models.diffusion.chain.DiffusionChain`
as plain data: the network's class, constructor arguments and weights, the betas of its schedule, its
decoder and options, and what the network is conditioned on (``num_classes`` or ``cond_dim``).
:func:`load_chain` rebuilds it. Files are read with ``torch.load(weights_only=True)``, so loading never
runs code from the file; a network or decoder of the user's own class is therefore not rebuilt from
the file but passed again (``load_chain(path, net=MyNet(...))``).

A Bayesian chain (built with ``prior=``) also keeps its prior (a
:class:`~probgen.priors.GaussianPrior`'s fields; a prior of the user's own class is passed again,
``load_chain(path, prior=...)``) and its weight posterior, the locations and scales of
:class:`~probgen.models.diffusion.weights.MeanFieldWeights` (and the factor and rank of a
:class:`~probgen.models.diffusion.weights.LowRankWeights`), as two more entries of the same format.
Such a file is version 2 (:data:`CHAIN_VERSION`), so a probgen from before Bayesian chains refuses it
and says to upgrade, instead of loading the posterior-mean chain without its posterior; a point chain
is still written as version 1 (:data:`POINT_CHAIN_VERSION`), which every probgen reads.

Every file is a dict with a ``"format"`` and a ``"version"``, written atomically by
:func:`probgen._io.save_checkpoint`; :func:`probgen._io.load_checkpoint` refuses, with a message saying
what the file is, anything else: a foreign or truncated file, a file of another kind, one from an older
or a newer probgen.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch  # noqa: F401  (the doctests use it)
from torch import nn

from probgen._io import load_checkpoint, save_checkpoint
from probgen.models.diffusion._util import describe_condition
from probgen.models.diffusion.chain import DiffusionChain
from probgen.models.diffusion.decoders import Decoder, DiscretizedGaussianDecoder, GaussianDecoder
from probgen.models.diffusion.networks import ConvDenoiser, MeanShiftDenoiser, MLPDenoiser
from probgen.models.diffusion.schedules import make_schedule
from probgen.priors import GaussianPrior, Prior

__all__ = ["CHAIN_FORMAT", "load_chain", "save_chain"]

#: The ``"format"`` of a file written by :func:`save_chain`.
CHAIN_FORMAT = "probgen.diffusion_chain"
#: The newest version of the format, that of a Bayesian chain (with its prior and weight posterior).
CHAIN_VERSION = 2
#: The version of a point-estimate chain's file, unchanged since the format began.
POINT_CHAIN_VERSION = 1

#: Formats of files that older probgen versions wrote, and what to do with them.
_OLD_FORMATS = {
    "probgen.diffusion/1": "a model saved by 'probgen diffusion fit' before chains had a file format of their "
    "own; fit it again (the command now writes the new format)",
}
#: Networks and decoders that a file can name and rebuild, by class name.
_NETS: dict[str, type[nn.Module]] = {"MLPDenoiser": MLPDenoiser, "ConvDenoiser": ConvDenoiser}
_DECODERS: dict[str, type[Decoder]] = {
    "GaussianDecoder": GaussianDecoder,
    "DiscretizedGaussianDecoder": DiscretizedGaussianDecoder,
}


def _describe(obj: nn.Module | Decoder) -> dict[str, Any] | None:
    """``{"class": name, "config": kwargs}`` for a probgen network or decoder, else ``None``.

    A :class:`MeanShiftDenoiser` is described by its options and its inner denoiser's description
    (``None`` if that is the user's own); its schedule is the chain's, saved as the betas.
    """
    if type(obj) is MeanShiftDenoiser:
        inner = _describe(obj.denoiser)
        options: dict[str, Any] = {
            "denoiser": inner, "event_shape": list(obj.event_shape), "mean_hidden": obj.mean_hidden,
            "mean_layers": obj.mean_layers, "prediction": obj.prediction,
        }  # fmt: skip
        return None if inner is None else {"class": "MeanShiftDenoiser", "config": options}
    registry: Mapping[str, type] = _NETS if isinstance(obj, nn.Module) else _DECODERS
    name = type(obj).__name__
    if registry.get(name) is not type(obj):  # the user's own class, or one that shadows a probgen name
        return None
    get_config: Callable[[], Mapping[str, Any] | None] = getattr(obj, "get_config")  # nets and decoders alike
    config = get_config()
    return None if config is None else {"class": name, "config": dict(config)}


def _describe_prior(prior: Prior) -> dict[str, Any] | None:
    """A :class:`GaussianPrior` as ``{"class": ..., "config": fields}``; ``None`` for another prior class."""
    if type(prior) is not GaussianPrior:
        return None
    config = {
        "scale": prior.scale,
        "layer_scales": dict(prior.layer_scales),
        "fan_in": prior.fan_in,
        "bias_scale": prior.bias_scale,
        "deterministic": list(prior.deterministic),
    }
    return {"class": "GaussianPrior", "config": config}


def _rebuild_prior(saved: dict[str, Any] | None, given: Prior | None) -> Prior:
    if given is not None:
        if not isinstance(given, Prior):
            raise TypeError(f"prior must be a probgen.priors.Prior, got {type(given).__name__}.")
        return given
    if saved is None:
        raise ValueError(
            "this file holds a Bayesian chain whose prior is of the user's own class, which is not rebuilt from a "
            "file; pass the same prior as prior=... to load_chain."
        )
    config = dict(saved["config"])
    config["deterministic"] = tuple(config["deterministic"])
    return GaussianPrior(**config)


def save_chain(chain: DiffusionChain, path: str | os.PathLike[str]) -> None:
    """Save a diffusion chain, trained or not, to one file that :func:`load_chain` reads back.

    The file holds the network's weights (its ``state_dict``), the schedule's betas (float64) and
    name, the event shape, the decoder, ``variance`` and ``prediction``, the condition the network
    takes (``{"num_classes": ..., "cond_dim": ...}``, both ``None`` when unconditional), and for
    probgen's own networks (:class:`~probgen.models.diffusion.networks.MLPDenoiser`,
    :class:`~probgen.models.diffusion.networks.ConvDenoiser`, and a
    :class:`~probgen.models.diffusion.networks.MeanShiftDenoiser` around one of them) and decoders their
    constructor arguments. It is written atomically. A Bayesian chain's file also holds its prior and its weight
    posterior (``"weight_posterior"``: the parameter paths, the initial scale and the module's
    ``state_dict``, plus ``"rank"`` for a low-rank posterior), so that it reloads to the same read-outs.

    :param DiffusionChain chain: the chain to save.
    :param path: the file to write (conventionally ``.pt``).
    :raises TypeError: if ``chain`` is not a DiffusionChain.

    Example::

        >>> import tempfile
        >>> from probgen.models.diffusion import MLPDenoiser, get_schedule
        >>> chain = DiffusionChain(MLPDenoiser(2, hidden_dim=8), get_schedule("cosine", 10), event_shape=(2,))
        >>> with tempfile.TemporaryDirectory() as directory:
        ...     save_chain(chain, f"{directory}/chain.pt")
        ...     again = load_chain(f"{directory}/chain.pt")
        >>> again.num_timesteps, bool(torch.equal(again.schedule.betas, chain.schedule.betas))
        (10, True)
    """
    if not isinstance(chain, DiffusionChain):
        raise TypeError(f"chain must be a DiffusionChain, got {type(chain).__name__}.")
    payload = {
        "net": _describe(chain.net),
        "net_state": chain.net.state_dict(),
        "betas": chain.schedule.betas,
        "schedule": chain.schedule.name,
        "event_shape": list(chain.event_shape),
        "decoder": _describe(chain.decoder),
        "variance": chain.variance,
        "prediction": chain.prediction,
        "condition": {"num_classes": chain.num_classes, "cond_dim": chain.cond_dim},
    }
    if chain.prior is not None and chain.weight_posterior is not None:
        posterior = chain.weight_posterior
        payload["prior"] = _describe_prior(chain.prior)
        payload["weight_posterior"] = {
            "names": list(posterior.names),
            "init_scale": posterior.init_scale,
            "state": posterior.state_dict(),
            # only a low-rank posterior has a rank, so mean-field files are as before
            **({} if chain.posterior_rank is None else {"rank": chain.posterior_rank}),
        }
    version = CHAIN_VERSION if "weight_posterior" in payload else POINT_CHAIN_VERSION
    save_checkpoint(payload, path, file_format=CHAIN_FORMAT, version=version)


def _rebuild(kind: str, saved: dict[str, Any] | None, given: Any, registry: Mapping[str, type]) -> Any:
    if given is not None:
        return copy.deepcopy(given)
    if saved is None:
        raise ValueError(
            f"this file holds a {kind} of the user's own class, which is not rebuilt from a file; "
            f"pass the same architecture as {kind}=... to load_chain."
        )
    return registry[saved["class"]](**saved["config"])


def load_chain(
    path: str | os.PathLike[str],
    *,
    net: nn.Module | None = None,
    decoder: Decoder | None = None,
    prior: Prior | None = None,
) -> DiffusionChain:
    """Load a chain written by :func:`save_chain`; its network is in eval mode.

    :param path: the file.
    :param net: a network of the saved architecture (its weights do not matter; it is copied, never
        changed); needed only when the saved network is not one of probgen's.
    :param decoder: the decoder, needed only when the saved one is not one of probgen's.
    :param prior: the prior of a saved Bayesian chain, needed only when it is not a
        :class:`~probgen.priors.GaussianPrior`; refused for a point-estimate chain.
    :returns: a new :class:`~probgen.models.diffusion.chain.DiffusionChain` with the saved weights, in
        the dtype they were saved in (and a Bayesian chain's prior and weight posterior).
    :raises FileNotFoundError: if there is no file at ``path``.
    :raises ValueError: for a file that is not a saved chain (a foreign file, a training checkpoint,
        one from an older or a newer probgen), a network, decoder or prior that must be passed, a given
        ``net`` conditioned on something else than the saved one, a ``prior`` for a point-estimate
        chain, or one that selects other parameters than the saved posterior's.
    :raises RuntimeError: if the given ``net`` does not match the saved weights (torch's message names them).
    """
    saved = load_checkpoint(
        path, file_format=CHAIN_FORMAT, version=CHAIN_VERSION, what="a diffusion chain", old=_OLD_FORMATS
    )
    schedule = make_schedule(saved["betas"], name=saved["schedule"])
    described = saved["net"]
    if net is None and described is not None and described["class"] == "MeanShiftDenoiser":
        config = dict(described["config"])
        inner = _rebuild("net", config.pop("denoiser"), None, _NETS)
        model: nn.Module = MeanShiftDenoiser(inner, schedule, **config)
    else:
        model = _rebuild("net", described, net, _NETS)
    saved_posterior = saved.get("weight_posterior")
    if saved_posterior is None and prior is not None:
        raise ValueError(
            f"{os.fspath(path)} holds a point-estimate chain (no prior); drop prior=, or save a Bayesian chain."
        )
    chain_prior = None if saved_posterior is None else _rebuild_prior(saved.get("prior"), prior)
    chain = DiffusionChain(
        model,
        schedule,
        event_shape=saved["event_shape"],
        decoder=_rebuild("decoder", saved["decoder"], decoder, _DECODERS),
        variance=saved["variance"],
        prediction=saved["prediction"],
        prior=chain_prior,
        init_scale=None if saved_posterior is None else float(saved_posterior["init_scale"]),
        posterior_rank=None if saved_posterior is None else saved_posterior.get("rank"),
    )
    # files written before chains took a condition have no entry: their nets are unconditional
    condition = saved.get("condition") or {"num_classes": None, "cond_dim": None}
    if (chain.num_classes, chain.cond_dim) != (condition["num_classes"], condition["cond_dim"]):
        raise ValueError(
            f"{os.fspath(path)} holds a chain whose net is conditioned on "
            f"{describe_condition(condition['num_classes'], condition['cond_dim'])}, but the given net is "
            f"conditioned on {describe_condition(chain.num_classes, chain.cond_dim)}; pass a net of the "
            "saved architecture."
        )
    state: dict[str, Any] = saved["net_state"]
    dtype = next((value.dtype for value in state.values() if value.is_floating_point()), None)
    if dtype is not None:
        model.to(dtype)  # in place, so the chain holds the converted net
    model.load_state_dict(state)
    model.eval()
    if saved_posterior is not None and chain.weight_posterior is not None:
        if list(chain.weight_posterior.names) != list(saved_posterior["names"]):
            raise ValueError(
                f"{os.fspath(path)} holds a weight posterior over {saved_posterior['names']}, but the prior selects "
                f"{list(chain.weight_posterior.names)}; pass the prior the chain was saved with."
            )
        if dtype is not None:
            chain.weight_posterior.to(dtype)
        chain.weight_posterior.load_state_dict(saved_posterior["state"])
    return chain
