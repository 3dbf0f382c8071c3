"""Capturing a tensor function once, to replay it without the Python that produced it.

A user's Pyro program evaluates its log joint through Pyro's messenger stack, distribution
objects and autograd: hundreds of microseconds of Python for a few dozen tensor operations.
NUTS needs that gradient thousands of times at the same shapes, so :func:`capture` records the
operations of one evaluation with ``torch.fx``'s ``make_fx`` (the program runs normally once; the
result is a graph of ATen operations, the backward pass included) and :func:`compile_graph`
optionally hands that graph to TorchInductor, which fuses it into a few C++ loops.

Measured on eight schools (10 unconstrained dimensions, 4 chains batched, one thread): eager
replay through Pyro 2.2-2.9 ms per gradient, the captured graph about 1.2 ms, the same graph
compiled by Inductor 20-25 µs after 3-5 s of compilation (``torch.compile`` on the same graph:
135 µs per call, its guards and wrappers; calling Inductor's compiler on the captured graph skips
them). Inductor's C++ wrapper (``cpp_wrapper``) cuts the cost of calling a compiled graph with
many small inputs and outputs further, and its disk cache makes a graph compiled once, in any
process, load in about a second.

A capture records one path through the program: a program that branches in Python on a value
(``if tau > 1``) or reads one out (``float(tau)``) would replay the branch it took. So every
capture is checked against the eager function at a second point, and a mismatch keeps the eager
function.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import Tensor

__all__ = ["capture", "compile_graph", "agrees", "lift_constants"]

Fn = Callable[..., Any]
#: How Inductor names the ``while_loop`` higher-order operator in its cacheability check.
_WHILE_LOOP = "torch.ops.higher_order.while_loop"


def _flatten(out: Any) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    return [t for item in out for t in _flatten(item)]


def agrees(a: Any, b: Any) -> bool:
    """Whether two outputs (tensors or nested tuples of tensors) agree to rounding.

    Integers and booleans must be equal. Floats must agree to ``max|a - b| <= tol * (1 + max|b|)``,
    NaN matching NaN, with ``tol`` 1e-4 in float32 and 1e-9 in float64: a compiled graph fuses and
    reorders sums, whose rounding grows with the size of the terms, not of the result.
    """
    left, right = _flatten(a), _flatten(b)
    if len(left) != len(right):
        return False
    for x, y in zip(left, right):
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if not x.is_floating_point():
            if not torch.equal(x, y):
                return False
            continue
        tol = 1e-9 if x.dtype == torch.float64 else 1e-4
        nan = torch.isnan(x)
        if not torch.equal(nan, torch.isnan(y)):
            return False
        x, y = x[~nan].double(), y[~nan].double()
        if x.numel() == 0:
            continue
        finite = torch.isfinite(y)
        if not torch.equal(x[~finite], y[~finite]):  # infinities of the same sign
            return False
        x, y = x[finite], y[finite]
        if x.numel() and float((x - y).abs().max()) > tol * (1 + float(y.abs().max())):
            return False
    return True


def capture(fn: Fn, example: Sequence[Tensor], check: Sequence[Tensor] | None = None) -> torch.fx.GraphModule | None:
    """The operations of ``fn(*example)`` as an ``fx.GraphModule``, or ``None`` if they cannot be captured.

    :param fn: a function of tensors returning a tensor or a tuple of tensors.
    :param example: the inputs to trace with (their shapes and dtypes are fixed in the graph).
    :param check: other inputs of the same shapes; the graph must agree with ``fn`` on them.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    # make_fx tells inputs apart by identity: two arguments that are one tensor would become one
    # placeholder of the graph, which then reads the wrong input whenever they differ.
    example = [t.clone() for t in example]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracing notices (e.g. about constants) are not the user's
            graph = make_fx(lambda *inputs: fn(*inputs))(*example)  # a plain function: make_fx rejects bound methods
        graph.graph.eliminate_dead_code()
        graph.recompile()
        if check is not None and not agrees(graph(*check), fn(*check)):
            return None
    except Exception:  # make_fx raises many types on untraceable code; the eager function still works
        return None
    return graph


