"""The flat log-density: layout, the kernels against Pyro's own trace, and the kernel choice."""

from __future__ import annotations

import subprocess
import sys

import pyro
import pytest
import torch
from pyro import poutine
from torch import nn

from probgen import BNN, Bernoulli, Categorical, Gaussian, GaussianPrior
from probgen.infer import _native
from probgen.infer._capture import capture, compile_graph
from probgen.infer._flat import AutogradLogDensity, FusedMLPLogDensity, MLPLogDensity, compile_bnn


def _data(model: BNN, n: int, likelihood: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, model.in_features, generator=gen)
    if likelihood == "bernoulli":
        y = torch.randint(0, 2, (n,), generator=gen)
    elif likelihood == "categorical":
        y = torch.randint(0, 3, (n,), generator=gen)
    elif likelihood == "matrix":
        y = torch.randn(n, 2, generator=gen)
    else:
        y = torch.randn(n, generator=gen)
    x_t, y_t = model.check_data(x, y)
    assert y_t is not None
    return x_t, y_t


def _pyro_log_joint(model: BNN, density, u: torch.Tensor, x, y) -> torch.Tensor:
    """Pyro's log joint at the constrained values of ``u``, plus the log-Jacobians of the transforms."""
    values = density.unpack(u)
    trace = poutine.trace(poutine.condition(model, data=values)).get_trace(x, y)
    total = trace.log_prob_sum()
    for site in density.sites:
        if not site.is_identity:
            raw = u[site.start : site.stop].reshape(site.shape)
            total = total + site.transform.log_abs_det_jacobian(raw, site.transform(raw)).sum()
    return total


CASES = {
    "tanh-gaussian": (lambda: nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)), None, Gaussian(), "vector"),
    "known-noise": (lambda: nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)), None, Gaussian(0.3), "vector"),
    "deep-relu-sigmoid-matrix": (
        lambda: nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4), nn.Sigmoid(), nn.Linear(4, 2)),
        None,
        Gaussian(),
        "matrix",
    ),
    "bernoulli": (lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)), None, Bernoulli(), "bernoulli"),
    "categorical": (lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)), None, Categorical(3), "categorical"),
    "deterministic-middle": (
        lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1)),
        GaussianPrior(0.7, fan_in=True, deterministic=("2",)),
        Gaussian(),
        "vector",
    ),
    "deterministic-first-weight": (
        lambda: nn.Sequential(nn.Linear(3, 4, bias=False), nn.Tanh(), nn.Linear(4, 1)),
        GaussianPrior(1.0, deterministic=("0.weight",)),
        Gaussian(),
        "vector",
    ),
    "linear-regression": (lambda: nn.Linear(3, 1), GaussianPrior(2.0), Gaussian(0.5), "vector"),
}


@pytest.mark.parametrize("kernel", ["mlp", "fused"])
@pytest.mark.parametrize("case", sorted(CASES), ids=str)
def test_hand_written_kernels_equal_autograd_kernel_and_pyro_trace(case, kernel):
    make_net, prior, likelihood, kind = CASES[case]
    model = BNN(make_net(), prior, likelihood)
    # 37 rows: the fused kernel's blocks of rows end in a partial one
    x, y = _data(model, 37, kind)
    fast = compile_bnn(model, x, y, kernel=kernel)
    slow = compile_bnn(model, x, y, kernel="autograd")
    assert fast.kernel == kernel and slow.kernel == "autograd"
    u = 0.5 * torch.randn(3, fast.dim)
    value, grad = fast.value_and_grad(u)
    ref_value, ref_grad = slow.value_and_grad(u)
    assert value.shape == (3,) and grad.shape == (3, fast.dim)
    torch.testing.assert_close(value, ref_value)
    torch.testing.assert_close(grad, ref_grad)
    torch.testing.assert_close(value[1], _pyro_log_joint(model, fast, u[1], x, y))


