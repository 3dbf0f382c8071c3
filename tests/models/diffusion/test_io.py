"""Tests for probgen/models/diffusion/io.py: chains survive save and load; other files are refused by name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from probgen.models.diffusion import (
    PREDICTIONS,
    VARIANCES,
    ConvDenoiser,
    DiffusionChain,
    DiscretizedGaussianDecoder,
    GaussianDecoder,
    MLPDenoiser,
    get_schedule,
    load_chain,
    save_chain,
)
from probgen.models.diffusion.decoders import Decoder
from tests.models.diffusion._oracle import GaussianOracle


def _same_chain(a: DiffusionChain, b: DiffusionChain) -> None:
    assert type(a.net) is type(b.net) and a.net is not b.net
    for (name, value), (other_name, other) in zip(a.net.state_dict().items(), b.net.state_dict().items()):
        assert name == other_name and value.dtype == other.dtype and torch.equal(value, other)
    assert torch.equal(a.schedule.betas, b.schedule.betas) and a.schedule.betas.dtype == torch.float64
    torch.testing.assert_close(a.schedule.posterior_mean_coef1, b.schedule.posterior_mean_coef1, rtol=0, atol=0)
    assert (a.event_shape, a.variance, a.prediction) == (b.event_shape, b.variance, b.prediction)
    assert repr(a.decoder) == repr(b.decoder)
    assert not b.net.training


@pytest.mark.parametrize("variance", VARIANCES)
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_a_vector_chain_survives_save_and_load(variance, prediction, tmp_path):
    net = MLPDenoiser(3, hidden_dim=8, num_blocks=2, time_dim=6).float()  # float32 weights stay float32
    chain = DiffusionChain(net, get_schedule("log_snr", 7), event_shape=(3,), variance=variance, prediction=prediction)
    save_chain(chain, tmp_path / "chain.pt")
    again = load_chain(tmp_path / "chain.pt")
    _same_chain(chain, again)
    assert again.net.get_config() == {"data_dim": 3, "hidden_dim": 8, "num_blocks": 2, "time_dim": 6}
    x = torch.randn(4, 3, dtype=torch.float32)
    chain.net.eval()
    torch.testing.assert_close(again.p_mean_variance(x, 3).mean, chain.p_mean_variance(x, 3).mean, rtol=0, atol=0)
    assert not (tmp_path / "chain.pt.tmp").exists()


def test_an_image_chain_with_a_discretised_decoder_survives_save_and_load(tmp_path):
    net = ConvDenoiser(1, hidden_channels=8, num_blocks=1, time_dim=4)
    decoder = DiscretizedGaussianDecoder(17, low=-2.0, high=2.0)
    chain = DiffusionChain(net, get_schedule("cosine", 5), event_shape=(1, 4, 4), decoder=decoder)
    save_chain(chain, tmp_path / "digits.pt")
    again = load_chain(tmp_path / "digits.pt")
    _same_chain(chain, again)
    assert isinstance(again.decoder, DiscretizedGaussianDecoder) and again.decoder.get_config() == decoder.get_config()


class _Cauchy(Decoder):
    def distribution(self, loc, scale):
        return torch.distributions.Cauchy(loc, scale)


def test_a_network_or_decoder_of_the_users_own_class_is_passed_again(tmp_path):
    sched = get_schedule("linear", 4)
    chain = DiffusionChain(GaussianOracle(sched, 0.5, scale=0.7), sched, event_shape=(2,), decoder=_Cauchy())
    save_chain(chain, tmp_path / "own.pt")
    with pytest.raises(ValueError, match=r"a net of the user's own class.*pass the same architecture as net=\.\.\."):
        load_chain(tmp_path / "own.pt")
    with pytest.raises(ValueError, match=r"a decoder of the user's own class.*decoder=\.\.\."):
        load_chain(tmp_path / "own.pt", net=GaussianOracle(sched, 0.5))
    template = GaussianOracle(sched, 0.5)  # its weights do not matter and it is not changed
    again = load_chain(tmp_path / "own.pt", net=template, decoder=_Cauchy())
    assert float(again.net.scale.detach()) == pytest.approx(0.7) and float(template.scale.detach()) == 1.0
    with pytest.raises(RuntimeError, match="state_dict"):
        load_chain(tmp_path / "own.pt", net=nn.Linear(2, 2), decoder=_Cauchy())


def test_loading_a_chain_refuses_other_files_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_chain(tmp_path / "missing.pt")
    old = tmp_path / "model.pt"  # what 'probgen diffusion fit' wrote before chains had a format
    torch.save({"format": "probgen.diffusion/1", "config": {}, "net_state": {}}, old)
    with pytest.raises(ValueError, match="saved by 'probgen diffusion fit' before chains had a file format"):
        load_chain(old)
    pickled = tmp_path / "pickled.pt"
    torch.save(GaussianDecoder(), pickled)
    with pytest.raises(ValueError, match=r"is not a diffusion chain saved by probgen: torch.load\(weights_only=True\)"):
        load_chain(pickled)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="it has no probgen format"):
        load_chain(other)
    newer = tmp_path / "newer.pt"
    torch.save({"format": "probgen.diffusion_chain", "version": 3}, newer)
    with pytest.raises(ValueError, match="version 3 of its format.*newer than this probgen reads"):
        load_chain(newer)
    with pytest.raises(TypeError, match="chain must be a DiffusionChain"):
        save_chain(nn.Linear(2, 2), tmp_path / "x.pt")  # type: ignore[arg-type]


def test_a_reloaded_chain_draws_bit_identical_samples(tmp_path):
    from probgen.infer.diffusion import sample_ancestral, sample_ddim

    net = MLPDenoiser(2, hidden_dim=8, num_blocks=1).float()
    chain = DiffusionChain(net.eval(), get_schedule("linear", 6), event_shape=(2,))
    save_chain(chain, tmp_path / "chain.pt")
    again = load_chain(tmp_path / "chain.pt")
    for sample in (sample_ancestral, sample_ddim):
        a, b = sample(chain, num_samples=20, seed=11), sample(again, num_samples=20, seed=11)
        assert a.samples.dtype == torch.float32 and torch.equal(a.samples, b.samples)
