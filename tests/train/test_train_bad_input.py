"""Bad input to ``spikemlp train``: every expected failure is one line on stderr and exit code 2 (file
system, device, ranges, labels against the classes), checked before the run trains."""

from __future__ import annotations

import pytest
import train_tiny_models  # noqa: F401  (registers train_tiny_snn)

from spikemlp.cli import main as cli_main
from spikemlp.train.config import ConfigError, from_dict
from spikemlp.train.distributed import pick_device

TINY = ["--model", "train_tiny_snn", "--T", "2", "--img-size", "8", "--data", "synthetic"]
TINY += ["--synthetic-size", "64", "--batch-size", "16", "--epochs", "1", "--progress", "false"]


def one_line_error(capsys, argv) -> str:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("smoothing", 1.5, r"'smoothing' must be in \[0, 1\), got 1.5"),
        ("eval_batch_size", -1, "'eval_batch_size' must be at least 0, got -1"),
        ("hflip", float("nan"), r"'hflip' must be in \[0, 1\], got nan"),
        ("lr", 0, "'lr' must be greater than 0"),
        ("T", 0, "'T' must be at least 1"),
        ("clip_grad", -1.0, "'clip_grad' must be greater than 0"),
        ("scale", [0.5], r"'scale' must be a pair \[low, high\]"),
        ("device", "tpu", "'device' must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    ],
)
def test_numeric_keys_are_range_checked(key, value, message):
    with pytest.raises(ConfigError, match=message):
        from_dict({key: value})


def test_an_unknown_device_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown device 'tpu'; use auto, cpu, cuda or cuda:N"):
        pick_device("tpu")
    with pytest.raises(ValueError, match="device 'cuda:99': PyTorch sees"):
        pick_device("cuda:99")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--smoothing", "1.5"], "'smoothing' must be in"),
        (["--device", "tpu"], "'device' must be auto, cpu, cuda or cuda:N"),
        (["--eval-batch-size", "-1"], "'eval_batch_size' must be at least 0, got -1"),  # the key typed
        (["--num-classes", "5"], r"synthetic train has labels 0..9 but the model classifies 5 classes"),
    ],
)
def test_bad_values_are_one_line_and_exit_2(tmp_path, capsys, extra, message):
    err = one_line_error(capsys, ["train", "--out", str(tmp_path / "run"), *TINY, *extra])
    assert message.replace("\\", "") in err or __import__("re").search(message, err), err


def test_an_unusable_out_folder_is_one_line_and_exit_2(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("")
    err = one_line_error(capsys, ["train", "--out", str(a_file), *TINY])  # a file where the folder goes
    assert str(a_file) in err
    err = one_line_error(capsys, ["train", "--out", str(a_file / "run"), *TINY])  # below a file
    assert "Not a directory" in err


def test_eval_names_its_own_batch_flag(tmp_path, capsys):
    err = one_line_error(capsys, ["eval", "--checkpoint", str(tmp_path), "--batch-size", "-1"])
    assert "--batch-size must be at least 1, got -1" in err and "eval_batch_size" not in err
