"""Axial token mixing against an independent re-computation in the authors' layout.

The reference permutes the spikes to [T*B, W, C, H] (and [T*B, H, C, W]), applies F.conv2d with the
[N, N, 1, 1] weights, BN over the positions and the LIF, and permutes back, as the authors' code does;
the module computes the same maps with matmuls on the unpermuted tensor. fp64, so spikes match exactly.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mlp_spe_reference_ops import bn_train, expected_running_stats, lif, random_spikes, randomize_bn

from spikemlp.layers import AxialProjection, AxialTokenMixing, axial_token_mixing
from spikemlp.neurons import LIF

T, B, C, N = 3, 2, 6, 5


def make_block(identity_norm=False):
    block = AxialTokenMixing(C, N, lambda: LIF(backend="reference"), identity_norm=identity_norm).double()
    randomize_bn(block)
    with torch.no_grad():  # larger weights than the default init, so every branch spikes often
        for proj in (block.proj_w, block.proj_h):
            proj.weight.normal_(0, 1)
            proj.bias.normal_(0, 1)
    return block


def reference_branch(x, proj, bn, perm, inv, train):
    """Authors' branch: permute, 1x1 conv over the position channel, BN(N), LIF, permute back."""
    xp = x.permute(*perm)  # [T, B, N, C, N']
    y = F.conv2d(xp.flatten(0, 1), proj.weight, proj.bias)
    if train:
        z = bn_train(y, bn, 1)
    else:
        z = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    s = lif(z.unflatten(0, (T, B)))
    return s.permute(*inv), y


def reference_block(block, x, train):
    x_w, y_w = reference_branch(x, block.proj_w, block.norm_w, (0, 1, 4, 2, 3), (0, 1, 3, 4, 2), train)
    x_h, y_h = reference_branch(x, block.proj_h, block.norm_h, (0, 1, 3, 2, 4), (0, 1, 3, 2, 4), train)
    identity = x
    if block.identity_norm is not None:
        xm = x.flatten(0, 1)
        z = (
            bn_train(xm, block.identity_norm, 1)
            if train
            else F.batch_norm(
                xm,
                block.identity_norm.running_mean,
                block.identity_norm.running_var,
                block.identity_norm.weight,
                block.identity_norm.bias,
                False,
                0.0,
                1e-5,
            )
        )
        identity = lif(z.unflatten(0, (T, B)))
    cat = torch.cat([identity, x_h, x_w], dim=2).flatten(0, 1)
    u = F.conv2d(cat, block.fuse.weight)
    u = (
        bn_train(u, block.fuse_norm, 1)
        if train
        else F.batch_norm(
            u,
            block.fuse_norm.running_mean,
            block.fuse_norm.running_var,
            block.fuse_norm.weight,
            block.fuse_norm.bias,
            False,
            0.0,
            block.fuse_norm.eps,
        )
    )
    return u.unflatten(0, (T, B)), x_w, x_h, y_w, y_h


@pytest.mark.parametrize("identity_norm", [False, True], ids=["mlp_spe", "mlp_s"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_token_block_matches_authors_layout(identity_norm, train):
    block = make_block(identity_norm).train(train)
    x = random_spikes(T, B, C, N, N)
    spikes = {}
    block.lif_w.register_forward_hook(lambda m, i, o: spikes.__setitem__("w", o))
    block.lif_h.register_forward_hook(lambda m, i, o: spikes.__setitem__("h", o))
    before = {k: v.clone() for k, v in block.state_dict().items()}
    u = block(x)
    ref_u, ref_w, ref_h, y_w, y_h = reference_block(block, x, train)

    assert u.shape == (T, B, C, N, N)
    # The neurons see the positions in BatchNorm's layout; the module's own map takes them back.
    for axis, ref in (("w", ref_w), ("h", ref_h)):
        got = axial_token_mixing._FROM_BN[axis](spikes[axis].flatten(0, 1), torch.empty(T * B, C, N, N))
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
    torch.testing.assert_close(u, ref_u, rtol=1e-10, atol=1e-10)
    # the comparison means something only if the branches neither stay silent nor fire everywhere
    for s in (ref_w, ref_h):
        assert 0.05 < s.mean().item() < 0.95
    if train:  # BN over positions: running statistics of the authors' [T*B, N, C, N'] BatchNorm2d(N)
        for name, y in (("norm_w", y_w), ("norm_h", y_h)):
            mean, var = expected_running_stats(
                y, 1, before[f"{name}.running_mean"], before[f"{name}.running_var"]
            )
            torch.testing.assert_close(getattr(block, name).running_mean, mean)
            torch.testing.assert_close(getattr(block, name).running_var, var)
    else:
        for k, v in block.state_dict().items():
            assert torch.equal(v, before[k]), k


def test_gradients_match_authors_layout():
    """Backward through the matmul/view formulation equals backward through the permute/conv one."""
    block = make_block()
    x = random_spikes(T, B, C, N, N).requires_grad_(True)
    g = torch.randn(T, B, C, N, N, dtype=torch.float64)
    (block(x) * g).sum().backward()
    ours = [x.grad.clone()] + [p.grad.clone() for p in block.parameters()]
    block.zero_grad()
    x.grad = None
    # reference with a surrogate-gradient LIF is the module's own neuron; only the layout differs
    ref = AxialTokenMixing(C, N, lambda: LIF(backend="reference")).double()
    ref.load_state_dict(block.state_dict())

    def ref_forward(x):
        def branch(proj, bn, lif_mod, perm, inv):
            y = F.conv2d(x.permute(*perm).flatten(0, 1), proj.weight, proj.bias)
            y = F.batch_norm(y, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
            return lif_mod(y.unflatten(0, (T, B))).permute(*inv)

        x_w = branch(ref.proj_w, ref.norm_w, ref.lif_w, (0, 1, 4, 2, 3), (0, 1, 3, 4, 2))
        x_h = branch(ref.proj_h, ref.norm_h, ref.lif_h, (0, 1, 3, 2, 4), (0, 1, 3, 2, 4))
        u = F.conv2d(torch.cat([x, x_h, x_w], dim=2).flatten(0, 1), ref.fuse.weight)
        u = F.batch_norm(u, None, None, ref.fuse_norm.weight, ref.fuse_norm.bias, True, 0.0, 1e-5)
        return u.unflatten(0, (T, B))

    (ref_forward(x) * g).sum().backward()
    theirs = [x.grad] + [p.grad for p in ref.parameters()]
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_axial_projection_is_the_authors_conv_on_the_permuted_tensor():
    proj = AxialProjection(N, "h").double()
    assert proj.weight.shape == (N, N, 1, 1) and proj.bias.shape == (N,)
    x = torch.randn(4, C, N, 7, dtype=torch.float64)  # H = N positions, W = 7 need not equal N
    ref = F.conv2d(x.permute(0, 2, 1, 3), proj.weight, proj.bias).permute(0, 2, 1, 3)
    torch.testing.assert_close(proj(x), ref)
    with pytest.raises(ValueError, match="along H expects 5 positions"):
        proj(torch.randn(4, C, 6, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="axis must be 'h' or 'w'"):
        AxialProjection(N, "c")
