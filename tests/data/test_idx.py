"""idx readers: the real Fashion-MNIST, MNIST files written here (.gz and plain), bad files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from dataset_writers import idx_bytes, write_mnist

from spikemlp.data import DATASET_INFO, DataError, load_split, read_idx, read_mnist


@pytest.fixture(scope="module")
def fashion(shared_data):
    return shared_data / "fashion-mnist", {
        s: load_split("fashion_mnist", s, data_dir=shared_data) for s in ("train", "test")
    }


def test_real_fashion_mnist_sizes_and_counts(fashion):
    _, splits = fashion
    assert splits["train"].images.shape == (60_000, 1, 28, 28)
    assert splits["test"].images.shape == (10_000, 1, 28, 28)
    assert splits["train"].images.dtype == torch.uint8 and splits["train"].labels.dtype == torch.int64
    assert splits["train"].class_counts() == [6_000] * 10
    assert splits["test"].class_counts() == [1_000] * 10
    assert splits["train"].classes[0] == "T-shirt/top" and splits["train"].classes[9] == "Ankle boot"


def test_real_fashion_mnist_matches_a_direct_parse(fashion):
    # the idx layout by hand: 16-byte header for images, 8 for labels
    folder, splits = fashion
    raw = gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes())
    assert int.from_bytes(raw[:4], "big") == 0x803
    ref = np.frombuffer(raw, np.uint8, offset=16).reshape(10_000, 28, 28)
    labels = np.frombuffer(
        gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes()), np.uint8, offset=8
    )
    for i in (0, 1234, 9999):
        assert torch.equal(splits["test"].images[i, 0], torch.from_numpy(ref[i].copy()))
    assert splits["test"].labels.tolist() == labels.tolist()


def test_fashion_mnist_mean_std_in_dataset_info(fashion):
    hist = torch.bincount(fashion[1]["train"].images.reshape(-1), minlength=256).double()
    p, values = hist / hist.sum(), torch.arange(256, dtype=torch.double) / 255
    mean = (p * values).sum().item()
    std = (p * (values - mean) ** 2).sum().sqrt().item()
    assert abs(mean - DATASET_INFO["fashion_mnist"].mean[0]) < 1e-3
    assert abs(std - DATASET_INFO["fashion_mnist"].std[0]) < 1e-3


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_written_here_reads_back(tmp_path, gz):
    ref = write_mnist(tmp_path / "mnist", n_train=9, n_test=4, gz=gz)
    train = load_split("mnist", "train", data_dir=tmp_path)
    test = read_mnist(tmp_path / "mnist", "test")
    assert train.images.shape == (9, 1, 28, 28) and test.images.shape == (4, 1, 28, 28)
    assert torch.equal(train.images[:, 0], torch.from_numpy(ref["train"][0]))
    assert train.labels.tolist() == ref["train"][1].tolist()
    assert torch.equal(test.images[:, 0], torch.from_numpy(ref["t10k"][0]))
    assert train.classes == [str(d) for d in range(10)]


def test_read_idx_other_types_and_byte_order(tmp_path):
    arr = np.array([[1, -2, 300], [70000, 5, -6]], dtype=">i4")
    raw = bytes([0, 0, 0x0C, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + arr.tobytes()
    (tmp_path / "x.idx").write_bytes(raw)
    out = read_idx(tmp_path / "x.idx")
    assert out.dtype == np.int32 and out.tolist() == [[1, -2, 300], [70000, 5, -6]]


# --- bad input ------------------------------------------------------------------------------------------


def test_wrong_magic_names_the_file(tmp_path):
    folder = tmp_path / "mnist"
    write_mnist(folder)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x50\x4b\x03\x04" + bytes(100)))
    with pytest.raises(
        DataError,
        match=r"train-images-idx3-ubyte.gz: not an idx file \(magic number 0x504b0304\); expected an idx3",
    ):
        read_mnist(folder, "train")


def test_swapped_image_and_label_files(tmp_path):
    folder = tmp_path / "mnist"
    write_mnist(folder)
    labels = (folder / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(labels)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: idx file with 1 dimensions.*swapped"):
        read_mnist(folder, "test")


def test_truncated_gzip_names_the_file(tmp_path):
    folder = tmp_path / "mnist"
    write_mnist(folder)
    raw = (folder / "train-images-idx3-ubyte.gz").read_bytes()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"idx3-ubyte.gz: truncated or corrupt gzip file.*again") as err:
        read_mnist(folder, "train")
    # the command that fetches it, not a --download flag that train and eval do not have
    assert "spikemlp data download mnist" in str(err.value) and "--download" not in str(err.value)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: file not found") as err:
        read_mnist(folder, "test")
    assert "spikemlp data download mnist" in str(err.value) and "--download" not in str(err.value)


def test_truncated_plain_idx(tmp_path):
    folder = tmp_path / "mnist"
    write_mnist(folder, n_test=4, gz=False)
    raw = (folder / "t10k-images-idx3-ubyte").read_bytes()
    (folder / "t10k-images-idx3-ubyte").write_bytes(raw[:-10])
    with pytest.raises(
        DataError, match=r"t10k-images-idx3-ubyte: truncated: the header announces 4x28x28 values"
    ):
        read_mnist(folder, "test")


def test_idx_labels_out_of_range(tmp_path):
    folder = tmp_path / "mnist"
    write_mnist(folder, n_test=4)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.array([1, 2, 12, 3], np.uint8)))
    )
    with pytest.raises(
        DataError, match=r"t10k-labels-idx1-ubyte.gz: 1 labels out of range \(found values 1\.\.12"
    ):
        read_mnist(folder, "test")


def test_idx_image_and_label_counts_differ(tmp_path):
    folder = tmp_path / "mnist"
    write_mnist(folder, n_test=4)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.array([1, 2, 3], np.uint8)))
    )
    with pytest.raises(DataError, match=r"holds 4 images but .*t10k-labels-idx1-ubyte.gz holds 3 labels"):
        read_mnist(folder, "test")
