"""Observation models for Bayesian neural networks.

A likelihood turns the network's output ``f`` into a distribution over targets. It owns
the data plate: :meth:`Likelihood.__call__` opens ``pyro.plate("data", N, subsample_size=B)``
so that a minibatch of B rows is scaled by N / B automatically, and users never divide
a KL term by the batch size. Global likelihood parameters (a noise scale) are ordinary
Pyro sample sites with proper priors, so SVI and NUTS infer them like any weight.

Every likelihood also works on stacked posterior draws: :meth:`Likelihood.distribution`
accepts ``f`` with leading sample dimensions and globals with the same leading shape.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor

from probgen._validate import as_tensor, check_positive_float

__all__ = [
    "Likelihood",
    "Gaussian",
    "HeteroskedasticGaussian",
    "Bernoulli",
    "Categorical",
    "INITIAL_NOISE_FRACTION",
]

#: A learned Gaussian noise scale starts at this fraction of the targets' standard deviation
#: (see :meth:`Gaussian.initial_globals`).
INITIAL_NOISE_FRACTION = 0.1


def _broadcast_global(value: Tensor, like: Tensor) -> Tensor:
    """Append singleton dims to a global of shape ``sample_shape`` so it broadcasts against
    ``like``, whose shape is ``(*sample_shape, n, *event)``."""
    return value.reshape(value.shape + (1,) * (like.dim() - value.dim()))


class Likelihood(ABC):
    """Base class of observation models ``p(y | f, globals)``.

    Subclasses implement :meth:`distribution` and :meth:`check_target`; those with global
    parameters also override :meth:`global_priors`. The default :meth:`__call__` samples the
    globals, opens the data plate and observes ``"obs"``.

    A complete toy subclass, Poisson counts with a log link:

    >>> class Poisson(Likelihood):
    ...     is_classification = False
    ...     def output_dim(self, target_dim):
    ...         return target_dim
    ...     def check_target(self, y):
    ...         return as_tensor("y", y, ndim=1)
    ...     def distribution(self, f, globals_):
    ...         return dist.Poisson(f[..., 0].exp())
    >>> lik = Poisson()
    >>> float(lik.distribution(torch.zeros(3, 1), {}).log_prob(torch.zeros(3)).sum())
    -3.0
    """

    #: True for likelihoods over class labels (accuracy, calibration and entropy apply).
    is_classification: bool = False

    def global_priors(self) -> dict[str, dist.TorchDistribution]:
        """Priors of the global sample sites this likelihood owns (site name -> distribution)."""
        return {}

    def initial_globals(self, y: Tensor) -> dict[str, Tensor]:
        """Where inference starts the global sites for targets ``y``; sites left out start from their prior."""
        return {}

    def sample_globals(self) -> dict[str, Tensor]:
        """Sample the global sites inside a Pyro model."""
        return {name: pyro.sample(name, prior) for name, prior in self.global_priors().items()}

    @abstractmethod
    def output_dim(self, target_dim: int) -> int:
        """Number of network outputs needed for targets with ``target_dim`` columns."""

    def output_hint(self, target_dim: int) -> str:
        """What the network's outputs mean to this likelihood, for error messages."""
        return "one per target column"

    @abstractmethod
    def check_target(self, y: object) -> Tensor:
        """Validate targets and convert them to a tensor of the right dtype and rank."""

    @abstractmethod
    def distribution(self, f: Tensor, globals_: dict[str, Tensor]) -> dist.TorchDistribution:
        """``p(y | f)`` with batch shape ``f.shape[:-1]`` (one entry per observation)."""

    def mean_variance(self, f: Tensor, globals_: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Mean and variance of ``y`` given ``f``: the pieces of the epistemic/aleatoric split."""
        d = self.distribution(f, globals_)
        return d.mean, d.variance

    def __call__(
        self,
        predict: Callable[[Tensor], Tensor],
        x: Tensor,
        y: Tensor | None = None,
        *,
        subsample_size: int | None = None,
    ) -> Tensor:
        """Observe ``y`` (or sample it when ``None``) under the data plate.

        :param predict: maps a batch of inputs to network outputs ``f``.
        :param int subsample_size: minibatch size; the plate scales the log-likelihood by N / B.
        :returns: the observed (or sampled) targets of the rows in this batch.
        """
        # a likelihood's global priors are made from Python numbers; on a GPU they are made there
        with torch.device(x.device) if x.device.type != "cpu" else contextlib.nullcontext():
            globals_ = self.sample_globals()
        with pyro.plate("data", x.shape[0], subsample_size=subsample_size, device=str(x.device)) as idx:
            if subsample_size is not None:
                x = x[idx]
                y = None if y is None else y[idx]
            f = predict(x)
            return pyro.sample("obs", self.distribution(f, globals_), obs=y)


class _RegressionTargets:
    """Targets are real numbers: a vector ``(n,)`` or a matrix ``(n, d)``."""

    is_classification = False

    def check_target(self, y: object) -> Tensor:
        return as_tensor("y", y, ndim=(1, 2))

    @staticmethod
    def _target_shape(loc: Tensor) -> Tensor:
        return loc[..., 0] if loc.shape[-1] == 1 else loc


class Gaussian(_RegressionTargets, Likelihood):
    """Homoskedastic Gaussian noise, ``y ~ Normal(f, sigma)``.

    :param float noise_scale: a known sigma; by default sigma is a sample site ``"noise_scale"``.
    :param float prior_scale: sigma's prior is ``HalfNormal(prior_scale)`` when it is learned.

    >>> lik = Gaussian(noise_scale=0.5)
    >>> lik.distribution(torch.zeros(4, 1), {}).batch_shape
    torch.Size([4])
    """

    def __init__(self, noise_scale: float | None = None, *, prior_scale: float = 1.0) -> None:
        self.noise_scale = None if noise_scale is None else check_positive_float("noise_scale", noise_scale)
        self.prior_scale = check_positive_float("prior_scale", prior_scale)

    def __repr__(self) -> str:
        return f"Gaussian(noise_scale={self.noise_scale}, prior_scale={self.prior_scale})"

    def global_priors(self) -> dict[str, dist.TorchDistribution]:
        if self.noise_scale is not None:
            return {}
        return {"noise_scale": dist.HalfNormal(torch.tensor(self.prior_scale))}

    def initial_globals(self, y: Tensor) -> dict[str, Tensor]:
        """A learned noise scale starts at :data:`INITIAL_NOISE_FRACTION` of the targets' standard deviation.

        Started from its prior instead (about 0.7 standard units), the noise explains the data
        before the network has bent: SVI then settles in that optimum and fits a nearly flat
        function. Starting small lets the network fit first; the data raise the noise to where it
        belongs (0.8 standard units on wine-quality-red within 8000 steps). The measurements are
        in benchmarks/README.md, "Why these SVI defaults".
        """
        if self.noise_scale is not None:
            return {}
        rows = y.detach().to(torch.get_default_dtype()).reshape(y.shape[0] if y.dim() else 1, -1)
        sd = rows.std(0).mean() if rows.shape[0] > 1 else rows.new_tensor(1.0)
        if not torch.isfinite(sd) or sd <= 0:
            sd = rows.new_tensor(1.0)
        return {"noise_scale": INITIAL_NOISE_FRACTION * sd}

    def output_dim(self, target_dim: int) -> int:
        return target_dim

    def distribution(self, f: Tensor, globals_: dict[str, Tensor]) -> dist.TorchDistribution:
        loc = self._target_shape(f)
        event_dims = loc.dim() - f.dim() + 1  # 0 for vector targets, 1 for matrix targets
        if self.noise_scale is not None:
            scale = torch.full_like(loc, self.noise_scale)
        else:
            scale = _broadcast_global(globals_["noise_scale"], loc)
        d = dist.Normal(loc, scale)
        return d.to_event(1) if event_dims else d


class HeteroskedasticGaussian(_RegressionTargets, Likelihood):
    """Gaussian noise whose scale the network predicts: outputs ``[mean, raw_scale]``.

    ``sigma = softplus(raw_scale) + min_scale``; the network needs twice as many outputs as
    there are target columns.
    """

    def __init__(self, *, min_scale: float = 1e-3) -> None:
        self.min_scale = check_positive_float("min_scale", min_scale)

    def __repr__(self) -> str:
        return f"HeteroskedasticGaussian(min_scale={self.min_scale})"

    def output_dim(self, target_dim: int) -> int:
        return 2 * target_dim

    def output_hint(self, target_dim: int) -> str:
        return "a mean and a raw scale per target column"

    def distribution(self, f: Tensor, globals_: dict[str, Tensor]) -> dist.TorchDistribution:
        k = f.shape[-1] // 2
        loc, raw = f[..., :k], f[..., k:]
        scale = F.softplus(raw) + self.min_scale
        if k == 1:
            return dist.Normal(loc[..., 0], scale[..., 0])
        return dist.Normal(loc, scale).to_event(1)


class Bernoulli(Likelihood):
    """Binary classification with logits ``f`` (one network output); targets are 0/1."""

    is_classification = True

    def __repr__(self) -> str:
        return "Bernoulli()"

    def output_dim(self, target_dim: int) -> int:
        return 1

    def output_hint(self, target_dim: int) -> str:
        return "one logit; for two outputs use Categorical(2)"

    def check_target(self, y: object) -> Tensor:
        labels = as_tensor("y", y, ndim=1, dtype=torch.long)
        if ((labels != 0) & (labels != 1)).any():
            raise ValueError("y must hold binary labels 0 and 1 for a Bernoulli likelihood.")
        return labels.to(torch.get_default_dtype())

    def distribution(self, f: Tensor, globals_: dict[str, Tensor]) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=f[..., 0])

    def class_probs(self, f: Tensor) -> Tensor:
        """Probabilities of both classes, shape ``(*f.shape[:-1], 2)``."""
        p = torch.sigmoid(f[..., 0])
        return torch.stack([1 - p, p], dim=-1)


class Categorical(Likelihood):
    """Multi-class classification with logits ``f`` of shape ``(n, num_classes)``."""

    is_classification = True

    def __init__(self, num_classes: int) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int of at least 2, got {num_classes!r}.")
        self.num_classes = num_classes

    def __repr__(self) -> str:
        return f"Categorical(num_classes={self.num_classes})"

    def output_dim(self, target_dim: int) -> int:
        return self.num_classes

    def output_hint(self, target_dim: int) -> str:
        return "one logit per class"

    def check_target(self, y: object) -> Tensor:
        labels = as_tensor("y", y, ndim=1, dtype=torch.long)
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(
                f"y must hold class labels in 0..{self.num_classes - 1}, "
                f"got values from {int(labels.min())} to {int(labels.max())}."
            )
        return labels

    def distribution(self, f: Tensor, globals_: dict[str, Tensor]) -> dist.TorchDistribution:
        return dist.Categorical(logits=f)

    def class_probs(self, f: Tensor) -> Tensor:
        """Class probabilities, shape ``f.shape``."""
        return torch.softmax(f, dim=-1)

    def mean_variance(self, f: Tensor, globals_: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        p = self.class_probs(f)
        return p, p * (1 - p)
