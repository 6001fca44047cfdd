"""The SNN-MLP authors' weight layout (docs/snn_mlp.md#weight-layout) <-> spikemlp, and loading a released
file with timm."""

from __future__ import annotations

import fractions

import pytest
import timm
import torch

import spikemlp  # noqa: F401  (registers the models)
from spikemlp.convert import KeyMismatchError, get_format
from spikemlp.convert.snn_mlp import from_spikemlp, to_spikemlp
from spikemlp.models.snn_mlp import load_authors_weights


def authors_state_dict(depths=(2, 2, 6, 2), dim=96, num_classes=1000, seed=0) -> dict:
    """A state dict with the keys and shapes of the authors' SNNMLP (written from
    docs/snn_mlp.md#weight-layout, #block and #network-and-variants, independently of the converter), filled
    with random numbers."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {
        "patch_embed.proj.weight": (dim, 3, 4, 4),
        "patch_embed.proj.bias": (dim,),
        "patch_embed.norm.weight": (dim,),
        "patch_embed.norm.bias": (dim,),
    }
    for i, depth in enumerate(depths):
        c = dim * 2**i
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            for norm in ("norm1", "norm2", "lif_module.norm1", "lif_module.norm2", "lif_module.norm3"):
                shapes[p + norm + ".weight"] = shapes[p + norm + ".bias"] = (c,)
            for conv in ("conv1", "conv2_1", "conv2_2", "conv3"):
                shapes[p + f"lif_module.{conv}.weight"] = (c, c, 1, 1)
                shapes[p + f"lif_module.{conv}.bias"] = (c,)
            shapes[p + "lif_module.dw1.weight"] = (c, 1, 3, 3)
            shapes[p + "lif_module.dw1.bias"] = (c,)
            for lif in ("lif1", "lif2"):
                shapes[p + f"lif_module.{lif}.tau"] = shapes[p + f"lif_module.{lif}.Vth"] = (1,)
            shapes[p + "mlp.fc1.weight"] = (4 * c, c, 1, 1)
            shapes[p + "mlp.fc1.bias"] = (4 * c,)
            shapes[p + "mlp.fc2.weight"] = (c, 4 * c, 1, 1)
            shapes[p + "mlp.fc2.bias"] = (c,)
        if i < len(depths) - 1:
            shapes[f"layers.{i}.downsample.reduction.weight"] = (2 * c, 4 * c, 1, 1)
            shapes[f"layers.{i}.downsample.norm.weight"] = shapes[f"layers.{i}.downsample.norm.bias"] = (
                4 * c,
            )
    c = dim * 2 ** (len(depths) - 1)
    shapes.update(
        {"norm.weight": (c,), "norm.bias": (c,), "head.weight": (num_classes, c), "head.bias": (num_classes,)}
    )
    return {k: torch.randn(s, generator=gen) for k, s in shapes.items()}


def test_fake_checkpoint_has_the_spec_key_count():
    assert len(authors_state_dict()) == 353  # docs/snn_mlp.md#weight-layout, SNN-MLP-T


def test_conversion_is_one_to_one_and_round_trips():
    theirs = authors_state_dict()
    ours = to_spikemlp(theirs)
    assert len(ours) == len(theirs)
    with torch.device("meta"):
        assert set(ours) == set(timm.create_model("snn_mlp_t").state_dict())
    back = from_spikemlp(ours)
    assert set(back) == set(theirs)
    assert all(back[k] is theirs[k] for k in theirs)  # the same tensors, renamed


def test_named_correspondences():
    theirs = authors_state_dict()
    ours = to_spikemlp(theirs)
    pairs = {
        "layers.2.blocks.5.lif_module.lif1.Vth": "stages.2.blocks.5.token_mixing.lif_h.v_th",
        "layers.2.blocks.5.lif_module.lif2.tau": "stages.2.blocks.5.token_mixing.lif_w.tau",
        "layers.1.blocks.0.lif_module.conv2_1.weight": "stages.1.blocks.0.token_mixing.proj_h.weight",
        "layers.1.blocks.0.lif_module.conv2_2.bias": "stages.1.blocks.0.token_mixing.proj_w.bias",
        "layers.0.blocks.1.lif_module.dw1.weight": "stages.0.blocks.1.token_mixing.dwconv.weight",
        "layers.0.blocks.1.lif_module.norm3.weight": "stages.0.blocks.1.token_mixing.norm_out.weight",
        "layers.0.downsample.reduction.weight": "stages.1.downsample.reduction.weight",
        "layers.2.downsample.norm.bias": "stages.3.downsample.norm.bias",
        "patch_embed.proj.weight": "patch_embed.proj.weight",
        "head.weight": "head.weight",
    }
    for theirs_key, ours_key in pairs.items():
        assert ours[ours_key] is theirs[theirs_key]


def test_format_table_finds_the_converter():
    assert get_format("snn-mlp").to_spikemlp is to_spikemlp


def test_missing_and_unexpected_keys_are_listed():
    theirs = authors_state_dict()
    del theirs["layers.1.blocks.1.lif_module.lif2.Vth"]
    theirs["layers.1.blocks.1.lif_module.extra.weight"] = torch.zeros(1)
    with pytest.raises(
        KeyMismatchError, match=r"Missing 1 key\(s\): layers\.1\.blocks\.1\.lif_module\.lif2\.Vth"
    ):
        to_spikemlp(theirs)
    with pytest.raises(
        KeyMismatchError, match=r"Unexpected 1 key\(s\): layers\.1\.blocks\.1\.lif_module\.extra"
    ):
        to_spikemlp(theirs)
    ours = to_spikemlp(authors_state_dict())
    del ours["norm.bias"]
    with pytest.raises(KeyMismatchError, match=r"Missing 1 key\(s\): norm\.bias"):
        from_spikemlp(ours)


def test_depths_given_must_match():
    with pytest.raises(KeyMismatchError, match="Unexpected 112 key"):  # 4 extra blocks of 28 keys
        to_spikemlp(authors_state_dict(depths=(2, 2, 6, 2)), depths=(2, 2, 2, 2))


@pytest.fixture(scope="module")
def released_t(tmp_path_factory):
    """A stand-in for snnmlp_tiny_81.88.pt: the authors' keys and shapes, random values."""
    theirs = authors_state_dict(seed=1)
    folder = tmp_path_factory.mktemp("weights")
    bare = folder / "snnmlp_tiny_81.88.pt"
    torch.save(theirs, bare)
    wrapped = folder / "training_checkpoint.pth"
    torch.save({"model": theirs, "epoch": 299, "max_accuracy": 81.88}, wrapped)
    return theirs, bare, wrapped


