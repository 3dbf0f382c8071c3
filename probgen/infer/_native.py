"""The C++ pass of the ``"fused"`` MLP kernel: built once per machine, called as a torch operator.

``_mlp_kernel.cpp`` evaluates an MLP BNN's log joint and its gradient for every chain in one pass
over blocks of data rows, and registers it with torch's dispatcher as ``probgen::fused_mlp``, so
that compiled graphs (the NUTS sampler's loop) call it from C++, with no Python per call. It is
built with the compiler TorchInductor itself needs on CPU (``$CXX``, else ``g++``), with
``-march=native``, against the installed torch's headers (a few seconds, once). The library goes
to a cache folder, keyed by the source, the compiler's version, torch's version and the CPU
(``$PROBGEN_CACHE_DIR``, else ``~/.cache/probgen``, else a folder in the system's temporary one).
It is written under a temporary name and renamed, so processes that build at once never load a
half-written file. Where nothing can be built, :func:`available` is false and ``compile_bnn``
keeps the ``"mlp"`` kernel: silently without a compiler, with a warning when a build fails.

The operator takes everything it reads as arguments (no hidden state), so a compiled graph that
calls it is correct in any process that loads it from Inductor's cache; a fake (shape-only)
implementation lets ``torch.compile`` and ``make_fx`` trace it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["MAX_LAYERS", "ACTIVATIONS", "LIKELIHOODS", "available"]

_SOURCE = Path(__file__).with_name("_mlp_kernel.cpp")
_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-std=c++17", "-shared", "-fPIC", "-w")
#: the deepest network the C++ pass takes (its fixed-size arrays)
MAX_LAYERS = 16
#: codes shared with _mlp_kernel.cpp
ACTIVATIONS = {"identity": 0, "tanh": 1, "sigmoid": 2, "relu": 3}
LIKELIHOODS = {"gaussian": 0, "bernoulli": 1, "categorical": 2}


def _cache_dir() -> Path:
    root = os.environ.get("PROBGEN_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "probgen"


def _cpu_id() -> str:
    """What ``-march=native`` depends on: the CPU's model and feature flags."""
    try:
        with open("/proc/cpuinfo") as file:
            lines = [line for line in file if line.startswith(("model name", "flags"))]
        return "".join(dict.fromkeys(lines))  # the first core's lines, once
    except OSError:
        return platform.processor() + platform.machine()


def _torch_flags() -> list[str]:
    """Include folders, libraries and ABI of the installed torch."""
    from torch.utils.cpp_extension import include_paths, library_paths

    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    lib = library_paths()
    return [
        *(f"-I{path}" for path in include_paths()),
        *(f"-L{path}" for path in lib),
        *(f"-Wl,-rpath,{path}" for path in lib),
        "-ltorch_cpu",
        "-lc10",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
    ]


@functools.cache
def _load() -> bool:
    """Build (once per machine) and load the operator; false where that cannot be done."""
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        return False
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, check=True, timeout=60).stdout
        flags = [*_FLAGS, *_torch_flags()]
        parts = [_SOURCE.read_bytes(), version, " ".join(flags).encode(), torch.__version__.encode(), _cpu_id().encode()]
        key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:24]
        target = _cache_dir() / f"mlp_kernel_{key}.so"
        if not target.exists():
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
            except OSError:  # no writable home: a per-user folder under the system's temporary one
                target = Path(tempfile.gettempdir()) / f"probgen-{os.getuid()}" / target.name
                target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                built = Path(tmp) / target.name
                subprocess.run([compiler, str(_SOURCE), "-o", str(built), *flags], capture_output=True, check=True, timeout=600)
                os.replace(built, target)
        torch.ops.load_library(str(target))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        detail = error.stderr.decode(errors="replace")[-2000:] if isinstance(error, subprocess.CalledProcessError) else str(error)
        warnings.warn(
            f"probgen could not build its C++ MLP kernel with {compiler} ({detail.strip()}); NUTS on MLP BNNs "
            "runs the 'mlp' kernel instead, about 1.3x slower per gradient.",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    torch.library.register_fake("probgen::fused_mlp")(_fused_mlp_fake)
    return True


def available() -> bool:
    """Whether the operator is loaded, or can be built and loaded, here (the first call does it)."""
    return _load()


def _fused_mlp_fake(
    u: Tensor, x_t: Tensor, target_t: Tensor, prior_loc: Tensor, prior_prec: Tensor, fixed: list[Tensor], spec: list[int], scalars: list[float]
) -> tuple[Tensor, Tensor]:
    return u.new_empty(u.shape[0]), torch.empty_like(u)
