"""The one reader of foreign checkpoints: both torch formats, the usual wrappings, nothing unpickled."""

from __future__ import annotations

import fractions

import pytest
import torch

from spikemlp.cli import main
from spikemlp.convert.reader import read_state_dict

SD = {"a.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.zeros(2)}


@pytest.mark.parametrize("zipped", [True, False])  # torch's zip format and the legacy pickle format
@pytest.mark.parametrize("wrap", [None, "model", "state_dict", "module."])
def test_reads_both_formats_bare_or_wrapped(tmp_path, zipped, wrap):
    obj = {f"module.{k}": v for k, v in SD.items()} if wrap == "module." else SD
    obj = {wrap: obj, "epoch": 3} if wrap in ("model", "state_dict") else obj
    path = tmp_path / "w.pth"
    torch.save(obj, path, _use_new_zipfile_serialization=zipped)
    got = read_state_dict(path)
    assert set(got) == set(SD) and all(torch.equal(got[k], SD[k]) for k in SD)


def test_an_arbitrary_object_is_refused_by_every_user(tmp_path, capsys):
    path = tmp_path / "object.pt"
    torch.save({"model": SD, "obj": fractions.Fraction(1, 3)}, path)
    with pytest.raises(ValueError, match="never unpickles"):
        read_state_dict(path)
    assert (
        main(["export", "onnx", "snn_mlp_xt_cifar", str(tmp_path / "m.onnx"), "--checkpoint", str(path)]) == 2
    )
    err = capsys.readouterr().err
    assert "could not be read as a weights-only PyTorch checkpoint" in err
    # the refused class is named; PyTorch's advice to load it with weights_only=False is not passed on
    assert "fractions.Fraction" in err and "weights_only=False" not in err and "likely succeed" not in err
    assert err.count("\n") == 1, err


def test_a_missing_file_names_the_hint(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*x\.pt\. Get it there"):
        read_state_dict(tmp_path / "x.pt", missing_hint=". Get it there")
