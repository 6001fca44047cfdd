"""verify(): which synaptic layers receive non-binary input, and in which role."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from spikemlp.mfi import NonBinaryLayer, fold, verify
from spikemlp.mfi.verify import summarise


def test_mlp_spe_lists_only_the_encoding_conv_and_the_readout(make_lively):
    model = make_lively()
    found = verify(model, torch.randn(4, 3, 32, 32, dtype=torch.float64))
    assert [(f.name, f.role) for f in found] == [("stem.conv", "encoding"), ("head", "readout")]
    assert found[0].fraction > 0.99  # real pixels
    assert 0 < found[1].fraction <= 1  # grid means of BN(spikes)
    assert isinstance(found[0], NonBinaryLayer) and isinstance(found[0], tuple)


def test_folded_model_is_still_mfi(make_lively):
    folded = fold(make_lively(spe=False))
    found = verify(folded, torch.randn(3, 3, 32, 32, dtype=torch.float64))
    assert [(f.name, f.role) for f in found] == [("stem.conv", "encoding"), ("head", "readout")]


def test_verify_finds_a_planted_non_binary_input(make_lively):
    model = make_lively()
    # Swap the token-block neuron of stage 1 for an identity: the channel block's fc1 then receives the
    # real-valued state h + u instead of spikes.
    model.stages[1].blocks[0].token_lif = nn.Identity()
    found = verify(model, torch.randn(4, 3, 32, 32, dtype=torch.float64))
    roles = {f.name: f.role for f in found}
    assert roles.pop("stem.conv") == "encoding" and roles.pop("head") == "readout"
    assert roles == {"stages.1.blocks.0.channel_mix.fc1": "real-valued"}
    assert next(f for f in found if f.name.endswith("fc1")).fraction > 0.5


def test_snn_mlp_is_reported_non_mfi_with_every_layer():
    model = timm.create_model("snn_mlp_xt_cifar", embed_dim=8, depths=(1, 1, 1, 1)).eval()
    found = verify(model, torch.randn(2, 3, 32, 32))
    synaptic = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [f.name for f in found] == synaptic
    assert found[0].role == "encoding" and found[-1].role == "readout"
    assert {f.role for f in found[1:-1]} == {"real-valued"}
    verdict = summarise(found, len(synaptic))
    assert not verdict["is_mfi"]
    n = len(synaptic)
    assert verdict["summary"] == (
        f"Not multiplication-free: {n - 2} of {n} synaptic layers receive real-valued input (besides "
        f"{found[0].name} (encoding), {found[-1].name} (readout)) and cost MACs."
    )


def test_verify_rejects_bad_images(make_lively):
    with pytest.raises(
        ValueError, match=r"verify expects a batch of images \[B, C, H, W\], got \(3, 32, 32\)"
    ):
        verify(make_lively(), torch.zeros(3, 32, 32))
