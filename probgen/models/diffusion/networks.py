"""Time-conditioned denoising networks ``f(x_t, t)``, or ``f(x_t, t, c)`` with a condition, for diffusion chains.

A denoiser maps a noisy input ``x_t`` of shape ``(*batch, *event_shape)`` and integer steps
``t`` of shape ``batch`` (values in ``1..T``) to an output of the same shape as ``x_t``: the
predicted noise ``epsilon`` or the predicted ``x_0``, as the :class:`~probgen.models.diffusion.chain.DiffusionChain`
is told. Any ``nn.Module`` with that signature can be used; the two here cover vector data
(:class:`MLPDenoiser`) and small images such as 8 x 8 digits (:class:`ConvDenoiser`).

A *conditional* denoiser also takes a condition ``c``: class labels, an integer tensor of the batch
shape with values in ``[0, num_classes)``, or covariates, a float tensor ``(*batch, cond_dim)``. Both
networks here take ``num_classes=`` or ``cond_dim=``. The condition is mapped into the space of the
time embedding (a learnt embedding of the class, as in the class-conditional models of [3], or a
linear map of the covariates) and added to it, so every block sees the step and the condition
together. A network of one's own is conditional for the chain when it has an attribute ``num_classes``
or ``cond_dim`` that is not ``None``.

For a diffusion *regression* ``p(y | c)``, :class:`MeanShiftDenoiser` wraps a conditional denoiser with a
small network ``m(c)`` of the condition alone, and the chain then models the residual ``y - m(c)``
exactly: the denoiser sees ``y_t - sqrt(alpha_bar_t) m(c)``, which is the residual's own noised value
([4], where a regression network's output is the mean that the diffusion corrects). Under a weight
prior the mean's weights say how sure the model is of ``E[y | c]``, as a BNN's weights do.

References:

[1] A. Vaswani et al. (2017), "Attention Is All You Need", NeurIPS, Section 3.5 (sinusoidal embedding).
[2] J. Ho, A. Jain, P. Abbeel (2020), "Denoising Diffusion Probabilistic Models", NeurIPS, Appendix B.
[3] P. Dhariwal, A. Nichol (2021), "Diffusion Models Beat GANs on Image Synthesis", NeurIPS, Section 3
    (adaptive group normalisation).
[4] M. Mardani et al. (2023), "Residual Corrective Diffusion Modeling for Km-scale Atmospheric
    Downscaling", arXiv:2309.15214, Section 3 (a regression mean plus diffusion of the residual).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from probgen._validate import check_positive_int
from probgen.models.diffusion._util import check_condition, check_condition_options
from probgen.models.diffusion.schedules import Schedule

__all__ = ["ConvDenoiser", "MLPDenoiser", "MeanShiftDenoiser", "SinusoidalEmbedding"]


class SinusoidalEmbedding(nn.Module):
    """Sinusoidal embedding of the step ``t``: ``[sin(t w_k), cos(t w_k)]``, ``w_k = 10000^(-k/(d/2))``.

    :param int dim: the embedding size (even).

    References: [1] Section 3.5; [2] Appendix B.

    Example::

        >>> SinusoidalEmbedding(8)(torch.tensor([1, 2, 3])).shape
        torch.Size([3, 8])
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        dim = check_positive_int("dim", dim)
        if dim % 2:
            raise ValueError(f"dim must be even, got {dim}.")
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:
        half = self.dim // 2
        dtype = torch.get_default_dtype() if not t.is_floating_point() else t.dtype
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=dtype, device=t.device) / half)
        angles = t.to(dtype)[..., None] * freqs
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def _expand_steps(t: Tensor, batch_shape: torch.Size) -> Tensor:
    t = torch.as_tensor(t)
    return t.expand(batch_shape).reshape(-1)


def _condition_embedding(num_classes: int | None, cond_dim: int | None, dim: int) -> nn.Module | None:
    """The map of a condition into the time embedding's space: an embedding of a class, a linear map of covariates."""
    if num_classes is not None:
        return nn.Embedding(num_classes, dim)
    if cond_dim is not None:
        return nn.Linear(cond_dim, dim)
    return None


