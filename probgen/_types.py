"""Type aliases shared across probgen. Imports nothing from probgen."""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import torch
from torch import Tensor

#: The leading dimensions of every array of draws, in this order.
SAMPLE_DIMS: tuple[str, str] = ("chain", "draw")
#: Posterior draws keyed by Pyro site name; every array leads with the sample dims.
Samples: TypeAlias = dict[str, Tensor]
#: Anything that can seed a run: an int, or None for "pick one and record it".
SeedLike: TypeAlias = int | None
#: Array-likes accepted at the public boundary and converted to tensors.
ArrayLike: TypeAlias = Tensor | np.ndarray | list | tuple
#: A torch device or its name.
DeviceLike: TypeAlias = torch.device | str
