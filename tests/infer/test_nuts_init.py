"""fit_nuts(init_params=...): chains start where the user says, on every backend, with clear errors."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import probgen
from probgen.infer._dispatch import as_inference_model
from probgen.infer.mcmc import _initial_values


def two_modes(y):
    # z = +5 and z = -5 explain y = 25 equally; between them z^2 = 0 is about 20 nats worse, so no chain crosses
    z = pyro.sample("z", dist.Normal(0.0, 10.0))
    pyro.sample("obs", dist.Normal(z**2, 4.0), obs=y)


def scale_and_share(y):
    # u's support depends on tau: unconstraining u needs tau's value, not the prototype's
    tau = pyro.sample("tau", dist.HalfNormal(2.0))
    u = pyro.sample("u", dist.Uniform(0.0, tau))
    pyro.sample("obs", dist.Normal(u, 0.5), obs=y)


@pytest.mark.parametrize("backend", ["flat", "pyro"])
def test_each_chain_stays_in_the_mode_it_was_started_in(backend):
    y = torch.tensor(25.0)
    result = probgen.fit_nuts(
        two_modes, y, num_warmup=50, num_samples=50, num_chains=2, num_workers=1, seed=0, backend=backend,
        init_params={"z": torch.tensor([5.0, -5.0])}, progress_bar=False,
    )  # fmt: skip
    z = result.get_samples(group_by_chain=True)["z"]
    assert (z[0] > 0).all() and (z[1] < 0).all()
    torch.testing.assert_close(z[0].mean(), torch.tensor(5.0), atol=0.5, rtol=0)


def _density(model, *args):
    spec = as_inference_model(model)
    data = spec.bind(args, None, fit=True)
    return spec, data, spec.flat_density(data)


def test_a_start_round_trips_even_where_a_support_depends_on_another_site():
    spec, data, density = _density(scale_and_share, torch.tensor(0.7))
    values = _initial_values({"tau": torch.tensor([2.0, 0.5]), "u": torch.tensor([1.5, 0.1])},
                             spec.latent_shapes(data), 2, torch.device("cpu"))  # fmt: skip
    fallback = density.init_positions(2, torch.Generator().manual_seed(0))
    start = density.start_from(values, fallback)
    back = density.unpack(start)
    torch.testing.assert_close(back["tau"], torch.tensor([2.0, 0.5]))
    torch.testing.assert_close(back["u"], torch.tensor([1.5, 0.1]))


def test_sites_left_out_keep_the_default_start():
    spec, data, density = _density(scale_and_share, torch.tensor(0.7))
    fallback = density.init_positions(3, torch.Generator().manual_seed(1))
    default = density.unpack(fallback)
    values = _initial_values({"tau": torch.tensor(3.0)}, spec.latent_shapes(data), 3, torch.device("cpu"))
    back = density.unpack(density.start_from(values, fallback))
    torch.testing.assert_close(back["tau"], torch.full((3,), 3.0))
    # u keeps its default value where it is inside the new support (0, 3); its default tau was below 3 or not
    inside = default["u"] < 3.0
    torch.testing.assert_close(back["u"][inside], default["u"][inside])


def _bnn():
    torch.manual_seed(0)
    return probgen.BNN(nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 1)))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # a short run: the sampler's notes on tree depth are not tested here
def test_a_fits_draws_start_the_chains():
    model = _bnn()
    x = torch.randn(40, 2)
    y = x[:, 0] - 0.5 * x[:, 1] + 0.1 * torch.randn(40)
    svi = probgen.fit_svi(model, x, y, num_steps=200, num_samples=9, seed=0, progress_bar=False)
    spec, data, density = _density(model, x, y)
    values = _initial_values(svi, spec.latent_shapes(data), 3, torch.device("cpu"))
    draws = svi.get_samples()
    assert set(values) == set(spec.latent_shapes(data))
    for name, value in values.items():
        torch.testing.assert_close(value, draws[name][torch.tensor([0, 4, 8])])  # evenly spaced over 9 draws
    start = density.start_from(values, density.init_positions(3, torch.Generator().manual_seed(0)))
    for name, value in density.unpack(start).items():
        torch.testing.assert_close(value, values[name], rtol=1e-5, atol=1e-6)
    result = probgen.fit_nuts(model, x, y, num_warmup=100, num_samples=10, num_chains=3, num_workers=1, seed=0,
                              init_params=svi, progress_bar=False)  # fmt: skip
    assert all(torch.isfinite(v).all() for v in result.get_samples().values())


def test_bad_starts_are_named():
    y = torch.tensor(0.7)
    options = dict(num_warmup=2, num_samples=2, num_chains=2, num_workers=1, seed=0, progress_bar=False)
    with pytest.raises(ValueError, match="init_params names 'sigma'.*latent sites are 'tau', 'u'"):
        probgen.fit_nuts(scale_and_share, y, init_params={"sigma": torch.tensor(1.0)}, **options)
    with pytest.raises(ValueError, match=r"init_params\['tau'\] has shape \(3,\); expected \(\) .*\(2,\)"):
        probgen.fit_nuts(scale_and_share, y, init_params={"tau": torch.ones(3)}, **options)
    with pytest.raises(TypeError, match=r"init_params\['tau'\] must hold floats"):
        probgen.fit_nuts(scale_and_share, y, init_params={"tau": torch.tensor(1)}, **options)
    with pytest.raises(ValueError, match=r"init_params\['tau'\] is not finite"):
        probgen.fit_nuts(scale_and_share, y, init_params={"tau": torch.tensor(float("nan"))}, **options)
    with pytest.raises(ValueError, match=r"init_params\['tau'\] for chain 1 is outside the site's support"):
        probgen.fit_nuts(scale_and_share, y, init_params={"tau": torch.tensor([1.0, -1.0])}, **options)
    with pytest.raises(TypeError, match="init_params must be a dict"):
        probgen.fit_nuts(scale_and_share, y, init_params=[1.0, 2.0], **options)
