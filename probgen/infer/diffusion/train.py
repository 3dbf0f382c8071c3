"""Training a diffusion chain's network: :func:`fit_diffusion`, Adam on minibatches, resumable exactly.

``objective="elbo"`` minimises :func:`~probgen.infer.diffusion.objective.estimate_bound`, an unbiased
estimate of the negative ELBO; ``objective="eps_mse"`` the simplified loss. The exponential moving
average of the weights is ``torch.optim.swa_utils.AveragedModel`` (which also averages buffers) and the
learning-rate decay a ``torch.optim.lr_scheduler``; both, with Adam, the step sampler and the one
torch generator behind every random draw, are in the :class:`~probgen.infer.results.DiffusionTrainState`,
so a run resumed from ``init_state`` continues exactly where it stopped.

A Bayesian chain (``DiffusionChain(..., prior=...)``) trains its weight posterior ``q(w)`` and its
deterministic parameters together on :func:`~probgen.infer.diffusion.objective.estimate_bayesian_loss`:
per step one reparameterised weight draw shared by the minibatch, the minibatch's bound given it, scaled
by ``N / B``, and ``KL(q(w) || p(w))``, reported per data point. In expectation this is the loss of
:class:`pyro.infer.TraceMeanField_ELBO` on ``chain.model`` and ``chain.guide`` with ``subsample_size=B``
(tested); the custom loop is there for speed (one step, not ``T`` sites, per minibatch).

Data parallel: started by ``torchrun`` (see :mod:`probgen.infer._distributed`), every process (rank
``r`` of ``W``) runs the same call on the same data. All start from rank 0's parameters; rank ``r``
draws its minibatches of ``batch_size`` rows from its own shard ``r, r + W, r + 2W, ...`` with its own
generator (seeded by :func:`~probgen.infer._distributed.rank_seed`), so a step sees ``W * batch_size``
rows. The gradients (and the loss) are averaged over the ranks between ``backward()`` and clipping,
so every rank takes the same step on the same parameters: the step of one process on the combined
minibatch. A Bayesian chain's loss keeps ``N / B`` and the KL on each rank, so the average is the
same estimate of the negative ELBO on ``W * B`` rows. The importance sampler sees every rank's
terms. Checkpoints hold every rank's generator (``(W, ...)``) and only rank 0 writes them; a run
resumes on the same number of processes.

References:

[1] J. Ho, A. Jain, P. Abbeel (2020), "Denoising Diffusion Probabilistic Models", NeurIPS.
[2] A. Nichol, P. Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models", ICML.
"""

from __future__ import annotations

import copy
import os
import time
from functools import partial
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from probgen._device import check_device
from probgen._types import DeviceLike
from probgen._validate import check_choice, check_positive_float, check_positive_int, check_probability, check_seed
from probgen.infer import _distributed
from probgen.infer._progress import make_progress_bar, progress_enabled
from probgen.infer.diffusion._util import check_chain, check_condition, check_data
from probgen.infer.diffusion.objective import (
    OBJECTIVES,
    TIMESTEP_SAMPLINGS,
    Objective,
    TimestepSampler,
    TimestepSampling,
    eps_mse,
    estimate_bayesian_loss,
    estimate_bound,
)
from probgen.infer.results import DiffusionFitResult, DiffusionTrainState
from probgen.models.diffusion.chain import DiffusionChain
from probgen.models.diffusion.weights import MeanFieldWeights

__all__ = ["fit_diffusion"]


def _decay(lr: float, final_lr: float, decay_steps: int) -> Any:
    """The factor on ``lr`` at step ``k``: exponential decay to ``final_lr`` over ``decay_steps``, then flat."""

    def factor(step: int) -> float:
        return float((final_lr / lr) ** min(step / decay_steps, 1.0))

    return factor


