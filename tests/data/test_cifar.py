"""CIFAR-10/100 readers: the real CIFAR-10 copy, CIFAR-100 written here in its original layout, bad files."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from dataset_writers import CIFAR10_NAMES, write_cifar10, write_cifar100

from spikemlp.data import DATASET_INFO, DataError, load_split, read_cifar10, read_cifar100


@pytest.fixture(scope="module")
def cifar10(shared_data):
    """The real CIFAR-10, each split read once for this module."""
    folder = shared_data / "cifar-10-batches-py"
    return folder, {s: load_split("cifar10", s, data_dir=shared_data) for s in ("train", "test")}


def test_real_cifar10_sizes_counts_and_names(cifar10):
    folder, splits = cifar10
    train, test = splits["train"], splits["test"]
    assert train.images.shape == (50_000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (10_000, 3, 32, 32)
    assert train.labels.dtype == torch.int64
    assert train.class_counts() == [5_000] * 10
    assert test.class_counts() == [1_000] * 10
    with open(folder / "batches.meta", "rb") as f:
        meta = pickle.load(f, encoding="bytes")
    assert train.classes == [n.decode() for n in meta[b"label_names"]] == CIFAR10_NAMES


def test_real_cifar10_pixels_and_labels_follow_the_row_layout(cifar10):
    # independent reference: the raw rows of data_batch_2 and test_batch, read with plain pickle
    folder, splits = cifar10
    for name, split, offset in (("data_batch_2", "train", 10_000), ("test_batch", "test", 0)):
        with open(folder / name, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        for row in (0, 4321, 9999):
            raw = batch[b"data"][row]
            img = splits[split].images[offset + row]
            # 1024 red, then green, then blue values, each 32 rows of 32
            assert img[0, 5, 7] == raw[5 * 32 + 7]
            assert img[1, 31, 0] == raw[1024 + 31 * 32]
            assert img[2, 0, 31] == raw[2048 + 31]
            assert torch.equal(img.reshape(-1), torch.from_numpy(raw))
        assert splits[split].labels[offset : offset + 10_000].tolist() == batch[b"labels"]


def _channel_mean_std(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-channel mean and std in [0, 1] units from the histogram of the uint8 values."""
    values = torch.arange(256, dtype=torch.double) / 255
    means, stds = [], []
    for c in range(images.shape[1]):
        hist = torch.bincount(images[:, c].reshape(-1), minlength=256).double()
        p = hist / hist.sum()
        m = (p * values).sum()
        means.append(m)
        stds.append(((p * (values - m) ** 2).sum()).sqrt())
    return torch.stack(means), torch.stack(stds)


def test_cifar10_mean_std_in_dataset_info_match_the_real_train_split(cifar10):
    mean, std = _channel_mean_std(cifar10[1]["train"].images)
    torch.testing.assert_close(
        mean, torch.tensor(DATASET_INFO["cifar10"].mean, dtype=torch.double), atol=1e-3, rtol=0
    )
    torch.testing.assert_close(
        std, torch.tensor(DATASET_INFO["cifar10"].std, dtype=torch.double), atol=1e-3, rtol=0
    )


def test_cifar10_written_here_reads_back_exactly(tmp_path):
    ref = write_cifar10(tmp_path / "cifar-10-batches-py", per_batch=3, n_test=4)
    train = read_cifar10(tmp_path / "cifar-10-batches-py", "train")
    assert torch.equal(train.images.reshape(15, -1), torch.from_numpy(ref["train_data"]))
    assert train.labels.tolist() == ref["train_labels"].tolist()
    test = load_split("cifar10", "test", data_dir=tmp_path)
    assert torch.equal(test.images.reshape(4, -1), torch.from_numpy(ref["test_data"]))
    assert test.classes == CIFAR10_NAMES