def test_autograd_kernel_handles_a_custom_module():
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Linear(2, 2)
            self.out = nn.Linear(2, 1)

        def forward(self, x):
            return self.out(x + torch.tanh(self.inner(x)))

    model = BNN(Residual())
    x, y = _data(model, 6, "vector")
    density = compile_bnn(model, x, y)
    assert isinstance(density, AutogradLogDensity)
    u = 0.3 * torch.randn(2, density.dim)
    value, grad = density.value_and_grad(u)
    torch.testing.assert_close(value[0], _pyro_log_joint(model, density, u[0], x, y))
    # central differences along one random direction
    direction = torch.randn(density.dim)
    h = 1e-6
    numeric = (density.log_density(u + h * direction) - density.log_density(u - h * direction)) / (2 * h)
    torch.testing.assert_close(numeric, grad @ direction, rtol=1e-5, atol=1e-6)


def test_pack_and_unpack_round_trip_with_leading_dims():
    model = BNN(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)))
    x, y = _data(model, 5, "vector")
    density = compile_bnn(model, x, y)
    assert [s.name for s in density.sites] == list(model.site_names)
    assert density.dim == 2 * 3 + 3 + 3 + 1 + 1
    u = torch.randn(4, 6, density.dim)
    values = density.unpack(u)
    assert values["0.weight"].shape == (4, 6, 3, 2)
    assert values["noise_scale"].shape == (4, 6)
    assert (values["noise_scale"] > 0).all()
    torch.testing.assert_close(density.pack(values), u)


def test_prior_draws_are_reproducible_and_leave_the_global_rng_alone():
    model = BNN(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)))
    x, y = _data(model, 5, "vector")
    density = compile_bnn(model, x, y)
    state = torch.random.get_rng_state()
    a = density.sample_prior(3, torch.Generator().manual_seed(4))
    b = density.sample_prior(3, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and a.shape == (3, density.dim)
    assert torch.equal(state, torch.random.get_rng_state())


def test_kernel_choice_and_errors():
    laplace = BNN(nn.Sequential(nn.Linear(2, 1)), _LaplacePrior())
    x, y = _data(laplace, 5, "vector")
    assert compile_bnn(laplace, x, y).kernel == "autograd"
    assert not MLPLogDensity.supports(laplace) and not FusedMLPLogDensity.supports(laplace)
    for kernel in ("mlp", "fused"):
        with pytest.raises(ValueError, match=f"the '{kernel}' kernel needs .* use kernel='autograd'"):
            compile_bnn(laplace, x, y, kernel=kernel)
    with pytest.raises(ValueError, match="unknown kernel 'jit'; expected one of 'auto', 'fused', 'mlp', 'autograd'"):
        compile_bnn(laplace, x, y, kernel="jit")
    gelu = BNN(nn.Sequential(nn.Linear(2, 3), nn.GELU(), nn.Linear(3, 1)))
    x, y = _data(gelu, 5, "vector")
    assert compile_bnn(gelu, x, y).kernel == "autograd"


def test_auto_takes_the_fused_kernel_where_it_runs_and_mlp_elsewhere(monkeypatch):
    model = BNN(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)))
    x, y = _data(model, 5, "vector")
    assert _native.available()  # a C++ compiler is part of the test machine (TorchInductor needs it too)
    assert compile_bnn(model, x, y).kernel == "fused"
    assert compile_bnn(model, x.half(), y.half()).kernel == "mlp"  # float16: no C++ pass for it
    with pytest.raises(ValueError, match="the 'fused' kernel runs on the CPU in float32 or float64"):
        compile_bnn(model, x.half(), y.half(), kernel="fused")
    monkeypatch.setattr(_native, "available", lambda: False)  # a machine without a compiler
    assert compile_bnn(model, x, y).kernel == "mlp"