def _check_resume(state: Any, chain: DiffusionChain, options: dict[str, Any]) -> DiffusionTrainState:
    if not isinstance(state, DiffusionTrainState):
        raise TypeError(
            f"init_state must be a DiffusionTrainState (result.state, or DiffusionTrainState.load(path)), "
            f"got {type(state).__name__}."
        )
    if state.config["num_timesteps"] != chain.num_timesteps:
        raise ValueError(
            f"init_state was trained with num_timesteps={state.config['num_timesteps']}, but the chain has "
            f"{chain.num_timesteps}; resume with the chain it was trained on."
        )
    if (state.weight_state is None) != (chain.weight_posterior is None):
        have = "a Bayesian" if state.weight_state is not None else "a point-estimate"
        now = "Bayesian" if chain.weight_posterior is not None else "a point-estimate chain"
        raise ValueError(
            f"init_state is the state of {have} chain, but the chain is {now}; resume with the chain it was "
            "trained on (the same prior=)."
        )
    if chain.weight_posterior is not None and list(state.config.get("weight_sites", [])) != list(chain.weight_sites):
        raise ValueError(
            f"init_state trained a posterior over {state.config.get('weight_sites')}, but the chain's prior selects "
            f"{list(chain.weight_sites)}; resume with the chain it was trained on (the same prior=)."
        )
    for key in ("num_classes", "cond_dim"):  # states saved before chains took a condition have neither
        if state.config.get(key) != getattr(chain, key):
            raise ValueError(
                f"init_state was trained with a net of {key}={state.config.get(key)!r}, but the chain's net has "
                f"{key}={getattr(chain, key)!r}; resume with the chain it was trained on."
            )
    for key, value in options.items():
        if state.config[key] != value:
            raise ValueError(
                f"init_state was trained with {key}={state.config[key]!r}, got {key}={value!r}; "
                "resume with the same options."
            )
    return state


def _update_sampler(sampler: TimestepSampler, t: Tensor, terms: Tensor, job: _distributed.Job | None) -> None:
    """Feed the steps' terms to the importance sampler; in a job every rank's, so its statistics stay equal everywhere."""
    if job is not None and sampler.timestep_sampling == "importance":
        pairs = _distributed.gather((t.detach(), terms.detach()))
        t, terms = torch.cat([pair[0] for pair in pairs]), torch.cat([pair[1] for pair in pairs])
    sampler.update(t, terms)


def _bayesian_chain(chain: DiffusionChain, net: nn.Module, posterior: Any) -> DiffusionChain:
    """``chain``'s options with ``net`` and the weight posterior ``posterior``."""
    out = chain.replace_net(net)
    if not isinstance(posterior, MeanFieldWeights):
        raise TypeError(f"expected the MeanFieldWeights of the run, got {type(posterior).__name__}.")
    out.weight_posterior = posterior
    return out


def _set_posterior_means(net: nn.Module, posterior: MeanFieldWeights) -> None:
    """Put ``q(w)``'s means into ``net``'s Bayesian parameters, so that the net is the posterior-mean net."""
    with torch.no_grad():
        for name, loc in posterior.locs().items():
            net.get_parameter(name).copy_(loc)