def test_cifar100_fine_and_coarse_labels_and_names(tmp_path):
    ref = write_cifar100(tmp_path / "cifar-100-python", n_train=12, n_test=6)
    for split in ("train", "test"):
        s = load_split("cifar100", split, data_dir=tmp_path)
        n = 12 if split == "train" else 6
        assert s.images.shape == (n, 3, 32, 32)
        assert torch.equal(s.images.reshape(n, -1), torch.from_numpy(ref[f"{split}_data"]))
        assert s.labels.tolist() == ref[f"{split}_fine"].tolist()
        assert s.coarse_labels.tolist() == ref[f"{split}_coarse"].tolist()
        assert s.classes == [f"fine_{i}" for i in range(100)]
        assert s.coarse_classes == [f"coarse_{i}" for i in range(20)]
        assert s.num_classes == 100


def test_cifar_accepts_str_keys(tmp_path):
    # a copy re-pickled by Python 3 has str keys; only the standard keys matter
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    with open(folder / "test_batch", "rb") as f:
        d = pickle.load(f, encoding="bytes")
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": d[b"data"], "labels": d[b"labels"]}, f)
    assert read_cifar10(folder, "test").labels.tolist() == d[b"labels"]


# --- bad input: one clear DataError naming the file -------------------------------------------------


def test_garbage_pickle_names_the_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    (folder / "data_batch_3").write_bytes(os.urandom(2000))
    with pytest.raises(
        DataError, match=r"data_batch_3: not a readable CIFAR pickle.*replace it with the original"
    ):
        read_cifar10(folder, "train")


def test_a_pickle_error_of_several_lines_still_names_the_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    (folder / "data_batch_3").write_bytes(b"Pabc\n.")  # a persistent id: pickle's message spans two lines
    with pytest.raises(
        DataError, match=r"data_batch_3: not a readable CIFAR pickle.*replace it with the original"
    ):
        read_cifar10(folder, "train")


def test_truncated_pickle_names_the_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    raw = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"test_batch: not a readable CIFAR pickle \(.*\).*truncated") as err:
        read_cifar10(folder, "test")
    # the command that fetches it, not a --download flag that train and eval do not have
    assert "spikemlp data download cifar10" in str(err.value) and "--download" not in str(err.value)
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match=r"test_batch: file not found.*spikemlp data download cifar10"):
        read_cifar10(folder, "test")
    cifar100 = tmp_path / "cifar-100-python"
    write_cifar100(cifar100)
    (cifar100 / "test").unlink()
    with pytest.raises(DataError, match=r"test: file not found.*spikemlp data download cifar100"):
        read_cifar100(cifar100, "test")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_with_code_is_refused_not_run(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": []}, f, protocol=2)
    with pytest.raises(DataError, match=r"test_batch: .*refusing to load .*system"):
        read_cifar10(folder, "test")


def test_cifar_labels_out_of_range(tmp_path):
    folder = tmp_path / "cifar-100-python"
    write_cifar100(folder)
    with open(folder / "test", "rb") as f:
        d = pickle.load(f, encoding="bytes")
    d[b"fine_labels"][2] = 100
    with open(folder / "test", "wb") as f:
        pickle.dump(d, f, protocol=2)
    with pytest.raises(
        DataError, match=r"test: 1 fine_labels out of range \(found values \d+\.\.100, expected 0\.\.99"
    ):
        read_cifar100(folder, "test")


def test_cifar_wrong_data_shape_and_label_count(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((5, 1024), np.uint8), b"labels": [0] * 5}, f, protocol=2)
    with pytest.raises(
        DataError, match=r"test_batch: 'data' is uint8 \[5, 1024\], expected uint8 \[N, 3072\]"
    ):
        read_cifar10(folder, "test")
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((5, 3072), np.uint8), b"labels": [0] * 4}, f, protocol=2)
    with pytest.raises(DataError, match=r"test_batch: 5 images but 4 'labels'; expected one label per image"):
        read_cifar10(folder, "test")


def test_cifar_missing_key(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"num_vis": 3072}, f, protocol=2)
    with pytest.raises(DataError, match=r"batches.meta: key 'label_names' missing"):
        read_cifar10(folder, "test")
