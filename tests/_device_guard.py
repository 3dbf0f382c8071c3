"""A check, on CPU tensors, that a run makes every tensor where its data live.

On a GPU, a tensor made without ``device=`` lands on the CPU: either the run fails with mixed
devices or it copies to and from the host at every step. A CPU-only machine cannot see either, so
:class:`DeviceGuard` watches every torch call of the code under test (a ``TorchFunctionMode``) and
records the calls that would go wrong on a GPU:

* a factory (``zeros``, ``randn``, ``arange``, ``tensor``, ...) called without ``device=`` that
  makes more than one number (a CPU scalar mixes with CUDA tensors, so scalars are left alone);
* a random draw whose ``generator=`` lives on another device than the one asked for;
* a read back to the host (``.cpu()``, ``.numpy()``, ``.tolist()``, ``.to("cpu")``) of more than
  :data:`CONTROL_READ` numbers, made at least :data:`REPEATED` times from one line: a handful of
  control flags per step are what a host loop reads, and a read once per call (a table of steps,
  the final state) is set-up, but a copy of the data at every step is what a GPU run must not do.

Each record names the source line outside torch that made the call (probgen's, Pyro's or the
test's), so a failing test says where to put ``device=``.
"""

from __future__ import annotations

import collections
import os
import traceback
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

#: The most numbers a host read may move and still count as control flow (NUTS reads 3 flags per iteration).
CONTROL_READ = 8
#: A larger read made this many times from one line is one per step, not set-up.
REPEATED = 3

_FACTORIES = {
    torch.zeros, torch.ones, torch.empty, torch.full, torch.randn, torch.rand, torch.randint, torch.randperm,
    torch.arange, torch.linspace, torch.logspace, torch.tensor, torch.eye, torch.as_tensor,
}  # fmt: skip
_RANDOM = {torch.randn, torch.rand, torch.randint, torch.randperm, torch.multinomial, torch.normal, torch.bernoulli}
_READS = {torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.tolist}


#: The checkout's root, stripped from the paths in records (so they read ``probgen/...``, ``tests/...``).
_ROOT = str(Path(__file__).resolve().parents[1]) + os.sep

#: Frames of torch's compilers: they build device code once from example tensors, outside any run's loop.
_COMPILERS = ("/torch/_inductor/", "/torch/_dynamo/", "/torch/fx/", "/torch/_subclasses/")


def _caller() -> str | None:
    """The innermost frame of the current call outside torch (probgen's, Pyro's, a test's), as ``path:line``;
    ``None`` inside a compiler."""
    frames = traceback.extract_stack()[:-2]
    if any(marker in frame.filename for frame in frames for marker in _COMPILERS):
        return None
    for frame in reversed(frames):
        name = frame.filename
        if "/torch/" not in name and "_device_guard" not in name and "contextlib" not in name:
            return f"{name.split('site-packages/')[-1].removeprefix(_ROOT)}:{frame.lineno}"
    return "?"


class DeviceGuard(TorchFunctionMode):
    """Records (and counts) the calls that would leave the run's device; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.hits: collections.Counter[tuple[str, str]] = collections.Counter()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        problem = self._problem(func, args, kwargs, out)
        if problem is not None:
            where = _caller()
            if where is not None:
                self.hits[(problem, where)] += 1
        return out

    @staticmethod
    def _problem(func: Any, args: Any, kwargs: dict[str, Any], out: Any) -> str | None:
        generator = kwargs.get("generator")
        if func in _RANDOM and generator is not None:
            where = kwargs.get("device")
            if where is None:
                where = next((a.device for a in args if isinstance(a, torch.Tensor)), None)
            if where is None or torch.device(where) != generator.device:
                return f"{func.__name__} with a generator on {generator.device} for a tensor on {where}"
        if func in _FACTORIES and "device" not in kwargs and isinstance(out, torch.Tensor) and out.numel() > 1:
            if not (func is torch.as_tensor and args and isinstance(args[0], torch.Tensor)):
                return f"{func.__name__} without device="
        if func in _READS and isinstance(args[0], torch.Tensor) and args[0].numel() > CONTROL_READ:
            return f".{func.__name__}() of {args[0].numel()} numbers"
        if func is torch.Tensor.to and "cpu" in (*args[1:], kwargs.get("device")):
            if isinstance(args[0], torch.Tensor) and args[0].numel() > CONTROL_READ:
                return '.to("cpu")'
        return None

    def violations(self) -> dict[tuple[str, str], int]:
        """Every misplaced factory or generator, and the host reads repeated :data:`REPEATED` times or more."""
        return {
            key: count for key, count in self.hits.items() if not key[0].startswith(".") or count >= REPEATED
        }

    def report(self) -> str:
        found = sorted(self.violations().items(), key=lambda item: -item[1])
        return "\n".join(f"{count} x {problem} at {where}" for (problem, where), count in found)
