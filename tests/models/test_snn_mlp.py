"""SNN-MLP models: docs/snn_mlp.md#network-and-variants sizes and GFLOPs, block structure, forward/backward,
parameter groups."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import spikemlp  # noqa: F401  (registers the models)
from spikemlp.analysis.macs import count_macs
from spikemlp.models.snn_mlp import SNNMLP, param_groups, set_group_size
from spikemlp.neurons.group_lif import group_lif_reference

# docs/snn_mlp.md#network-and-variants: parameters (M) and the authors' GFLOPs at 224 x 224 with 1000 classes.
PUBLISHED = {
    "snn_mlp_t": (28.336, 4.373, 0.2),
    "snn_mlp_s": (49.703, 8.548, 0.3),
    "snn_mlp_b": (87.897, 15.174, 0.5),
}


def _meta(name: str, **kwargs) -> SNNMLP:
    with torch.device("meta"):  # shapes only: counting the 88M model allocates nothing
        return timm.create_model(name, **kwargs)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_parameters_and_gflops_equal_spec(name):
    params_m, gflops, _ = PUBLISHED[name]
    model = _meta(name)
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - params_m) < 0.001
    assert round(model.flops() / 1e9, 3) == gflops


def test_authors_gflops_are_conv_linear_macs_plus_norm_and_sum_terms():
    """flops() = hook-counted conv/linear MACs + the input size of every GroupNorm + the branch sums,
    with the authors' final-norm term (768 x 196 where the norm sees 768 x 49)."""
    model = _meta("snn_mlp_t")
    x = torch.zeros(1, 3, 224, 224, device="meta")
    norm_elems = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o: norm_elems.append(i[0].numel()))
        for m in model.modules()
        if isinstance(m, nn.GroupNorm)
    ]
    macs = sum(count_macs(model, x).values())
    for h in hooks:
        h.remove()
    branch_sums = sum(b.dim * (56 // 2**i) ** 2 for i, st in enumerate(model.stages) for b in st.blocks)
    authors_final_norm = 768 * (56 * 56 // 16) - 768 * 7 * 7
    assert model.flops() == macs + sum(norm_elems) + branch_sums + authors_final_norm


def test_layout_matches_spec():
    model = _meta("snn_mlp_t")
    assert [len(s.blocks) for s in model.stages] == [2, 2, 6, 2]
    assert [s.dim for s in model.stages] == [96, 192, 384, 768]
    assert isinstance(model.stages[0].downsample, nn.Identity)
    merge = model.stages[1].downsample
    assert merge.norm.num_groups == 1 and merge.norm.num_channels == 384
    assert merge.reduction.weight.shape == (192, 384, 1, 1) and merge.reduction.bias is None
    assert model.patch_embed.proj.kernel_size == (4, 4) and model.patch_embed.proj.bias is not None
    block = model.stages[2].blocks[0]
    mix = block.token_mixing
    assert mix.dwconv.groups == 384 and mix.dwconv.kernel_size == (3, 3)
    assert block.mlp.fc1.weight.shape == (1536, 384, 1, 1)
    assert all(m.num_groups == 1 for m in model.modules() if isinstance(m, nn.GroupNorm))
    assert (mix.lif_h.axis, mix.lif_w.axis) == (2, 3)
    assert len(model.state_dict()) == 353  # docs/snn_mlp.md#weight-layout


def test_token_mixing_follows_the_authors_order():
    """The module equals the docs/snn_mlp.md#block sequence written out with functional ops and the plain LIF
    loop."""
    model = timm.create_model("snn_mlp_xt_cifar")
    m = model.stages[0].blocks[0].token_mixing
    with torch.no_grad():
        for p in m.parameters():  # non-trivial norms and LIF parameters
            p.add_(0.1 * torch.randn_like(p))
        x = torch.randn(2, 48, 16, 16)

        def gn(t, norm):
            return F.group_norm(t, 1, norm.weight, norm.bias, norm.eps)

        t = F.gelu(gn(F.conv2d(x, m.proj_in.weight, m.proj_in.bias), m.norm_in))
        t = F.gelu(gn(F.conv2d(t, m.dwconv.weight, m.dwconv.bias, padding=1, groups=48), m.norm_dw))
        h = group_lif_reference(t, m.lif_h.tau, m.lif_h.v_th, axis=2, group_size=4)
        w = group_lif_reference(t, m.lif_w.tau, m.lif_w.v_th, axis=3, group_size=4)
        h = F.gelu(F.conv2d(h, m.proj_h.weight, m.proj_h.bias))
        w = F.gelu(F.conv2d(w, m.proj_w.weight, m.proj_w.bias))
        expected = F.conv2d(gn(h + w, m.norm_out), m.proj_out.weight, m.proj_out.bias)
        torch.testing.assert_close(m(x), expected)


def test_patch_merging_concatenates_subgrids_in_the_authors_order():
    model = timm.create_model("snn_mlp_xt_cifar")
    merge = model.stages[1].downsample
    seen = []
    merge.norm.register_forward_hook(lambda mod, i, o: seen.append(i[0]))
    x = torch.arange(2 * 48 * 4 * 4, dtype=torch.float32).reshape(2, 48, 4, 4)
    merge(x)
    cat = seen[0]
    torch.testing.assert_close(cat[:, :48], x[:, :, 0::2, 0::2])
    torch.testing.assert_close(cat[:, 48:96], x[:, :, 1::2, 0::2])
    torch.testing.assert_close(cat[:, 96:144], x[:, :, 0::2, 1::2])
    torch.testing.assert_close(cat[:, 144:], x[:, :, 1::2, 1::2])


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_drop_path_grows_linearly_to_the_variant_rate(name):
    model = _meta(name)
    rates = [
        b.drop_path.drop_prob if not isinstance(b.drop_path, nn.Identity) else 0.0
        for s in model.stages
        for b in s.blocks
    ]
    expected = torch.linspace(0, PUBLISHED[name][2], len(rates)).tolist()
    assert rates == pytest.approx(expected)


def test_head_init_and_lif_init():
    model = timm.create_model("snn_mlp_t_cifar", num_classes=100)
    w = model.head.weight
    assert abs(w.std().item() - 0.02) < 0.002 and w.abs().max().item() <= 2.0
    assert torch.count_nonzero(model.head.bias) == 0
    lifs = [m for m in model.modules() if type(m).__name__ == "GroupLIF"]
    assert len(lifs) == 2 * 12
    assert all(lif.tau.item() == 0.25 and lif.v_th.item() == pytest.approx(0.1) for lif in lifs)


def _check_fwd_bwd(model: SNNMLP, size: int, num_classes: int) -> None:
    x = torch.randn(1, 3, size, size)
    out = model(x)
    assert out.shape == (1, num_classes) and torch.isfinite(out).all()
    out.square().sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []  # every parameter, every LIF's tau and V_th included, takes part
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n.endswith((".tau", ".v_th")))


def test_snn_mlp_t_forward_backward_at_224():
    model = timm.create_model("snn_mlp_t", drop_path_rate=0.0)
    _check_fwd_bwd(model, 224, 1000)


@pytest.mark.parametrize("name", ["snn_mlp_s", "snn_mlp_b"])
def test_larger_variants_forward_backward(name):
    # 64 x 64 (grids 16, 8, 4, 2, last-stage groups of 2) runs every layer and every LIF of the full
    # model at a twelfth of the cost of 224.
    model = timm.create_model(name, img_size=64, num_classes=10, group_size=(4, 4, 4, 2), drop_path_rate=0.0)
    _check_fwd_bwd(model, 64, 10)


@pytest.mark.parametrize("name", ["snn_mlp_xt_cifar", "snn_mlp_t_cifar", "snn_mlp_s_cifar"])
def test_cifar_variants_forward_backward(name):
    model = timm.create_model(name, drop_path_rate=0.0)  # (a dropped branch would get no gradient)
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    _check_fwd_bwd(model, 32, 10)


def test_lif_switch_changes_the_output():
    model = timm.create_model("snn_mlp_xt_cifar").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        on = model(x)
        set_group_size(model, -1)
        off = model(x)
    assert (on - off).abs().max() > 1e-3


def test_per_stage_group_sizes_are_checked():
    with pytest.raises(ValueError, match="one value or one per stage"):
        SNNMLP(depths=(1, 1), group_size=(4, 4, 4))


def test_param_groups_separate_tau_and_threshold():
    model = timm.create_model("snn_mlp_xt_cifar")
    groups = param_groups(model, lr=1e-3, weight_decay=0.05)
    main, lif = groups
    assert (main["name"], main["lr"], main["weight_decay"]) == ("main", 1e-3, 0.05)
    assert (lif["name"], lif["lr"], lif["weight_decay"]) == ("lif", 1e-4, 0.0)
    names = {id(p): n for n, p in model.named_parameters()}
    lif_names = sorted(names[id(p)] for p in lif["params"])
    assert len(lif_names) == 8 * 2 * 2 and all(n.endswith((".tau", ".v_th")) for n in lif_names)
    assert {id(p) for p in main["params"]}.isdisjoint({id(p) for p in lif["params"]})
    assert len(main["params"]) + len(lif["params"]) == len(list(model.parameters()))
    assert sorted(n for n, _ in model.lif_parameters()) == lif_names
    torch.optim.AdamW(groups)  # a valid optimiser configuration

    fixed = timm.create_model("snn_mlp_xt_cifar", learn_tau=False, learn_v_th=False)
    assert len(param_groups(fixed, 1e-3, 0.05)) == 1  # nothing left to put in the LIF group
    assert sum(k.endswith((".tau", ".v_th")) for k in fixed.state_dict()) == 32  # keys stay


def test_reset_classifier_and_features():
    model = timm.create_model("snn_mlp_xt_cifar")
    model.reset_classifier(7)
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 7)
    assert model.forward_features(x).shape == (2, 384, 2, 2)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 384)


def test_negative_or_fractional_num_classes_is_refused():
    with pytest.raises(ValueError, match="num_classes must be at least 0, got -1"):
        SNNMLP(depths=(1, 1), num_classes=-1)
    with pytest.raises(ValueError, match="num_classes must be an integer, got 2.5"):
        SNNMLP(depths=(1, 1), num_classes=10).reset_classifier(2.5)
