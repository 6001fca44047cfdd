"""Channel MLP against an independent re-computation on the authors' token view [T*B, N*N, C]."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mlp_spe_reference_ops import bn_train, expected_running_stats, lif, random_spikes, randomize_bn

from spikemlp.layers import ChannelMLP
from spikemlp.neurons import LIF

T, B, C, H = 2, 3, 4, 3


def reference(mlp, x, token_bn: bool):
    """Rearrange 't b c h w -> (t b) (h w) c', Linear, BN, LIF, Linear, BN, and back."""
    tokens = x.permute(0, 1, 3, 4, 2).reshape(T * B, H * H, C)
    bn_dim = 1 if token_bn else -1  # per token: BN1d(N*N) pools (T*B, channels); per channel: pools the rest
    y1 = F.linear(tokens, mlp.fc1.weight, mlp.fc1.bias)
    s = lif(bn_train(y1, mlp.norm1, bn_dim).unflatten(0, (T, B))).flatten(0, 1)
    y2 = F.linear(s, mlp.fc2.weight, mlp.fc2.bias)
    out = bn_train(y2, mlp.norm2, bn_dim)
    return out.reshape(T, B, H, H, C).permute(0, 1, 4, 2, 3), y1, s


@pytest.mark.parametrize("mode", ["token", "channel"])
def test_channel_block_matches_token_view(mode):
    mlp = ChannelMLP(C, H * H, lambda: LIF(backend="reference"), mlp_ratio=3, channel_bn=mode).double()
    randomize_bn(mlp)
    assert mlp.norm1.num_features == (H * H if mode == "token" else 3 * C)
    x = random_spikes(T, B, C, H, H)
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    out = mlp(x)
    ref, y1, s = reference(mlp, x, mode == "token")
    assert 0.05 < s.mean().item() < 0.95
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    # running statistics: per token pools (T*B, channels) of [T*B, N*N, 3C]; per channel pools the rest
    y1 = y1 if mode == "token" else y1.flatten(0, 1)
    mean, var = expected_running_stats(y1, 1, before["norm1.running_mean"], before["norm1.running_var"])
    torch.testing.assert_close(mlp.norm1.running_mean, mean)
    torch.testing.assert_close(mlp.norm1.running_var, var)


def test_per_token_bn_differs_from_per_channel():
    """Guards the mode switch: the same weights give different outputs under the two BN modes."""
    x = random_spikes(T, B, C, H, H)
    a = ChannelMLP(C, H * H, LIF, channel_bn="token").double()
    b = ChannelMLP(C, H * H, LIF, channel_bn="channel").double()
    b.fc1.load_state_dict(a.fc1.state_dict())
    b.fc2.load_state_dict(a.fc2.state_dict())
    assert not torch.allclose(a(x), b(x))


def test_bad_grid_and_mode():
    mlp = ChannelMLP(C, H * H, LIF)
    with pytest.raises(ValueError, match="built for 9 tokens, got a 4x4 grid"):
        mlp(torch.zeros(T, B, C, 4, 4))
    with pytest.raises(ValueError, match="channel_bn must be one of"):
        ChannelMLP(C, H * H, LIF, channel_bn="layer")