def _embed_condition(
    net: MLPDenoiser | ConvDenoiser, emb: Tensor, c: Tensor | None, batch_shape: torch.Size, dtype: torch.dtype
) -> Tensor:
    """``emb`` (rows ``prod(batch_shape)``) plus the embedded condition; checks that ``c`` comes when needed."""
    name = type(net).__name__
    c = check_condition(
        "c", c, num_classes=net.num_classes, cond_dim=net.cond_dim, batch_shape=batch_shape, dtype=dtype,
        owner=name, rows_of="x",
    )  # fmt: skip
    if c is None or net.cond is None:
        return emb
    rows = c.reshape(-1) if net.num_classes is not None else c.reshape(-1, c.shape[-1])
    return emb + net.cond(rows)


class MLPDenoiser(nn.Module):
    """A residual MLP for vector data, conditioned on ``t`` through a sinusoidal embedding.

    The embedded step passes through a small MLP and is added to the hidden state of every
    residual block, so each block can change its behaviour with the noise level.

    :param int data_dim: the size ``D`` of the data vectors; inputs have shape ``(*batch, D)``.
    :param int hidden_dim: the width of the hidden layers.
    :param int num_blocks: the number of residual blocks.
    :param int time_dim: the size of the sinusoidal time embedding.
    :param num_classes: condition on class labels ``c`` in ``[0, num_classes)``, through a learnt
        embedding added to the time embedding; ``None`` (the default) for none.
    :param cond_dim: condition on covariates ``c`` of shape ``(*batch, cond_dim)``, through a linear
        map added to the time embedding; ``None`` (the default) for none. Not with ``num_classes``.
    :raises ValueError: for non-positive sizes, or both ``num_classes`` and ``cond_dim``.

    Example::

        >>> net = MLPDenoiser(2, hidden_dim=16, num_blocks=1)
        >>> net(torch.zeros(5, 2), torch.full((5,), 3)).shape
        torch.Size([5, 2])
        >>> labelled = MLPDenoiser(2, hidden_dim=16, num_blocks=1, num_classes=3)
        >>> labelled(torch.zeros(5, 2), torch.full((5,), 3), torch.tensor([0, 1, 2, 2, 0])).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        data_dim: int,
        *,
        hidden_dim: int = 128,
        num_blocks: int = 3,
        time_dim: int = 32,
        num_classes: int | None = None,
        cond_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.data_dim = check_positive_int("data_dim", data_dim)
        hidden_dim = check_positive_int("hidden_dim", hidden_dim)
        num_blocks = check_positive_int("num_blocks", num_blocks)
        self.num_classes, self.cond_dim = check_condition_options(num_classes, cond_dim)
        self._config = {
            "data_dim": self.data_dim,
            "hidden_dim": hidden_dim,
            "num_blocks": num_blocks,
            "time_dim": time_dim,
        }
        # the condition's options only when set, so that an unconditional net's config is what it always was
        if self.num_classes is not None:
            self._config["num_classes"] = self.num_classes
        if self.cond_dim is not None:
            self._config["cond_dim"] = self.cond_dim
        self.embed = nn.Sequential(
            SinusoidalEmbedding(time_dim), nn.Linear(time_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim)
        )
        self.inp = nn.Linear(data_dim, hidden_dim)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Linear(hidden_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim))
            for _ in range(num_blocks)
        )
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden_dim, data_dim))
        self.cond = _condition_embedding(self.num_classes, self.cond_dim, hidden_dim)

    def get_config(self) -> dict[str, int]:
        """The constructor's arguments, which rebuild this architecture (what ``save_chain`` stores).

        ``num_classes`` and ``cond_dim`` appear only when set.
        """
        return dict(self._config)

    def forward(self, x: Tensor, t: Tensor, c: Tensor | None = None) -> Tensor:
        """The prediction at ``x`` ``(*batch, data_dim)`` and steps ``t`` (shape ``batch``), given ``c``.

        :param c: the condition, for a conditional net only: class labels (an integer tensor of the
            batch shape) or covariates ``(*batch, cond_dim)``; a condition with size-1 (or missing)
            leading dimensions is broadcast over the batch.
        :raises ValueError: for ``x`` of the wrong width, a missing or unexpected ``c``, or one of the
            wrong shape or out of range.
        :raises TypeError: for labels that are not integers or covariates that are not floats.
        """
        if x.shape[-1] != self.data_dim:
            raise ValueError(
                f"x has {x.shape[-1]} features but the network expects {self.data_dim}; "
                "check data_dim of the MLPDenoiser."
            )
        batch_shape = x.shape[:-1]
        h = self.inp(x.reshape(-1, self.data_dim))
        emb = _embed_condition(self, self.embed(_expand_steps(t, batch_shape).to(x.dtype)), c, batch_shape, x.dtype)
        for block in self.blocks:
            h = h + block(h + emb)
        return self.out(h).reshape(x.shape)


class _ConvBlock(nn.Module):
    def __init__(self, channels: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * channels)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        z = self.conv1(nn.functional.silu(self.norm1(h)))
        # scale and shift after the normalisation, which would otherwise remove a per-channel shift
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        z = self.conv2(nn.functional.silu(self.norm2(z) * (1 + scale) + shift))
        return h + z


class ConvDenoiser(nn.Module):
    """A small residual convolutional net for images such as 8 x 8 digits, conditioned on ``t``.

    Residual blocks of two 3 x 3 convolutions (GroupNorm, SiLU, and a per-channel scale and shift
    from the time embedding applied after the second normalisation, as in [3]) work at full resolution;
    four blocks see the whole 8 x 8 image.
    Inputs have shape ``(*batch, channels, height, width)``.

    :param int channels: the number of image channels.
    :param int hidden_channels: the width of the hidden feature maps (a multiple of 8).
    :param int num_blocks: the number of residual blocks.
    :param int time_dim: the size of the sinusoidal time embedding.
    :param num_classes: condition on class labels ``c`` in ``[0, num_classes)`` (e.g. the digit),
        through a learnt embedding added to the time embedding; ``None`` (the default) for none.
    :param cond_dim: condition on covariates ``c`` of shape ``(*batch, cond_dim)`` through a linear
        map added to the time embedding; ``None`` (the default) for none. Not with ``num_classes``.

    Example::

        >>> net = ConvDenoiser(1, hidden_channels=8, num_blocks=1)
        >>> net(torch.zeros(3, 1, 8, 8), torch.tensor([1, 5, 9])).shape
        torch.Size([3, 1, 8, 8])
        >>> digits = ConvDenoiser(1, hidden_channels=8, num_blocks=1, num_classes=10)
        >>> digits(torch.zeros(3, 1, 8, 8), torch.tensor([1, 5, 9]), torch.tensor([0, 7, 3])).shape
        torch.Size([3, 1, 8, 8])
    """

    def __init__(
        self,
        channels: int = 1,
        *,
        hidden_channels: int = 64,
        num_blocks: int = 4,
        time_dim: int = 64,
        num_classes: int | None = None,
        cond_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        hidden_channels = check_positive_int("hidden_channels", hidden_channels)
        num_blocks = check_positive_int("num_blocks", num_blocks)
        if hidden_channels % 8:
            raise ValueError(f"hidden_channels must be a multiple of 8 (GroupNorm groups), got {hidden_channels}.")
        self.num_classes, self.cond_dim = check_condition_options(num_classes, cond_dim)
        self._config = {
            "channels": self.channels,
            "hidden_channels": hidden_channels,
            "num_blocks": num_blocks,
            "time_dim": time_dim,
        }
        if self.num_classes is not None:
            self._config["num_classes"] = self.num_classes
        if self.cond_dim is not None:
            self._config["cond_dim"] = self.cond_dim
        emb_dim = 4 * hidden_channels
        self.embed = nn.Sequential(
            SinusoidalEmbedding(time_dim), nn.Linear(time_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.inp = nn.Conv2d(channels, hidden_channels, 3, padding=1)
        self.blocks = nn.ModuleList(_ConvBlock(hidden_channels, emb_dim, 8) for _ in range(num_blocks))
        self.norm = nn.GroupNorm(8, hidden_channels)
        self.out = nn.Conv2d(hidden_channels, channels, 3, padding=1)
        self.cond = _condition_embedding(self.num_classes, self.cond_dim, emb_dim)

    def get_config(self) -> dict[str, int]:
        """The constructor's arguments, which rebuild this architecture (what ``save_chain`` stores).

        ``num_classes`` and ``cond_dim`` appear only when set.
        """
        return dict(self._config)

    def forward(self, x: Tensor, t: Tensor, c: Tensor | None = None) -> Tensor:
        """The prediction at images ``x`` ``(*batch, channels, height, width)`` and steps ``t``, given ``c``.

        :param c: the condition, for a conditional net only, as for :meth:`MLPDenoiser.forward`.
        """
        if x.dim() < 3 or x.shape[-3] != self.channels:
            raise ValueError(
                f"x must have shape (*batch, {self.channels}, height, width), got {tuple(x.shape)}."
            )
        batch_shape = x.shape[:-3]
        h = self.inp(x.reshape(-1, *x.shape[-3:]))
        emb = _embed_condition(self, self.embed(_expand_steps(t, batch_shape).to(x.dtype)), c, batch_shape, x.dtype)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(nn.functional.silu(self.norm(h))).reshape(x.shape)


class MeanShiftDenoiser(nn.Module):
    """A conditional denoiser of the residual ``y - m(c)``, where ``m(c)`` is a small network of the condition alone.

    For data ``y`` with a condition ``c`` the chain built on this net models ``z = y - m(c)``. A shift
    leaves the density's Jacobian at 1, so ``log p(y | c) = log p_z(y - m(c) | c)``. The noised
    ``y_t = sqrt(alpha_bar_t) y + sqrt(1 - alpha_bar_t) eps`` equals ``z_t + sqrt(alpha_bar_t) m(c)``,
    so the wrapped ``denoiser`` gets ``z_t`` and predicts the same ``eps``; with ``prediction="x0"`` it
    predicts ``z_0`` and ``m(c)`` is added back. Each reverse step's Gaussian is then the residual
    chain's step shifted by ``sqrt(alpha_bar_{t-1}) m(c)``; the one difference from the residual chain
    is the start ``p(y_T) = N(0, I)``, not ``N(sqrt(alpha_bar_T) m(c), I)``, and the chain's bound is exact
    for the model as built. Training, the bound and every sampler need nothing more.

    Why: the mean enters every step through one path of the condition alone. Under a weight prior
    (e.g. ``GaussianPrior(..., deterministic=("denoiser",))``, only the mean's weights Bayesian) its
    posterior says how sure the model is of ``E[y | c]``, as a BNN regression's weights do, and
    gives the wider band between and beyond the data that a shift through the denoiser's shared
    blocks does not (``benchmarks/README.md``, "Gap toy").

    :param nn.Module denoiser: a conditional denoiser ``denoiser(z_t, t, c)`` (``cond_dim`` or
        ``num_classes`` set), e.g. an :class:`MLPDenoiser`.
    :param Schedule schedule: the chain's schedule, whose ``sqrt(alpha_bar_t)`` shift the input; the
        chain checks that it has as many steps as its own.
    :param event_shape: the shape of one data point, as for the chain.
    :param int mean_hidden: the width of the mean's hidden layers.
    :param int mean_layers: the number of its hidden ``tanh`` layers (0 for a linear map of covariates).
    :param str prediction: what ``denoiser`` predicts, ``"epsilon"`` or ``"x0"``; the chain must say the same.
    :raises ValueError: for an unconditional ``denoiser``, non-positive sizes or an unknown ``prediction``.
    :raises TypeError: for a ``denoiser`` that is not a module or a ``schedule`` that is not a Schedule.

    Example::

        >>> from probgen.models.diffusion import get_schedule
        >>> schedule = get_schedule("linear", 10)
        >>> net = MeanShiftDenoiser(MLPDenoiser(1, hidden_dim=8, cond_dim=2), schedule, event_shape=(1,))
        >>> net.cond_dim, net(torch.zeros(5, 1), torch.full((5,), 3), torch.zeros(5, 2)).shape
        (2, torch.Size([5, 1]))
        >>> net.condition_mean(torch.zeros(5, 2)).shape
        torch.Size([5, 1])
    """

    def __init__(
        self,
        denoiser: nn.Module,
        schedule: Schedule,
        *,
        event_shape: tuple[int, ...] | torch.Size,
        mean_hidden: int = 16,
        mean_layers: int = 2,
        prediction: str = "epsilon",
    ) -> None:
        super().__init__()
        if not isinstance(denoiser, nn.Module):
            raise TypeError(f"denoiser must be a torch.nn.Module, got {type(denoiser).__name__}.")
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a Schedule (get_schedule(...)), got {type(schedule).__name__}.")
        self.num_classes, self.cond_dim = check_condition_options(
            getattr(denoiser, "num_classes", None), getattr(denoiser, "cond_dim", None), prefix="denoiser."
        )
        if self.num_classes is None and self.cond_dim is None:
            raise ValueError(
                "MeanShiftDenoiser needs a conditional denoiser (one with num_classes= or cond_dim=): its mean "
                "m(c) is a function of the condition."
            )
        if prediction not in ("epsilon", "x0"):
            raise ValueError(f"prediction must be 'epsilon' or 'x0', got {prediction!r}.")
        mean_hidden = check_positive_int("mean_hidden", mean_hidden)
        mean_layers = check_positive_int("mean_layers", mean_layers, allow_zero=True)
        self.event_shape = torch.Size(check_positive_int("event_shape entry", int(s)) for s in event_shape)
        self.prediction = prediction
        self.mean_hidden, self.mean_layers = mean_hidden, mean_layers
        self.denoiser = denoiser
        out_dim = math.prod(self.event_shape)
        layers: list[nn.Module] = []
        if self.num_classes is not None:  # a label's embedding is the first hidden state
            layers.append(nn.Embedding(self.num_classes, mean_hidden))
        width = mean_hidden if self.cond_dim is None else self.cond_dim
        for _ in range(mean_layers):
            layers += [nn.Linear(width, mean_hidden), nn.Tanh()]
            width = mean_hidden
        layers.append(nn.Linear(width, out_dim))
        self.mean = nn.Sequential(*layers)
        # sqrt(alpha_bar_t) at index t (1..T); index 0, the data itself, has 1
        signal = torch.cat([torch.ones(1, dtype=torch.float64), schedule.sqrt_alphas_cumprod])
        self.signal: Tensor
        self.register_buffer("signal", signal.to(torch.get_default_dtype()))

    @property
    def num_timesteps(self) -> int:
        """The number of steps ``T`` of the schedule the net was built with."""
        return int(self.signal.shape[0]) - 1

    def condition_mean(self, c: Tensor) -> Tensor:
        """``m(c)``, shaped ``(*batch, *event_shape)`` for labels ``batch`` or covariates ``(*batch, cond_dim)``."""
        labels = self.num_classes is not None
        batch_shape = c.shape if labels else c.shape[:-1]
        rows = c.reshape(-1) if labels else c.reshape(-1, c.shape[-1])
        return self.mean(rows).reshape(*batch_shape, *self.event_shape)

    def forward(self, x: Tensor, t: Tensor, c: Tensor | None = None) -> Tensor:
        """The prediction at ``x`` ``(*batch, *event_shape)`` and steps ``t`` (shape ``batch``), given ``c``.

        :raises ValueError: for ``x`` of the wrong shape, or a missing or malformed ``c``.
        """
        event_dim = len(self.event_shape)
        if x.dim() < event_dim or tuple(x.shape[x.dim() - event_dim :]) != tuple(self.event_shape):
            raise ValueError(f"x must have shape (*batch, {', '.join(map(str, self.event_shape))}), got {tuple(x.shape)}.")
        batch_shape = x.shape[: x.dim() - event_dim]
        c = check_condition(
            "c", c, num_classes=self.num_classes, cond_dim=self.cond_dim, batch_shape=batch_shape, dtype=x.dtype,
            owner="MeanShiftDenoiser", rows_of="x",
        )  # fmt: skip
        assert c is not None  # a conditional net: check_condition raised for a missing condition
        mean = self.condition_mean(c)
        steps = torch.as_tensor(t, device=x.device).expand(batch_shape)
        signal = self.signal.to(x.dtype)[steps].reshape(*batch_shape, *(1,) * event_dim)
        out = self.denoiser(x - signal * mean, t, c)
        return out + mean if self.prediction == "x0" else out
