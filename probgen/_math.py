"""Small numerical formulas shared by models and inference. Imports nothing from probgen.

A closed form needed by two modules lives here once, below both of them in the import order.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["normal_kl"]


def normal_kl(mean1: Tensor, log_var1: Tensor, mean2: Tensor, log_var2: Tensor) -> Tensor:
    """Elementwise ``KL(N(mean1, exp(log_var1)) || N(mean2, exp(log_var2)))`` in nats.

    ``KL = (log_var2 - log_var1 + exp(log_var1 - log_var2) + (mean1 - mean2)^2 exp(-log_var2) - 1) / 2``.
    Taking log-variances keeps it finite where a variance underflows; arguments broadcast.

    Example::

        >>> kl = normal_kl(torch.tensor(1.0), torch.tensor(0.0), torch.tensor(0.0), torch.tensor(0.0))
        >>> float(kl)  # two unit-variance Normals one apart: (mean1 - mean2)^2 / 2
        0.5
    """
    ratio = torch.exp(log_var1 - log_var2)
    return 0.5 * (log_var2 - log_var1 + ratio + (mean1 - mean2) ** 2 * torch.exp(-log_var2) - 1.0)