def _assert_loaded(model, theirs, with_head=True):
    ours = to_spikemlp(theirs)
    state = model.state_dict()
    for k, v in ours.items():
        if k.startswith("head.") and not with_head:
            continue
        assert torch.equal(state[k], v), k
    lifs = [m for m in model.modules() if type(m).__name__ == "GroupLIF"]
    assert len(lifs) == 24 and all(lif.group_size == 4 for lif in lifs)  # the LIF is on


@pytest.mark.parametrize("which", ["bare", "wrapped"])
def test_timm_one_liner_loads_the_released_file(released_t, which):
    theirs, bare, wrapped = released_t
    path = bare if which == "bare" else wrapped
    model = timm.create_model("snn_mlp_t", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    _assert_loaded(model, theirs)


def test_one_liner_with_a_new_classifier_keeps_the_rest(released_t):
    theirs, bare, _ = released_t
    model = timm.create_model(
        "snn_mlp_t", pretrained=True, pretrained_cfg_overlay=dict(file=str(bare)), num_classes=10
    )
    assert model.head.weight.shape == (10, 768)
    _assert_loaded(model, theirs, with_head=False)


def test_load_authors_weights(released_t):
    theirs, _, wrapped = released_t
    model = load_authors_weights(timm.create_model("snn_mlp_t"), wrapped)
    _assert_loaded(model, theirs)


def test_unreadable_files_get_one_clear_error(tmp_path):
    garbage = tmp_path / "broken.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not be read as a weights-only PyTorch checkpoint"):
        timm.create_model("snn_mlp_t", pretrained=True, pretrained_cfg_overlay=dict(file=str(garbage)))
    with pytest.raises(ValueError, match="weights_only=True"):
        load_authors_weights(timm.create_model("snn_mlp_xt_cifar"), garbage)

    pickled = tmp_path / "object.pt"  # an arbitrary Python object: loading it would run pickle code
    torch.save({"model": authors_state_dict(depths=(1,), dim=8), "obj": fractions.Fraction(1, 3)}, pickled)
    with pytest.raises(ValueError, match="never unpickles"):
        load_authors_weights(timm.create_model("snn_mlp_xt_cifar"), pickled)

    with pytest.raises(FileNotFoundError, match="releases/tag/snnmlp"):
        timm.create_model(
            "snn_mlp_t", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "x.pt"))
        )


def test_weights_of_another_variant_are_refused(tmp_path):
    path = tmp_path / "snnmlp_small.pt"
    torch.save(authors_state_dict(depths=(2, 2, 18, 2)), path)
    with pytest.raises(KeyMismatchError, match="Unexpected 336 key"):
        timm.create_model("snn_mlp_t", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    wide = tmp_path / "wide.pt"
    torch.save(authors_state_dict(dim=128), wide)  # B's width with T's depths
    with pytest.raises(ValueError, match="another variant"):
        load_authors_weights(timm.create_model("snn_mlp_t"), wide)
