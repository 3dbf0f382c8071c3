"""Where a run's tensors live: checking a ``device=`` argument, moving data there, and its random streams.

Every fit takes ``device=``: ``None`` (the default) keeps the data and the model where they are,
and anything else moves both there before the first step. From then on a run makes every tensor
where its data live (``device=`` on each factory call, a generator of that device), so a fit on a
GPU never copies to the CPU inside its loop; what it reads back there are the loss and a few
control flags per step. A run's random numbers come from generators of the run's device, so the
same seed gives the same draws on one device and different ones on another (CPU and CUDA streams
differ), as in PyTorch itself.

Imports nothing from probgen but the type aliases.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from probgen._types import DeviceLike

__all__ = ["check_device", "device_of", "fork_rng", "get_rng_state", "move", "set_rng_state"]


def check_device(device: Any) -> torch.device | None:
    """``device`` as a :class:`torch.device` (``None`` stays ``None``), or a clear error.

    ``"cuda"`` without an index is the GPU ``LOCAL_RANK`` in a process that ``torchrun`` started (one
    GPU per process, as torch.distributed's NCCL backend expects) and the current GPU otherwise.

    :raises TypeError: for something that is neither a device nor its name.
    :raises ValueError: for an unknown name, or a CUDA device on a machine without one (or without that one).
    """
    if device is None:
        return None
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a torch.device, its name ('cpu', 'cuda', 'cuda:1') or None, got {type(device).__name__}.")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device={device!r} is not a device torch knows ('cpu', 'cuda', 'cuda:1', ...).") from error
    if resolved.type == "cuda":
        if resolved.index is None and "LOCAL_RANK" in os.environ:
            resolved = torch.device("cuda", int(os.environ["LOCAL_RANK"]))  # torchrun's GPU for this process
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} asks for CUDA, but torch sees no CUDA device on this machine.")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s).")
    return resolved


def device_of(*values: Any, default: DeviceLike = "cpu") -> torch.device:
    """The device of the first tensor (or module with parameters) among ``values``, nested containers included."""
    for value in values:
        if isinstance(value, Tensor):
            return value.device
        if isinstance(value, nn.Module):
            first = next(value.parameters(), None)
            if first is not None:
                return first.device
        elif isinstance(value, dict):
            found = device_of(*value.values(), default="meta")
            if found.type != "meta":
                return found
        elif isinstance(value, (list, tuple)):
            found = device_of(*value, default="meta")
            if found.type != "meta":
                return found
    return torch.device(default)


def move(value: Any, device: torch.device | None) -> Any:
    """``value`` with every tensor in it (tuples, named ones too, lists and dicts, nested) on ``device``; ``None`` moves nothing."""
    if device is None:
        return value
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: move(v, device) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple
        return type(value)(*(move(v, device) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(move(v, device) for v in value)
    return value


def get_rng_state(device: torch.device) -> Tensor:
    """The global random state a run on ``device`` draws from: the CPU's, followed by the CUDA device's for CUDA."""
    state = torch.get_rng_state()
    if device.type == "cuda":
        state = torch.cat([state, torch.cuda.get_rng_state(device)])
    return state


def set_rng_state(state: Tensor, device: torch.device) -> None:
    """Restore what :func:`get_rng_state` returned."""
    cpu_size = torch.get_rng_state().numel()
    torch.set_rng_state(state[:cpu_size].clone())
    if device.type == "cuda":
        if state.numel() == cpu_size:
            raise ValueError("this random state was saved by a run on the CPU; resume it on the CPU (device='cpu').")
        torch.cuda.set_rng_state(state[cpu_size:].clone(), device)


@contextlib.contextmanager
def fork_rng(device: torch.device) -> Iterator[None]:
    """``torch.random.fork_rng`` over the CPU's stream and, on CUDA, ``device``'s: seeding inside leaks nothing."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        yield