def lift_constants(graph: torch.fx.GraphModule) -> tuple[torch.fx.GraphModule, list[Tensor]]:
    """``graph`` with its tensor constants turned into trailing inputs, and those constants.

    ``lifted(*inputs, *constants)`` computes ``graph(*inputs)``. A graph called inside a captured
    ``while_loop`` needs this: the loop's body must receive every tensor it reads as an input.
    """
    lifted = torch.fx.GraphModule(graph, graph.graph.__deepcopy__())  # the caller's graph stays as it was
    nodes = lifted.graph.nodes
    last = [node for node in nodes if node.op == "placeholder"][-1]
    constants: list[Tensor] = []
    inputs: dict[str, torch.fx.Node] = {}  # one input per attribute, however often it is read
    for node in list(nodes):
        if node.op != "get_attr":
            continue
        value = graph
        for name in str(node.target).split("."):
            value = getattr(value, name)
        if not isinstance(value, Tensor):
            continue
        if node.target not in inputs:
            with lifted.graph.inserting_after(last):
                last = inputs[str(node.target)] = lifted.graph.placeholder(f"constant_{len(constants)}")
            constants.append(value)
        node.replace_all_uses_with(inputs[str(node.target)])
        lifted.graph.erase_node(node)
    lifted.graph.lint()
    lifted.recompile()
    return lifted, constants


def compile_graph(graph: torch.fx.GraphModule, example: Sequence[Tensor], *, warn: bool = True) -> Fn | None:
    """``graph`` compiled by TorchInductor (no ``torch.compile`` guards), or ``None`` if that fails.

    The compiled function takes the same positional tensors and returns a list of tensors.
    ``warn=False`` fails quietly, for a caller that has a slower path to fall back on.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # importing Inductor announces torch.jit deprecations
            from torch._inductor.compile_fx import compile_fx
    except ImportError:  # a torch build without Inductor
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Inductor's own deprecation notices are not the user's
            from torch._inductor import config

            # a C++ wrapper allocates and launches the kernels without Python: on small tensors the
            # Python wrapper's per-buffer checks and allocations cost more than the kernels
            from torch._guards import TracingContext, tracing
            from torch._subclasses.fake_tensor import FakeTensorMode
            from torch.fx.experimental.symbolic_shapes import ShapeEnv

            for node in graph.graph.nodes:  # make_fx's metadata comes from its own fake mode; Inductor makes its own
                node.meta.pop("val", None)
                node.meta.pop("tensor_meta", None)
            # Inductor's disk cache of compiled graphs needs a tracing context with a shape environment,
            # which torch.compile would have opened; with it, a graph compiled once loads in about a second
            context = TracingContext(FakeTensorMode(shape_env=ShapeEnv()))
            # Inductor keeps graphs with higher-order operators out of its disk cache unless they are
            # marked cacheable. A captured while_loop's condition and body are submodules of the
            # graph, which the cache key hashes with their code and constants' values, so marking it
            # cannot confuse two loops; without it every process would recompile (12 s for NUTS).
            cacheable = {**config.unsafe_marked_cacheable_functions, _WHILE_LOOP: torch.__version__}
            with tracing(context), config.patch(cpp_wrapper=True, unsafe_marked_cacheable_functions=cacheable):
                compiled = cast(Fn, compile_fx(graph, list(example)))
            out = compiled(*example)
        if not agrees(out, graph(*example)):
            return None
    except Exception as error:  # a missing C++ compiler, an unsupported op: the graph still works
        if not warn:
            return None
        warnings.warn(
            f"compiling the log density failed ({type(error).__name__}: {error}); NUTS continues with the "
            "uncompiled graph, which is slower.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return compiled
