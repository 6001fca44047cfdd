"""The mixer-snn converter and `spikemlp convert`, against a state dict written from the key list of
docs/mlp_spe.md#weight-layout.

``authors_layout`` spells out the authors' key names and shapes from docs/mlp_spe.md#weight-layout (and, for
MLP-S, from docs/mlp_spe.md#variants and the authors' ablation code: to_patch_embedding.{i}.{0,1} and
token_mix.{k}.BN), without using spikemlp's converter.
"""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

import spikemlp
from spikemlp import cli
from spikemlp.convert import KeyMismatchError, get_format
from spikemlp.convert.mixer_snn import from_spikemlp, to_spikemlp


def _bn(prefix, n):
    return {
        f"{prefix}.weight": (n,),
        f"{prefix}.bias": (n,),
        f"{prefix}.running_mean": (n,),
        f"{prefix}.running_var": (n,),
        f"{prefix}.num_batches_tracked": (),
    }


def authors_layout(d=78, depths=(2, 8, 14, 2), img_size=224, classes=1000, spe=True, patch=4):
    """{key: shape} of the authors' state dict (docs/mlp_spe.md#weight-layout), Sequential indices
    included."""
    keys = {"to_patch_embedding.0.0.weight": (d, 3, patch, patch), **_bn("to_patch_embedding.0.1", d)}
    for i in range(1, len(depths)):
        c = d * 2**i
        if spe:
            node = c // 3
            for n in range(3):
                keys[f"to_patch_embedding.{i}.cell2node.{n}.0.weight"] = (node, c // 2, 3, 3)
                keys.update(_bn(f"to_patch_embedding.{i}.cell2node.{n}.1", node))
            for name in ("node1_node2", "node2_node3"):
                keys[f"to_patch_embedding.{i}.{name}.0.weight"] = (node, node, 3, 3)
                keys.update(_bn(f"to_patch_embedding.{i}.{name}.1", node))
        else:
            keys[f"to_patch_embedding.{i}.0.weight"] = (c, c // 2, 2, 2)
            keys.update(_bn(f"to_patch_embedding.{i}.1", c))
    k = 0
    for i, depth in enumerate(depths):
        c, n = d * 2**i, img_size // patch // 2**i
        for _ in range(depth):
            for axis in ("w", "h"):
                keys[f"token_mix.{k}.proj_{axis}.1.weight"] = (n, n, 1, 1)
                keys[f"token_mix.{k}.proj_{axis}.1.bias"] = (n,)
                keys.update(_bn(f"token_mix.{k}.proj_{axis}.2", n))
            keys[f"token_mix.{k}.fuse.0.weight"] = (c, 3 * c, 1, 1)
            keys.update(_bn(f"token_mix.{k}.fuse.1", c))
            if not spe:
                keys.update(_bn(f"token_mix.{k}.BN", c))
            keys[f"channel_mix.{k}.1.net.0.weight"] = (3 * c, c)
            keys[f"channel_mix.{k}.1.net.0.bias"] = (3 * c,)
            keys.update(_bn(f"channel_mix.{k}.1.net.1", n * n))
            keys[f"channel_mix.{k}.1.net.3.weight"] = (c, 3 * c)
            keys[f"channel_mix.{k}.1.net.3.bias"] = (c,)
            keys.update(_bn(f"channel_mix.{k}.1.net.4", n * n))
            k += 1
    c3 = d * 2 ** (len(depths) - 1)
    keys.update(_bn("batch_norm", c3))
    keys["mlp_head.1.weight"] = (classes, c3)
    keys["mlp_head.1.bias"] = (classes,)
    return keys


def random_state_dict(layout):
    g = torch.Generator().manual_seed(0)
    return {
        k: torch.randint(0, 1000, (), generator=g)
        if k.endswith("num_batches_tracked")
        else torch.randn(s, generator=g)
        for k, s in layout.items()
    }


def test_spec_layout_has_987_keys_for_mlp_spe_t():
    assert len(authors_layout()) == 987


@pytest.mark.parametrize(
    "name, layout_kw, model_kw",
    [
        ("mlp_spe_t", {}, {}),
        ("mlp_s", dict(d=96, spe=False), {}),
        ("mlp_spe_t", dict(img_size=64, classes=10), dict(img_size=64, num_classes=10)),
    ],
    ids=["mlp_spe_t", "mlp_s", "mlp_spe_t_64px_10cls"],
)
def test_round_trip_through_the_model(name, layout_kw, model_kw):
    theirs = random_state_dict(authors_layout(**layout_kw))
    ours = to_spikemlp(theirs)
    with torch.device("meta"):
        model = spikemlp.models.create(name, **model_kw)
    expected = model.state_dict()
    assert set(ours) == set(expected)  # one to one: every model tensor, nothing else
    for key, tensor in ours.items():
        assert tensor.shape == expected[key].shape, key
    model = model.to_empty(device="cpu")
    model.load_state_dict(ours, strict=True)
    back = from_spikemlp(model.state_dict())
    assert set(back) == set(theirs)
    for key, tensor in theirs.items():
        assert torch.equal(back[key], tensor), key


def test_block_numbering_follows_the_stages():
    ours = to_spikemlp(random_state_dict(authors_layout()))
    # block k = 2 is the first block of stage 1 (depths 2, 8, ...), k = 25 the last of stage 3
    theirs = random_state_dict(authors_layout())
    assert torch.equal(ours["stages.1.blocks.0.token_mix.fuse.weight"], theirs["token_mix.2.fuse.0.weight"])
    assert torch.equal(
        ours["stages.3.blocks.1.channel_mix.norm2.running_var"], theirs["channel_mix.25.1.net.4.running_var"]
    )
    assert torch.equal(
        ours["stages.2.encoder.node2_node3.bn.weight"], theirs["to_patch_embedding.2.node2_node3.1.weight"]
    )


def test_missing_and_unexpected_keys_are_listed():
    sd = random_state_dict(authors_layout())
    del sd["token_mix.5.proj_h.2.running_var"]
    sd["token_mix.5.extra.weight"] = torch.zeros(1)
    with pytest.raises(
        KeyMismatchError, match=r"Missing 1 key\(s\): token_mix\.5\.proj_h\.2\.running_var"
    ) as err:
        to_spikemlp(sd)
    assert err.value.unexpected == ["token_mix.5.extra.weight"]
    ours = to_spikemlp(random_state_dict(authors_layout()))
    del ours["head.bias"]
    with pytest.raises(KeyMismatchError, match=r"Missing 1 key\(s\): head\.bias"):
        from_spikemlp(ours)


def test_format_table_finds_the_module():
    assert get_format("mixer-snn").to_spikemlp is to_spikemlp
    with pytest.raises(ValueError, match="unknown weight format 'mixer'"):
        get_format("mixer")


# --- command line -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("wrap", [None, "model", "state_dict"])
def test_cli_convert_both_ways(tmp_path, wrap, capsys):
    theirs = random_state_dict(authors_layout(d=6, depths=(1, 2), img_size=16, classes=3))
    src = tmp_path / "authors.pth"
    torch.save(theirs if wrap is None else {wrap: theirs, "epoch": 3}, src)
    out = tmp_path / "ours.safetensors"
    assert cli.main(["convert", "--from", "mixer-snn", str(src), str(out)]) == 0
    assert "converted" in capsys.readouterr().out
    ours = load_file(str(out))
    expected = to_spikemlp(theirs)
    assert set(ours) == set(expected) and all(torch.equal(ours[k], expected[k]) for k in ours)
    back = tmp_path / "back.pth"
    assert cli.main(["convert", "--to", "mixer-snn", str(out), str(back)]) == 0
    again = torch.load(back, weights_only=True)
    assert set(again) == set(theirs) and all(torch.equal(again[k], theirs[k]) for k in theirs)
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary files
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == back.stat().st_mode & 0o777 == 0o666 & ~umask  # not private


class _NotATensor:
    pass


def test_cli_convert_bad_inputs(tmp_path, capsys):
    missing = tmp_path / "missing.pth"
    assert cli.main(["convert", "--from", "mixer-snn", str(missing), str(tmp_path / "o.safetensors")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err

    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not a checkpoint")
    assert cli.main(["convert", "--from", "mixer-snn", str(garbage), str(tmp_path / "o.safetensors")]) == 2
    assert "could not be read as a weights-only PyTorch checkpoint" in capsys.readouterr().err

    pickled = tmp_path / "pickled.pth"
    torch.save({"model": _NotATensor()}, pickled)  # arbitrary objects are refused, not unpickled
    assert cli.main(["convert", "--from", "mixer-snn", str(pickled), str(tmp_path / "o.safetensors")]) == 2
    assert "weights-only" in capsys.readouterr().err

    not_sd = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_sd)
    assert cli.main(["convert", "--from", "mixer-snn", str(not_sd), str(tmp_path / "o.safetensors")]) == 2
    assert "not a state dict" in capsys.readouterr().err

    wrong = tmp_path / "wrong.pth"
    torch.save({"mlp_head.1.weight": torch.zeros(3, 4), "foo": torch.zeros(1)}, wrong)
    assert cli.main(["convert", "--from", "mixer-snn", str(wrong), str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "Unexpected 1 key(s): foo" in err and "Missing" in err
    assert not (tmp_path / "o.safetensors").exists()
