"""``spikemlp data check`` (and ``data list``): what it prints and its exit status."""

from __future__ import annotations

import hashlib
import os

import pytest
from dataset_writers import CIFAR10_NAMES, write_cifar10, write_png

from spikemlp.cli import main
from spikemlp.data import check_dataset


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_check_real_fashion_mnist_reports_official_sums(shared_data, capsys):
    folder = shared_data / "fashion-mnist"
    assert main(["data", "check", "fashion_mnist", "--data-dir", str(shared_data)]) == 0
    out = capsys.readouterr().out
    assert f"fashion_mnist: found at {folder}" in out
    assert "train: 60,000 images of 1x28x28, 10 classes" in out
    assert "test: 10,000 images of 1x28x28, 10 classes" in out
    assert "T-shirt/top  6,000/1,000" in out and "Ankle boot   6,000/1,000" in out
    # the shared copy is byte-identical to the official release (its README lists these sums)
    assert "train-images-idx3-ubyte.gz  8d4fb7e6c68d591d4c3dfef9ec88bf0d  matches the official release" in out
    assert "problems: none" in out and "result: usable" in out


def test_check_cifar10_copy_that_differs_from_the_official_sums(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, per_batch=3, n_test=4)
    assert main(["data", "check", "cifar10", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train: 15 images of 3x32x32, 10 classes" in out and "test: 4 images of 3x32x32" in out
    assert f"data_batch_1  {_md5(folder / 'data_batch_1')}  differs from the official c99cafc15" in out
    assert "(information only)" in out
    report = check_dataset("cifar10", tmp_path)
    assert report.splits["train"].classes == CIFAR10_NAMES
    assert sum(report.splits["train"].counts) == 15 and report.usable


def test_check_reports_a_broken_file_as_a_problem_and_exits_1(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    (folder / "data_batch_2").write_bytes(os.urandom(500))
    assert main(["data", "check", "cifar10", "--data-dir", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "test: 5 images" in out  # the intact split is still reported
    assert (
        "problems (1):" in out
        and "train split:" in out
        and "data_batch_2: not a readable CIFAR pickle" in out
    )
    assert "result: NOT usable" in out


def test_check_missing_data_is_one_error_without_traceback(tmp_path, capsys):
    assert main(["data", "check", "cifar100", "--data-dir", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spikemlp data: error: cifar100 not found.")
    assert "cifar-100-python" in err and "Traceback" not in err


def test_check_image_folder_with_unreadable_image(tmp_path, capsys):
    import numpy as np

    root = tmp_path / "imagenet"
    for split in ("train", "val"):
        for c in ("n01", "n02"):
            write_png(root / split / c / "a.png", np.zeros((6, 4, 3), np.uint8))
    (root / "train" / "n02" / "b.JPEG").write_bytes(b"not a jpeg")
    assert main(["data", "check", "imagenet", "--data-dir", str(root)]) == 0  # listing alone looks fine
    out = capsys.readouterr().out
    assert "train: 3 images of 3x6x4, 2 classes" in out and "n02  2/1" in out
    assert main(["data", "check", "imagenet", "--data-dir", str(root), "--verify-images"]) == 1
    assert "1 unreadable image(s) in the train split, e.g. " in capsys.readouterr().out


def test_data_list(tmp_path, capsys):
    write_cifar10(tmp_path / "cifar-10-batches-py")
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"cifar10        {tmp_path / 'cifar-10-batches-py'}" in lines
    assert "mnist          not found" in lines


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "check" in out and "download" in out and "list" in out
