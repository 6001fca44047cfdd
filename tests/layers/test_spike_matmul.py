"""The spike-driven product against dense products: float64 references, and bit for bit where sums are exact.

Layouts (NCHW planes or token rows, in and out), concatenations read as segments, the inference BatchNorm
epilogues, the two ways the kernel walks the weights (sparse rows: whole lists; dense rows: chunks of
input channels), non-binary inputs, and the checks on bad arguments.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikemlp.layers import spike_matmul as sm


@pytest.fixture(autouse=True)
def _kernel_built():
    reason = sm.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


def spikes(*shape, p=0.3, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=g) < p).to(dtype)


def dense_reference(planes, weight, bias, col=None, row=None):
    """float64 x @ W^T + b, then the affines, on planes [M, K, P] -> [M, D, P]."""
    y = torch.einsum("mkp,dk->mdp", planes.double(), weight.double().reshape(weight.shape[0], -1))
    if bias is not None:
        y = y + bias.double()[:, None]
    if col is not None:
        y = y * col[0].double()[:, None] + col[1].double()[:, None]
    if row is not None:
        y = y * row[0].double() + row[1].double()
    return y


def run(planes, weight, bias, planar_in, planar_out, **affines):
    x = planes if planar_in else planes.transpose(1, 2).contiguous()
    y = sm.spike_matmul([x], weight, bias, sm.PackedWeight(), planar_in, planar_out, **affines)
    return y if planar_out else y.transpose(1, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("planar_in", [True, False])
@pytest.mark.parametrize("planar_out", [True, False])
@pytest.mark.parametrize(
    ("K", "D", "P", "p"),
    [(7, 5, 3, 0.3), (78, 234, 37, 0.3), (234, 78, 70, 0.1), (300, 40, 130, 0.6), (40, 1000, 17, 0.5)],
)
def test_matches_float64_product(dtype, planar_in, planar_out, K, D, P, p):
    # Shapes cover D not a multiple of 16 (padded columns), P across several blocks of 16 and 64
    # pixels with a remainder, sparse rows (whole lists) and dense rows with K above one chunk.
    g = torch.Generator().manual_seed(K + D)
    planes = spikes(3, K, P, p=p, dtype=dtype, seed=K)
    weight, bias = torch.randn(D, K, generator=g, dtype=dtype), torch.randn(D, generator=g, dtype=dtype)
    got = run(planes, weight, bias, planar_in, planar_out)
    want = dense_reference(planes, weight, bias)
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(got.double(), want, rtol=0, atol=tol * max(1.0, K**0.5))
    assert got.dtype == dtype and got.shape == (3, D, P)


@pytest.mark.parametrize("p", [0.05, 0.9])  # the whole-list walk and the chunked walk
def test_exact_sums_are_bit_identical_to_linear(p):
    # Integer weights: every partial sum is exact in float32, so any summation order gives the same bits.
    g = torch.Generator().manual_seed(1)
    planes = spikes(2, 600, 64, p=p, seed=2)
    weight = torch.randint(-50, 50, (90, 600), generator=g).float()
    bias = torch.randint(-50, 50, (90,), generator=g).float()
    want = F.linear(planes.transpose(1, 2), weight, bias).transpose(1, 2)
    for planar_in in (True, False):
        for planar_out in (True, False):
            assert torch.equal(run(planes, weight, bias, planar_in, planar_out), want)


def test_rows_and_planes_give_the_same_values():
    # Both input layouts list the active inputs in the order of k, so the float32 sums are the same.
    g = torch.Generator().manual_seed(3)
    planes = spikes(4, 130, 50, p=0.4, seed=4)
    weight, bias = torch.randn(70, 130, generator=g), torch.randn(70, generator=g)
    results = [run(planes, weight, bias, i, o) for i in (True, False) for o in (True, False)]
    assert all(torch.equal(results[0], r) for r in results[1:])


def test_segments_are_the_concatenation():
    g = torch.Generator().manual_seed(5)
    parts = [spikes(3, c, 40, seed=10 + c) for c in (5, 9, 4)]
    weight, bias = torch.randn(11, 18, 1, 1, generator=g), None
    got = sm.spike_matmul(parts, weight, bias, sm.PackedWeight(), planar_in=True, planar_out=True)
    want = dense_reference(torch.cat(parts, 1), weight, bias)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5)
    # A segment laid out differently (a strided view) is read correctly too.
    odd = spikes(3, 40, 9, seed=20).transpose(1, 2)  # [3, 9, 40], position stride 9
    got = sm.spike_matmul([parts[0], odd, parts[2]], weight, bias, sm.PackedWeight(), True, True)
    want = dense_reference(torch.cat([parts[0], odd, parts[2]], 1), weight, bias)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5)
    # Token rows [M, P, K_s] of different widths.
    rows = [part.transpose(1, 2).contiguous() for part in parts]
    got = sm.spike_matmul(rows, weight, bias, sm.PackedWeight(), planar_in=False, planar_out=True)
    want = dense_reference(torch.cat(parts, 1), weight, bias)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5)


def test_epilogues_are_inference_batch_norm():
    g = torch.Generator().manual_seed(6)
    planes = spikes(2, 30, 25, seed=7, dtype=torch.float64)
    weight, bias = torch.randn(12, 30, generator=g, dtype=torch.float64), torch.randn(12, dtype=torch.float64)
    per_channel, per_position = nn.BatchNorm1d(12).double().eval(), nn.BatchNorm1d(25).double().eval()
    for bn in (per_channel, per_position):
        with torch.no_grad():
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.normal_()
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
    rows = F.linear(planes.transpose(1, 2), weight, bias)  # [M, P, D]: positions in BN1d's channel slot
    want = per_position(per_channel(rows.transpose(1, 2)).transpose(1, 2))
    got = run(
        planes, weight, bias, True, False,
        col_affine=sm.inference_affine(per_channel), row_affine=sm.inference_affine(per_position),
    )  # fmt: skip
    torch.testing.assert_close(got.transpose(1, 2), want, rtol=0, atol=1e-12)
    assert sm.inference_affine(per_channel.train()) is None  # batch statistics: no fixed affine map


def test_non_binary_inputs_are_multiplied():
    g = torch.Generator().manual_seed(8)
    planes = spikes(2, 40, 33, seed=9) * torch.randint(0, 3, (2, 40, 33), generator=g).float()
    planes[0, 3, 5] = 0.5
    weight, bias = torch.randn(20, 40, generator=g), torch.randn(20, generator=g)
    for planar_in in (True, False):
        got = run(planes, weight, bias, planar_in, True)
        torch.testing.assert_close(got.double(), dense_reference(planes, weight, bias), rtol=0, atol=1e-4)


def test_packed_weight_follows_in_place_updates():
    layer = nn.Linear(20, 10)
    packed = sm.PackedWeight()
    x = spikes(5, 20)
    torch.testing.assert_close(sm.spike_linear(x, layer, packed), layer(x).detach())
    with torch.no_grad():
        layer.weight.mul_(-2.0)  # as an optimiser step does
        layer.bias.add_(1.0)
    torch.testing.assert_close(sm.spike_linear(x, layer, packed), layer(x).detach())
    layer.weight = nn.Parameter(torch.randn(10, 20))  # a new tensor (it may reuse the freed storage)
    torch.testing.assert_close(sm.spike_linear(x, layer, packed), layer(x).detach())
    layer.double()  # new storage, new dtype
    torch.testing.assert_close(sm.spike_linear(x.double(), layer, packed), layer(x.double()).detach())
    copied = copy.deepcopy(layer)
    with torch.no_grad():
        copied.weight.zero_()
    torch.testing.assert_close(sm.spike_linear(x.double(), copied, packed), copied(x.double()).detach())


def test_conv1x1_and_linear_helpers():
    conv = nn.Conv2d(12, 7, 1)
    x = spikes(2, 12, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(sm.spike_conv1x1(x, conv, sm.PackedWeight()), conv(x), rtol=0, atol=1e-5)
        lin = nn.Linear(12, 7)
        rows = spikes(3, 4, 12)
        got = sm.spike_linear(rows, lin, sm.PackedWeight())
        torch.testing.assert_close(got, lin(rows), rtol=0, atol=1e-5)


def test_applies_only_where_no_gradient_is_wanted():
    layer = nn.Linear(4, 3)
    x = spikes(2, 4)
    assert not sm.applies([layer], x)  # grad mode, trainable weights: autograd must see the layer
    with torch.no_grad():
        assert sm.applies([layer], x)
        assert not sm.applies([layer], x.half())
        handle = layer.register_forward_hook(lambda *a: None)
        assert not sm.applies([layer], x)  # observed layers run as themselves
        handle.remove()
    layer.requires_grad_(False)
    assert sm.applies([layer], x)


def test_bad_arguments_are_named():
    w = torch.randn(3, 8)
    with pytest.raises(ValueError, match="1 to 3 input segments"):
        sm.spike_matmul([], w, None, sm.PackedWeight(), True, True)
    with pytest.raises(ValueError, match="the input has 6 channels, the weight expects 8"):
        sm.spike_matmul([spikes(2, 6, 5)], w, None, sm.PackedWeight(), True, True)
    with pytest.raises(ValueError, match="must share"):
        sm.spike_matmul([spikes(2, 4, 5), spikes(2, 4, 6)], w, None, sm.PackedWeight(), True, True)


# --- grouped sums (a table of 16 sums per four inputs) --------------------------------------------------


def test_grouped_sums_table():
    wt = torch.randn(6, 16, dtype=torch.float64)  # K = 6: two groups, the second padded with zero rows
    table = sm.grouped_sums(wt)
    assert table.shape == (2 * 16, 16)
    padded = torch.cat([wt, torch.zeros(2, 16, dtype=torch.float64)])
    for g in range(2):
        for c in range(16):
            want = torch.zeros(16, dtype=torch.float64)
            for b in range(4):  # from the lowest bit up, the order the kernel's other walks add in
                if c >> b & 1:
                    want = want + padded[4 * g + b]
            assert torch.equal(table[16 * g + c], want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("planar_in", "planar_out"), [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("p", [0.05, 0.5])  # rows below and above the table's density threshold
def test_grouped_matches_float64_product(dtype, planar_in, planar_out, p):
    g = torch.Generator().manual_seed(11)
    K, D, P = 103, 70, 45  # K not a multiple of 4: the last group has padding inputs
    planes = spikes(3, K, P, p=p, dtype=dtype, seed=3)
    weight, bias = torch.randn(D, K, generator=g, dtype=dtype), torch.randn(D, generator=g, dtype=dtype)
    x = planes if planar_in else planes.transpose(1, 2).contiguous()
    got = sm.spike_matmul([x], weight, bias, sm.PackedWeight(), planar_in, planar_out, grouped=True)
    got = got if planar_out else got.transpose(1, 2)
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(got.double(), dense_reference(planes, weight, bias), rtol=0, atol=tol * K**0.5)


def test_grouped_is_exact_on_exact_sums_and_the_same_in_every_layout():
    g = torch.Generator().manual_seed(12)
    planes = spikes(2, 90, 70, p=0.5, seed=5)
    planes[1, :, :20] = spikes(1, 90, 20, p=0.05, seed=6)[0]  # some sparse rows among the dense ones
    weight = torch.randint(-8, 9, (30, 90), generator=g).float()
    bias = torch.randint(-8, 9, (30,), generator=g).float()
    rows = planes.transpose(1, 2).contiguous()
    packed = sm.PackedWeight()
    got = {
        (pin, pout): sm.spike_matmul([planes if pin else rows], weight, bias, packed, pin, pout, grouped=True)
        for pin in (True, False) for pout in (True, False)
    }  # fmt: skip
    want = F.linear(rows, weight, bias)
    for (pin, pout), y in got.items():
        assert torch.equal(y if not pout else y.transpose(1, 2), want), (pin, pout)
    assert packed.table is not None and packed.table.shape == (23 * 16, 32)


# --- the neuron in the epilogue, and uint8 spikes -----------------------------------------------------------

NEURONS = [
    {},  # MLP-SPE's: tau 2, decay input, hard reset to 0
    {"v_reset": None},  # soft reset
    {"decay_input": False, "tau": 3.0, "v_threshold": 0.7},  # the other charge, 1/tau not exact
]


LAYOUTS = [(True, False, 4), (False, True, 2), (True, True, 1)]  # (planar in, planar out, T)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("neuron", NEURONS, ids=["hard", "soft", "no_decay"])
@pytest.mark.parametrize(("planar_in", "planar_out", "T"), LAYOUTS)
def test_fused_neuron_gives_the_layers_spikes(dtype, neuron, planar_in, planar_out, T):
    from spikemlp.neurons import LIF

    g = torch.Generator().manual_seed(13)
    B, K, D, P = 3, 70, 90, 80  # P: one full block of 64 positions and a remainder
    planes = spikes(T * B, K, P, p=0.3, dtype=dtype, seed=7)
    x = planes if planar_in else planes.transpose(1, 2).contiguous()
    weight = torch.randn(D, K, generator=g, dtype=dtype) * 0.4
    bias = torch.randn(D, generator=g, dtype=dtype) * 0.3
    row = (torch.rand(P, generator=g, dtype=dtype) + 0.5, torch.randn(P, generator=g, dtype=dtype) * 0.2)
    lif = LIF(**neuron)
    for grouped in (False, True):
        y = sm.spike_matmul([x], weight, bias, sm.PackedWeight(), planar_in, planar_out, row_affine=row,
                            grouped=grouped)  # fmt: skip
        want = lif(y.unflatten(0, (T, B))).flatten(0, 1)
        got = sm.spike_matmul([x], weight, bias, sm.PackedWeight(), planar_in, planar_out, row_affine=row,
                              grouped=grouped, neuron=(T, lif))  # fmt: skip
        assert got.dtype == torch.uint8 and got.shape == want.shape
        assert torch.equal(got.to(dtype), want)  # bit for bit: the same charge arithmetic as the layer
        assert 0.05 < want.mean() < 0.6  # the neurons fire: the check is not vacuous


@pytest.mark.parametrize("K", [40, 200])  # below and above one 64-input load
def test_uint8_spikes_as_input(K):
    g = torch.Generator().manual_seed(14)
    rows = spikes(2, 33, K, p=0.2, seed=8)
    rows[1, 4, K - 1] = 2.0  # a non-binary input is multiplied, as in float
    weight, bias = torch.randn(25, K, generator=g), torch.randn(25, generator=g)
    for planar_out in (True, False):
        want = sm.spike_matmul([rows], weight, bias, sm.PackedWeight(), False, planar_out)
        got = sm.spike_matmul([rows.to(torch.uint8)], weight, bias, sm.PackedWeight(), False, planar_out,
                              dtype=torch.float32)  # fmt: skip
        assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("planar_in", "planar_out", "T"), LAYOUTS)
def test_residual_and_kept_values_are_the_sum_the_neuron_sees(dtype, planar_in, planar_out, T):
    """addend joins after the affines (y = affine(x W^T + b) + addend, as MLP-SPE's skip h + u), the
    neuron charges on that sum, and keep_values returns it: the same bits as the three steps apart."""
    from spikemlp.neurons import LIF

    g = torch.Generator().manual_seed(15)
    B, K, D, P = 2, 50, 40, 70
    planes = spikes(T * B, K, P, p=0.25, dtype=dtype, seed=9)
    x = planes if planar_in else planes.transpose(1, 2).contiguous()
    weight = torch.randn(D, K, generator=g, dtype=dtype) * 0.4
    bias = torch.randn(D, generator=g, dtype=dtype) * 0.3
    col = (torch.rand(D, generator=g, dtype=dtype) + 0.5, torch.randn(D, generator=g, dtype=dtype) * 0.2)
    y = sm.spike_matmul([x], weight, bias, sm.PackedWeight(), planar_in, planar_out, col_affine=col)
    addend = torch.randn(y.shape, generator=g, dtype=dtype) * 0.5 + 0.4
    lif = LIF()
    got = sm.spike_matmul([x], weight, bias, sm.PackedWeight(), planar_in, planar_out, col_affine=col,
                          addend=addend)  # fmt: skip
    assert torch.equal(got, y + addend)
    spikes_out, values = sm.spike_matmul(
        [x], weight, bias, sm.PackedWeight(), planar_in, planar_out, col_affine=col, addend=addend,
        neuron=(T, lif), keep_values=True,
    )  # fmt: skip
    assert torch.equal(values, y + addend)
    want = lif((y + addend).unflatten(0, (T, B))).flatten(0, 1)
    assert torch.equal(spikes_out.to(dtype), want) and 0.05 < want.mean() < 0.7
    # uint8 spikes in as planes or rows give the same bits as float spikes.
    u8 = sm.spike_matmul([x.to(torch.uint8)], weight, bias, sm.PackedWeight(), planar_in, planar_out,
                         col_affine=col, addend=addend, dtype=dtype)  # fmt: skip
    assert torch.equal(u8, y + addend)


def test_residual_and_kept_values_are_checked():
    x = spikes(2, 8, 5)
    w = torch.randn(3, 8)
    with pytest.raises(ValueError, match="addend must be a torch.float32 CPU tensor of the output's shape"):
        sm.spike_matmul([x], w, None, sm.PackedWeight(), True, True, addend=torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="keep_values returns the neuron's inputs; it needs neuron="):
        sm.spike_matmul([x], w, None, sm.PackedWeight(), True, True, keep_values=True)


def test_fused_neuron_refuses_what_it_cannot_run():
    from spikemlp.neurons import IF, LIF

    assert sm.fused_neuron(LIF()) is not None
    assert sm.fused_neuron(LIF(learnable_tau=True)) is None
    assert sm.fused_neuron(LIF(return_membrane=True)) is None
    assert sm.fused_neuron(IF()) is None
    watched = LIF()
    watched.register_forward_hook(lambda *a: None)  # an analysis hook: the layer must run as itself
    assert sm.fused_neuron(watched) is None
    w = torch.randn(3, 8)
    with pytest.raises(ValueError, match="cannot fuse IF"):
        sm.spike_matmul([spikes(2, 8, 5)], w, None, sm.PackedWeight(), True, True, neuron=(2, IF()))
    with pytest.raises(ValueError, match="3 images are not T = 2 steps"):
        sm.spike_matmul([spikes(3, 8, 5)], w, None, sm.PackedWeight(), True, True, neuron=(2, LIF()))
    with pytest.raises(ValueError, match="pass dtype="):
        sm.spike_matmul([spikes(2, 8, 5).to(torch.uint8)], w, None, sm.PackedWeight(), True, True)
    with pytest.raises(ValueError, match="pass dtype="):
        sm.spike_matmul([spikes(2, 8, 5)], w, None, sm.PackedWeight(), True, True, dtype=torch.float64)


def test_threads_give_the_same_bits():
    # Blocks split over threads (each with its own membranes for the fused neuron): same results.
    from spikemlp.neurons import LIF

    g = torch.Generator().manual_seed(16)
    T, B, K, D, P = 2, 4, 96, 130, 150
    planes = spikes(T * B, K, P, p=0.4, seed=10)
    weight, bias = torch.randn(D, K, generator=g), torch.randn(D, generator=g)
    threads = torch.get_num_threads()
    got = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            packed = sm.PackedWeight()
            y = sm.spike_matmul([planes], weight, bias, packed, True, True, grouped=True)
            s = sm.spike_matmul([planes], weight, bias, packed, True, False, grouped=True, neuron=(T, LIF()))
            got.append((y, s))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(got[0][0], got[1][0]) and torch.equal(got[0][1], got[1][1])
    assert 0.05 < got[0][1].float().mean() < 0.8
