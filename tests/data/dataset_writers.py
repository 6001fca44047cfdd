"""Small data sets written in the original file formats, for the tests of the readers.

Written here independently of spikemlp's readers (straight from the format descriptions), so a reader
that mis-parses a format disagrees with the arrays these functions return.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _rows(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(folder: Path, per_batch: int = 4, n_test: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """cifar-10-batches-py layout with tiny batches; returns the rows and labels written per split."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {"train_data": [], "train_labels": []}
    for i in range(1, 6):
        data, labels = _rows(rng, per_batch), rng.integers(0, 10, per_batch).tolist()
        with open(folder / f"data_batch_{i}", "wb") as f:
            # bytes keys as the original (Python 2) pickles load with encoding="bytes"
            pickle.dump({b"batch_label": b"training batch", b"labels": labels, b"data": data}, f, protocol=2)
        out["train_data"].append(data)
        out["train_labels"] += labels
    test, test_labels = _rows(rng, n_test), rng.integers(0, 10, n_test).tolist()
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"batch_label": b"testing batch", b"labels": test_labels, b"data": test}, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        names = [n.encode() for n in CIFAR10_NAMES]
        pickle.dump(
            {b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072}, f, protocol=2
        )
    return {
        "train_data": np.concatenate(out["train_data"]),
        "train_labels": np.array(out["train_labels"]),
        "test_data": test,
        "test_labels": np.array(test_labels),
    }


def write_cifar100(folder: Path, n_train: int = 12, n_test: int = 6, seed: int = 1) -> dict[str, np.ndarray]:
    """cifar-100-python layout (train, test, meta with fine and coarse names)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data = _rows(rng, n)
        fine = rng.integers(0, 100, n)
        fine[0] = 99  # the extremes must be in range
        coarse = fine // 5
        d = {
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
            b"batch_label": split.encode(),
            b"fine_labels": fine.tolist(),
            b"coarse_labels": coarse.tolist(),
            b"data": data,
        }
        with open(folder / split, "wb") as f:
            pickle.dump(d, f, protocol=2)
        out[f"{split}_data"], out[f"{split}_fine"], out[f"{split}_coarse"] = data, fine, coarse
    meta = {
        b"fine_label_names": [f"fine_{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)],
    }
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return out


def idx_bytes(arr: np.ndarray) -> bytes:
    """An unsigned-byte idx file: 0, 0, type 0x08, ndim, big-endian dims, values."""
    assert arr.dtype == np.uint8
    return (
        struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    )


def write_mnist(folder: Path, n_train: int = 9, n_test: int = 4, gz: bool = True, seed: int = 2):
    """The four MNIST idx files (gzip-compressed or plain); returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            raw = idx_bytes(arr)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)
        out[prefix] = (images, labels)
    return out


def write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def tar_gz_of(folder: Path, arcname: str) -> bytes:
    """A .tar.gz archive (in memory) holding ``folder`` as ``arcname``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return buf.getvalue()
