"""Checkpoints: round trip, atomic replacement (a crash mid-write keeps the previous one), no unpickling."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from spikemlp import checkpoint as ckpt


def _weights(value: float) -> dict[str, torch.Tensor]:
    return {"layer.weight": torch.full((3, 2), value), "layer.bias": torch.arange(3.0) + value}


def _save(folder, value: float, step: int):
    state = {
        "optimizer": {
            "state": {0: {"momentum_buffer": torch.ones(2) * value}},
            "param_groups": [{"lr": 0.1}],
        },
        "counters": {"global_step": step, "epoch": 1},
        "rng": [{"torch": torch.get_rng_state()}],
    }
    return ckpt.save_checkpoint(
        folder,
        _weights(value),
        {"model": "m"},
        state=state,
        ema_state=_weights(-value),
        meta={"global_step": step},
    )


def test_round_trip_keeps_weights_ema_state_and_metadata(tmp_path):
    _save(tmp_path / "last", 1.5, 7)
    weights, meta = ckpt.load_weights(tmp_path / "last")
    assert meta == {"model": "m"}
    torch.testing.assert_close(weights, _weights(1.5), rtol=0, atol=0)
    ema, _ = ckpt.load_weights(tmp_path / "last", ema=True)
    torch.testing.assert_close(ema, _weights(-1.5), rtol=0, atol=0)
    state = ckpt.load_state(tmp_path / "last")
    assert state["counters"] == {"global_step": 7, "epoch": 1}
    assert torch.equal(state["optimizer"]["state"][0]["momentum_buffer"], torch.full((2,), 1.5))
    assert ckpt.load_meta(tmp_path)["global_step"] == 7  # a run folder resolves to its last/
    assert sorted(os.listdir(tmp_path)) == ["last"]  # no temporary folders left behind


def test_a_crash_while_writing_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    _save(tmp_path / "last", 1.0, 10)
    real_save = torch.save

    def dies_half_way(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 partial")  # some bytes reach the disk, then the process "dies"
        raise KeyboardInterrupt("killed during the write")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path / "last", 2.0, 20)
    monkeypatch.setattr(torch, "save", real_save)
    weights, _ = ckpt.load_weights(tmp_path / "last")
    torch.testing.assert_close(weights, _weights(1.0), rtol=0, atol=0)
    assert ckpt.load_state(tmp_path / "last")["counters"]["global_step"] == 10
    _save(tmp_path / "last", 3.0, 30)  # the next save cleans up the partial folder and succeeds
    assert ckpt.load_state(tmp_path / "last")["counters"]["global_step"] == 30
    assert sorted(os.listdir(tmp_path)) == ["last"]


def test_a_crash_between_the_two_renames_falls_back_to_the_old_folder(tmp_path, monkeypatch):
    _save(tmp_path / "last", 1.0, 10)
    real_replace = os.replace

    def second_rename_dies(src, dst):
        if Path(src).name.startswith("last.tmp"):  # last -> last.old done; last.tmp-PID -> last never happens
            raise KeyboardInterrupt("killed between renames")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", second_rename_dies)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path / "last", 2.0, 20)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not (tmp_path / "last").exists()
    assert ckpt.resolve(tmp_path) == tmp_path / "last.old"
    assert ckpt.load_state(tmp_path / "last")["counters"]["global_step"] == 10
    _save(tmp_path / "last", 3.0, 30)
    assert ckpt.load_state(tmp_path)["counters"]["global_step"] == 30


class _Payload:
    """Unpickling this would create a file: the classic code-execution-by-pickle payload, made harmless."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_checkpoint_carrying_a_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    folder = _save(tmp_path / "last", 1.0, 10)
    torch.save({"counters": {"global_step": 11}, "evil": _Payload(marker)}, folder / ckpt.STATE_FILE)
    with pytest.raises(ckpt.CheckpointError, match=r"refusing to load .*state.pt.*never unpickles") as err:
        ckpt.load_state(folder)
    assert not marker.exists()
    assert re.search(r"of class \S*open\b", str(err.value)) and "weights_only=False" not in str(err.value)


def test_a_plain_pytorch_state_dict_is_not_called_damaged(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, path)  # valid: the authors' weights look like this
    with pytest.raises(ckpt.CheckpointError, match=r"weights.pt holds plain PyTorch weights.*--model") as err:
        ckpt.load_weights(path)
    assert "damaged" not in str(err.value)


def test_damaged_or_missing_files_give_one_clear_error(tmp_path):
    folder = _save(tmp_path / "last", 1.0, 10)
    (folder / ckpt.MODEL_FILE).write_bytes(b"\x00\x01garbage")
    with pytest.raises(ckpt.CheckpointError, match="model.safetensors are unreadable"):
        ckpt.load_weights(folder)
    (folder / ckpt.STATE_FILE).write_bytes(b"not a zip file")
    with pytest.raises(ckpt.CheckpointError, match="state.pt is unreadable"):
        ckpt.load_state(folder)
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint at .*nothing_here"):
        ckpt.load_weights(tmp_path / "nothing_here")