def fit_diffusion(
    chain: DiffusionChain,
    data: Tensor,
    *,
    num_steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    final_lr: float | None = None,
    decay_steps: int | None = None,
    seed: int | None = None,
    objective: Objective = "elbo",
    timestep_sampling: TimestepSampling = "uniform",
    ema_decay: float | None = None,
    grad_clip: float | None = 1.0,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    init_state: DiffusionTrainState | None = None,
    progress_bar: bool = True,
    condition: Tensor | None = None,
    device: DeviceLike | None = None,
) -> DiffusionFitResult:
    """Train a copy of ``chain``'s network by Adam on minibatches of ``data``.

    ``objective="elbo"`` minimises :func:`~probgen.infer.diffusion.estimate_bound`, an unbiased estimate
    of the negative ELBO (the bound that :func:`~probgen.infer.diffusion.evaluate_bound` reports);
    ``timestep_sampling="importance"`` draws steps with ``p(t) ∝ sqrt(E[L_{t-1}^2])`` ([2] Section 3.3)
    and weights them by ``1 / (T p(t))``. ``objective="eps_mse"`` minimises the simplified loss
    ``E ||eps - eps_theta||^2`` ([1] eq. 14), a reweighted objective, not the ELBO. All randomness
    (minibatches, steps, noise) comes from one torch generator seeded by ``seed``, whose state is
    checkpointed, so a resumed run continues exactly: ``N`` steps in one call give the same losses as
    ``k`` steps and ``N - k`` resumed ones (give the first call ``decay_steps=N`` when the rate decays).

    A conditional chain (its net built with ``num_classes=`` or ``cond_dim=``) is trained on pairs
    ``(data[i], condition[i])``: every minibatch takes the condition rows of its data rows, and the
    objective is that of ``p_theta(x_0 | c)``. Pass the same ``condition`` again when resuming.

    A Bayesian chain (built with ``prior=``) is trained by the ELBO of the Bayesian model: Adam moves
    the locations and scales of its weight posterior ``q(w)`` and its deterministic parameters on
    :func:`~probgen.infer.diffusion.estimate_bayesian_loss` (one weight draw per minibatch, the
    minibatch's terms scaled by ``N / B``, ``KL(q(w) || p(w))`` once), and ``losses`` are that estimate
    in nats per data point. The trained chain keeps ``q(w)`` (``result.weight_posterior``) and its net
    holds the posterior means; the state carries ``q(w)``'s parameters, so a resumed run continues
    exactly. An EMA averages ``q(w)``'s parameters with the net's. Only ``objective="elbo"`` applies.

    :param DiffusionChain chain: the chain to train; its network is copied, never changed.
    :param Tensor data: training data ``(N, *event_shape)``.
    :param int num_steps: optimisation steps to take in this call (after ``init_state``'s).
    :param int batch_size: data points per minibatch (drawn with replacement).
    :param float lr: Adam's (initial) learning rate.
    :param final_lr: decay the learning rate exponentially from ``lr`` to this value over
        ``decay_steps`` steps (then keep it), through ``torch.optim.lr_scheduler.LambdaLR``; ``None``
        keeps ``lr``.
    :param decay_steps: the length of that decay; ``num_steps`` by default. A resumed run keeps the
        decay of the run it continues.
    :param seed: the run's seed; ``None`` picks one and records it. Ignored when resuming.
    :param str objective: ``"elbo"`` or ``"eps_mse"``.
    :param str timestep_sampling: ``"uniform"`` or ``"importance"`` (``"elbo"`` only).
    :param ema_decay: keep an exponential moving average of the weights and buffers with this decay
        (e.g. 0.999, through ``torch.optim.swa_utils.AveragedModel``) and return it as the trained
        network; ``None`` for none.
    :param grad_clip: clip the gradient's global norm at this value; ``None`` for no clipping.
    :param checkpoint: a file to save the :class:`~probgen.infer.results.DiffusionTrainState` to
        (at the end, and every ``checkpoint_every`` steps if given); read it back with
        ``DiffusionTrainState.load``.
    :param int checkpoint_every: steps between checkpoints.
    :param init_state: a :class:`~probgen.infer.results.DiffusionTrainState` to continue from
        (``result.state``, or ``DiffusionTrainState.load(path)``); ``objective``, ``timestep_sampling``,
        ``final_lr`` and whether there is an EMA must be those it was trained with.
    :param bool progress_bar: show a tqdm bar (never when the ``CI`` variable is set).
    :param condition: for a conditional chain (required there, refused otherwise), the condition of
        each data row: class labels ``(N,)`` (integers in ``[0, num_classes)``) or covariates
        ``(N, cond_dim)``; a single row serves every data row.
    :param device: where training runs (``"cpu"``, ``"cuda"``, a ``torch.device``): the net's copy,
        the weight posterior, the data and the random stream go there, and the fitted chain and its
        losses stay there; ``None`` (the default) trains where ``chain``'s net is. A checkpoint
        resumes on the device it was written on (its random state is that device's stream).
    :returns: a :class:`~probgen.infer.results.DiffusionFitResult`.
    :raises ValueError: for bad sizes or options, data of the wrong shape, a condition that is
        missing, unexpected or does not match the data, an ``init_state`` whose options or chain differ,
        or a Bayesian chain with ``objective="eps_mse"``.
    :raises TypeError: if ``init_state`` is not a DiffusionTrainState, or for a condition of the wrong dtype.

    Example::

        >>> from probgen.models.diffusion import DiffusionChain, MLPDenoiser, get_schedule
        >>> chain = DiffusionChain(MLPDenoiser(2, hidden_dim=16), get_schedule("linear", 20), event_shape=(2,))
        >>> result = fit_diffusion(chain, torch.randn(64, 2), num_steps=5, batch_size=16, seed=0, progress_bar=False)
        >>> result.losses.shape, result.seed, result.state.step
        (torch.Size([5]), 0, 5)
        >>> more = fit_diffusion(chain, torch.randn(64, 2), num_steps=3, init_state=result.state, progress_bar=False)
        >>> more.state.step, more.seed
        (8, 0)

    Class-conditional training takes one label per data row::

        >>> net = MLPDenoiser(1, hidden_dim=16, num_classes=2)
        >>> labelled = DiffusionChain(net, get_schedule("linear", 20), event_shape=(1,))
        >>> labels = torch.tensor([0, 1] * 32)
        >>> data = (4.0 * labels - 2.0)[:, None] + 0.1 * torch.randn(64, 1)
        >>> fit = fit_diffusion(labelled, data, num_steps=5, seed=0, condition=labels, progress_bar=False)
        >>> fit.chain.num_classes, fit.losses.shape
        (2, torch.Size([5]))

    A Bayesian denoiser trains its weight posterior, which the result keeps::

        >>> from probgen.priors import GaussianPrior
        >>> bayes = DiffusionChain(MLPDenoiser(2, hidden_dim=16), get_schedule("linear", 20), event_shape=(2,),
        ...                        prior=GaussianPrior(1.0, fan_in=True, deterministic=("embed",)))
        >>> fit = fit_diffusion(bayes, torch.randn(64, 2), num_steps=5, batch_size=16, seed=0, progress_bar=False)
        >>> fit.weight_posterior.sample(3)["out.1.weight"].shape
        torch.Size([3, 2, 16])
    """
    chain = check_chain(chain)
    target = check_device(device) or chain.device
    data = check_data(chain, data).to(target)
    cond = check_condition(chain, condition, data.shape[0], "data")
    cond = None if cond is None else cond.to(target)
    num_steps = check_positive_int("num_steps", num_steps)
    batch_size = check_positive_int("batch_size", batch_size)
    lr = check_positive_float("lr", lr)
    objective = check_choice("objective", objective, OBJECTIVES)
    timestep_sampling = check_choice("timestep_sampling", timestep_sampling, TIMESTEP_SAMPLINGS)
    if chain.weight_posterior is not None and objective != "elbo":
        raise ValueError(
            f"objective={objective!r} is not a bound, and a Bayesian chain (prior=) is trained by its ELBO, which "
            "weighs the data against KL(q(w) || p(w)); use objective='elbo', or a chain without prior."
        )
    if objective == "eps_mse" and timestep_sampling != "uniform":
        raise ValueError(
            f"timestep_sampling={timestep_sampling!r} weights the ELBO's terms and needs objective='elbo'; "
            "eps_mse draws steps uniformly."
        )
    if final_lr is not None:
        final_lr = check_positive_float("final_lr", final_lr)
    if decay_steps is not None:
        decay_steps = check_positive_int("decay_steps", decay_steps)
    if ema_decay is not None:
        ema_decay = check_probability("ema_decay", ema_decay)
    if grad_clip is not None:
        grad_clip = check_positive_float("grad_clip", grad_clip)
    if checkpoint_every is not None:
        checkpoint_every = check_positive_int("checkpoint_every", checkpoint_every)
    state = None
    if init_state is not None:
        options = {"objective": objective, "timestep_sampling": timestep_sampling, "final_lr": final_lr}
        state = _check_resume(init_state, chain, options)
        if (state.ema_state is None) != (ema_decay is None):
            raise ValueError("init_state and this call disagree on ema_decay; resume with the same options.")
        if decay_steps is not None and decay_steps != state.config["decay_steps"]:
            raise ValueError(
                f"init_state decays the learning rate over decay_steps={state.config['decay_steps']}, "
                f"got {decay_steps}; a resumed run keeps its decay."
            )
        seed = int(state.config["seed"])
        decay_steps = state.config["decay_steps"]
    else:
        seed = check_seed(seed)
        decay_steps = num_steps if decay_steps is None else decay_steps

    start = time.perf_counter()
    net = copy.deepcopy(chain.net).to(target)
    trained = chain.replace_net(net)
    posterior = None if chain.weight_posterior is None else copy.deepcopy(chain.weight_posterior).to(target)
    trained.weight_posterior = posterior
    # what Adam moves and an EMA averages: the net, or for a Bayesian chain its deterministic parameters and q(w)
    averaged: nn.Module = net
    parameters = list(net.parameters())
    if posterior is not None:
        averaged = nn.ModuleDict({"net": net, "weights": posterior})
        sites = set(posterior.names)
        parameters = [p for name, p in net.named_parameters() if name not in sites] + list(posterior.parameters())
    job = _distributed.join(data.device)
    if job is not None:
        if data.shape[0] < job.world_size:
            raise ValueError(
                f"{data.shape[0]} rows cannot be shared by {job.world_size} processes; run fewer processes than there are rows."
            )
        # every rank starts from rank 0's parameters (and buffers), whatever each built
        _distributed.broadcast_parameters([*net.parameters(), *net.buffers(), *([] if posterior is None else posterior.parameters())])
    optimizer = torch.optim.Adam(parameters, lr=lr)
    # the rate of step k is lr * factor(k): LambdaLR counts the steps and checkpoints that count
    scheduler = None if final_lr is None else LambdaLR(optimizer, _decay(lr, final_lr, decay_steps))
    ema = None
    if ema_decay is not None:
        ema = AveragedModel(averaged, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
        ema.module.requires_grad_(False)
        ema.update_parameters(averaged)  # the average starts at the initial weights
    sampler = TimestepSampler(chain.num_timesteps, timestep_sampling, device=target)
    generator = torch.Generator(target)
    step = 0
    if state is not None:
        net.load_state_dict(state.net_state)
        if posterior is not None and state.weight_state is not None:
            posterior.load_state_dict(state.weight_state)
        optimizer.load_state_dict(state.optimizer_state)
        if scheduler is not None and state.scheduler_state is not None:
            scheduler.load_state_dict(state.scheduler_state)
        if ema is not None and state.ema_state is not None:
            ema.load_state_dict(state.ema_state)
        sampler.load_state_dict(state.sampler_state)
        generator.set_state(_distributed.own_rng_state(state.rng_state, job))
        step = int(state.step)
    else:
        generator.manual_seed(seed if job is None else _distributed.rank_seed(seed, job.rank))
    config = {
        "seed": seed,
        "objective": objective,
        "timestep_sampling": timestep_sampling,
        "lr": lr,
        "final_lr": final_lr,
        "decay_steps": decay_steps,
        "batch_size": batch_size,
        "ema_decay": ema_decay,
        "grad_clip": grad_clip,
        "num_timesteps": chain.num_timesteps,
        "num_classes": chain.num_classes,
        "cond_dim": chain.cond_dim,
    }
    if posterior is not None:  # a Bayesian chain's run also records its prior, sites and N (the KL's weight)
        config.update(prior=repr(chain.prior), weight_sites=list(posterior.names), num_data=int(data.shape[0]))

    def current_state() -> DiffusionTrainState:
        return DiffusionTrainState(
            step=step,
            net_state=copy.deepcopy(net.state_dict()),
            optimizer_state=copy.deepcopy(optimizer.state_dict()),
            ema_state=copy.deepcopy(ema.state_dict()) if ema is not None else None,
            scheduler_state=copy.deepcopy(scheduler.state_dict()) if scheduler is not None else None,
            sampler_state=sampler.state_dict(),
            # a run on W processes keeps every rank's stream, in rank order: (W, ...)
            rng_state=generator.get_state() if job is None else torch.stack(_distributed.gather(generator.get_state())),
            config=dict(config),
            weight_state=None if posterior is None else copy.deepcopy(posterior.state_dict()),
        )

    losses = torch.empty(num_steps, dtype=torch.float64, device=target)
    # this rank's rows (all of them in one process): rank r of W owns r, r + W, r + 2W, ...
    rank, world = (0, 1) if job is None else job
    num_own = _distributed.shard_size(data.shape[0], rank, world) if job is not None else data.shape[0]
    main = job is None or rank == 0
    net.train()
    with make_progress_bar(num_steps, desc="fit_diffusion", enabled=main and progress_enabled(progress_bar)) as bar:
        for i in range(num_steps):
            index = rank + world * torch.randint(num_own, (batch_size,), generator=generator, device=target)
            x0 = data[index]
            c = None if cond is None else cond[index]  # the condition rows of the minibatch's data rows
            if posterior is not None:
                bayes = estimate_bayesian_loss(
                    trained, x0, num_data=data.shape[0], timestep_probs=sampler.probs(), generator=generator,
                    condition=c,
                )  # fmt: skip
                loss = bayes.loss
                _update_sampler(sampler, bayes.bound.t, bayes.bound.terms, job)
            elif objective == "elbo":
                estimate = estimate_bound(
                    trained, x0, timestep_probs=sampler.probs(), generator=generator, condition=c
                )
                loss = estimate.loss.mean()
                _update_sampler(sampler, estimate.t, estimate.terms, job)
            else:
                loss = eps_mse(trained, x0, generator, condition=c).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            value = loss.detach()
            if job is not None:  # the mean gradient (and loss) of the ranks' equal minibatches: one step on W * B rows
                value = torch.tensor(_distributed.average_gradients(parameters, value=float(value)))
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            if ema is not None:
                ema.update_parameters(averaged)
            step += 1
            losses[i] = value
            bar.update(1)
            if i % 50 == 0:
                bar.set_postfix(loss=f"{float(losses[i]):.4g}")
            if checkpoint is not None and checkpoint_every is not None and step % checkpoint_every == 0:
                # reading the state is a collective in a job: every rank takes part, rank 0 writes
                _distributed.write_on_main(partial(current_state().save, checkpoint), job)
    net.eval()
    final_state = current_state()
    if checkpoint is not None:
        _distributed.write_on_main(partial(final_state.save, checkpoint), job)
    if ema is None:
        final = trained
    elif posterior is None:
        final = chain.replace_net(ema.module.eval())
    else:
        averages = cast(nn.ModuleDict, ema.module)
        final = _bayesian_chain(chain, averages["net"].eval(), averages["weights"])
    if final.weight_posterior is not None:
        _set_posterior_means(final.net, final.weight_posterior)
    return DiffusionFitResult(
        chain=final, losses=losses, seed=seed, wall_time=time.perf_counter() - start, state=final_state
    )