def test_fused_kernel_matches_mlp_kernel_on_many_rows_in_float32_and_under_compile():
    # 8-50-1 tanh on 1000 rows, as the NUTS benchmark: several full blocks of rows, float32 rounding
    torch.manual_seed(0)
    model = BNN(nn.Sequential(nn.Linear(8, 50), nn.Tanh(), nn.Linear(50, 1)))
    x, y = _data(model, 1000, "vector")
    fused, mlp = compile_bnn(model, x, y, kernel="fused"), compile_bnn(model, x, y, kernel="mlp")
    u = fused.init_positions(2, torch.Generator().manual_seed(1))
    value, grad = fused.value_and_grad(u)
    ref_value, ref_grad = mlp.value_and_grad(u)
    # float32 sums of 1000 rows in a different order: relative error ~ sqrt(1000) * 6e-8 ~ 2e-6
    torch.testing.assert_close(value, ref_value, rtol=2e-5, atol=0)
    assert float((grad - ref_grad).abs().max()) <= 2e-5 * float(ref_grad.abs().max())
    graph = capture(fused.value_and_grad, [u])  # as the NUTS sampler compiles it
    compiled = None if graph is None else compile_graph(graph, [u])
    assert compiled is not None
    c_value, c_grad = compiled(u)
    assert torch.equal(c_value, value) and torch.equal(c_grad, grad)  # the same C++ pass, called from the graph


def test_fused_operator_names_bad_input():
    model = BNN(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)))
    x, y = _data(model, 5, "vector")
    density = compile_bnn(model, x, y, kernel="fused")
    assert isinstance(density, FusedMLPLogDensity)
    args = [density.x_t, density.target_t, density.prior_loc, density.prior_prec, density.fixed, density.spec, density.scalars]
    with pytest.raises(RuntimeError, match="u must be float32 or float64"):
        torch.ops.probgen.fused_mlp(torch.zeros(2, density.dim, dtype=torch.int64), *args)
    with pytest.raises(RuntimeError, match=r"u must be \(chains, dim\)"):
        torch.ops.probgen.fused_mlp(torch.zeros(density.dim), *args)
    with pytest.raises(RuntimeError, match="every tensor must be contiguous, on the CPU, of u's dtype"):
        other = torch.float32 if density.dtype == torch.float64 else torch.float64
        torch.ops.probgen.fused_mlp(torch.zeros(2, density.dim, dtype=other), *args)


def test_a_fused_density_unpickled_in_a_fresh_process_loads_its_operator(tmp_path):
    # what a spawned executor's job does with the density it is sent
    model = BNN(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)))
    x, y = _data(model, 9, "vector")
    density = compile_bnn(model, x, y, kernel="fused")
    u = torch.randn(2, density.dim, dtype=density.dtype)
    torch.save({"density": density, "u": u}, tmp_path / "job.pt")
    program = (
        "import torch, sys; job = torch.load(sys.argv[1], weights_only=False); "
        "value, grad = job['density'].value_and_grad(job['u']); torch.save((value, grad), sys.argv[2])"
    )
    subprocess.run([sys.executable, "-c", program, str(tmp_path / "job.pt"), str(tmp_path / "out.pt")], check=True)
    value, grad = torch.load(tmp_path / "out.pt")
    ref_value, ref_grad = density.value_and_grad(u)
    assert torch.equal(value, ref_value) and torch.equal(grad, ref_grad)


def test_a_failed_build_warns_and_leaves_the_mlp_kernel(monkeypatch, tmp_path):
    monkeypatch.setenv("PROBGEN_CACHE_DIR", str(tmp_path))  # nothing built there yet
    monkeypatch.setenv("CXX", "false")  # a "compiler" that fails on every input
    monkeypatch.setattr(_native, "_load", _native._load.__wrapped__)  # not the cached answer of this process
    with pytest.warns(RuntimeWarning, match="could not build its C.. MLP kernel .* runs the 'mlp' kernel instead"):
        assert not _native.available()


class _LaplacePrior(GaussianPrior):
    """Laplace weights: not Gaussian, so only the autograd kernel applies."""

    def distribution(self, name, param):
        return pyro.distributions.Laplace(torch.zeros_like(param), 1.0).to_event(param.dim())
