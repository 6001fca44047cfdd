"""Exact synaptic-operation counts: hand-computed fan-outs for convs (padding, stride, groups, dilation,
reflect padding), linear layers and MLP-SPE's axial projection, and the recorder's per-step bookkeeping."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from spikemlp.analysis import ActivityRecorder, count_sops, fan_out
from spikemlp.analysis.macs import layer_macs
from spikemlp.analysis.recording import split_steps
from spikemlp.analysis.sops import synaptic_macs
from spikemlp.layers import AxialProjection
from spikemlp.neurons import LIF


def test_conv_with_padding_and_stride_by_hand():
    # 3x3 conv, stride 2, padding 1 on 4x4 -> 2x2 outputs. Output row o reads input rows 2o-1..2o+1, so
    # input rows 0..3 are read by 1, 2, 1, 1 output rows (columns alike); 2 output channels.
    conv = nn.Conv2d(1, 2, 3, stride=2, padding=1, bias=False)
    x = torch.zeros(1, 1, 4, 4)
    for h, w in [(0, 0), (1, 1), (3, 2)]:
        x[0, 0, h, w] = 1.0
    # (0,0): 1*1*2 = 2; (1,1): 2*2*2 = 8; (3,2): 1*1*2 = 2
    assert count_sops(conv, x) == 12
    # The usual estimate rate x MACs overcounts here: 3/16 x (2*2*2 outputs x 9 taps) = 13.5.
    assert layer_macs(conv, x, conv(x)) == 72
    expected_map = torch.tensor([1.0, 2.0, 1.0, 1.0])
    torch.testing.assert_close(
        fan_out(conv, (1, 4, 4))[0], 2 * torch.outer(expected_map, expected_map).double()
    )


def test_grouped_conv_by_hand():
    # 3x3, padding 1, stride 1 on 3x3: rows are read by 2, 3, 2 outputs; groups=2 -> each input channel
    # reaches out_channels / groups = 2 output channels.
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=2, bias=False)
    x = torch.zeros(1, 4, 3, 3)
    x[0, 3, 1, 1] = 1.0  # centre: 3 * 3 * 2 = 18
    x[0, 0, 0, 0] = 1.0  # corner: 2 * 2 * 2 = 8
    assert count_sops(conv, x) == 26


def test_dilated_conv1d_by_hand():
    # kernel 3, dilation 2, padding 2 on length 5: output o reads o-2, o, o+2, so inputs 0..4 are read by
    # 2, 2, 3, 2, 2 outputs.
    conv = nn.Conv1d(1, 1, 3, padding=2, dilation=2, bias=False)
    assert count_sops(conv, torch.ones(1, 1, 5)) == 11
    assert count_sops(conv, torch.tensor([[[0.0, 0.0, 1.0, 0.0, 0.0]]])) == 3


def test_reflect_padding_counts_every_copy():
    # Reflect padding 1 on length 4 pads to [x1, x0, x1, x2, x3, x2]: x1 is multiplied twice in output 0
    # and once in outputs 1 and 2, so one spike at x1 costs 4 accumulations.
    conv = nn.Conv1d(1, 1, 3, padding=1, padding_mode="reflect", bias=False)
    assert count_sops(conv, torch.tensor([[[0.0, 1.0, 0.0, 0.0]]])) == 4
    assert count_sops(conv, torch.ones(1, 1, 4)) == 12  # 4 outputs x 3 taps


def _brute_force_conv2d_sops(conv: nn.Conv2d, x: torch.Tensor) -> int:
    """Walk every output position and kernel tap, and count each nonzero input it reads (zero padding)."""
    n, c, height, width = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    ho = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    per_channel_out = conv.out_channels // conv.groups
    total = 0
    for oh, ow, i, j in itertools.product(range(ho), range(wo), range(kh), range(kw)):
        ih, iw = oh * sh - ph + i * dh, ow * sw - pw + j * dw
        if 0 <= ih < height and 0 <= iw < width:
            total += int((x[:, :, ih, iw] != 0).sum()) * per_channel_out
    return total


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=(3, 2), stride=(1, 2), padding=(2, 0)),
        dict(kernel_size=3, stride=1, padding=2, dilation=2),
        dict(kernel_size=2, stride=2, padding=0),
        dict(kernel_size=4, stride=3, padding=1, groups=2),
    ],
)
def test_conv2d_sops_match_a_brute_force_walk(kwargs):
    conv = nn.Conv2d(4, 6, bias=False, **kwargs)
    x = (torch.rand(3, 4, 7, 9) < 0.3).float()
    assert count_sops(conv, x) == _brute_force_conv2d_sops(conv, x)


def test_linear_by_hand():
    fc = nn.Linear(5, 3)
    x = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    assert count_sops(fc, x) == 3 * 3  # three spikes, each reaching the three outputs
    tokens = torch.zeros(2, 4, 5)  # [B, tokens, C] layout
    tokens[1, 2, 4] = 1.0
    assert count_sops(fc, tokens) == 3


@pytest.mark.parametrize("axis", ["w", "h"])
def test_axial_projection_by_hand(axis):
    # N = 4 positions along one axis: a spike reaches the 4 outputs of its row (W) or column (H),
    # whatever its channel and position; dense MACs are (output elements) x N.
    proj = AxialProjection(4, axis)
    x = torch.zeros(1, 2, 4, 4)
    x[0, 0, 0, 0] = x[0, 1, 3, 2] = x[0, 1, 2, 2] = 1.0
    assert count_sops(proj, x) == 3 * 4
    out = proj(x)
    assert synaptic_macs(proj, x, out) == 2 * 4 * 4 * 4
    # Cross-check the fan-out by its definition: switch one input on, count the outputs that change.
    one = torch.zeros_like(x)
    one[0, 1, 2, 1] = 1.0
    assert int((proj(one) != proj(torch.zeros_like(x))).sum()) == 4


def test_split_steps_layouts_and_error():
    x = torch.arange(2 * 3 * 5).reshape(6, 5)
    assert split_steps(x, T=2, B=3).shape == (2, 3, 5)  # [T*B, ...], T outer
    assert split_steps(torch.zeros(2, 3, 5), T=2, B=3).shape == (2, 3, 5)  # [T, B, ...]
    assert split_steps(torch.zeros(3, 5), T=2, B=3).shape == (1, 3, 5)  # once for all steps
    with pytest.raises(ValueError, match=r"cannot tell time steps from batch .*\(7, 5\) \(T=2, batch=3\)"):
        split_steps(torch.zeros(7, 5), T=2, B=3)


class _ToySNN(nn.Module):
    """Direct encoding over T = 2 steps, a LIF, then a 3x3/2 conv on the merged [T*B, ...] spikes."""

    T = 2

    def __init__(self):
        super().__init__()
        self.lif = LIF()
        self.conv = nn.Conv2d(1, 2, 3, stride=2, padding=1, bias=False)

    def forward(self, images):
        spikes = self.lif(images.unsqueeze(0).expand(self.T, *images.shape))
        return self.conv(spikes.flatten(0, 1)).mean(dim=(1, 2, 3))


def test_recorder_counts_per_step_by_hand():
    # LIF (tau 2, V_th 1) with a constant input c: h0 = c/2 fires iff c >= 2; without a spike at t0,
    # h1 = c/2 + (c - c/2)/2 = 3c/4. So c = 4 fires at t0 and t1, c = 1.5 only at t1, c = 0 never.
    img = torch.zeros(2, 1, 4, 4)  # image 1 is blank
    img[0, 0, 0, 0] = 4.0
    img[0, 0, 1, 1] = img[0, 0, 3, 2] = 1.5
    model = _ToySNN()
    with ActivityRecorder(model, T=2) as rec:
        with rec.batch(2, img):
            model(img)
    conv = rec.synaptic["conv"]
    # t0: the spike at (0,0) reaches 1*1*2 outputs; t1: (0,0), (1,1), (3,2) reach 2 + 8 + 2 (see above).
    assert conv.sops_per_step == [2, 12]
    assert conv.nonzero_per_step == [1, 3]
    assert conv.numel_per_step == [32, 32]
    assert conv.nonbinary == 0 and conv.source_neuron == "lif"
    assert conv.dense_macs == 2 * 2 * (2 * 2 * 2 * 9)  # T*B calls' outputs x 9 taps
    lif = rec.neurons["lif"]
    assert lif.spikes_per_step == [1, 3] and lif.numel_per_step == [32, 32]
    assert lif.neurons_per_image == 16
    assert lif.raster.shape == (2, 16) and int(lif.raster.sum()) == 4  # image 0: 1 + 3 spikes
