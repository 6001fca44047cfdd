"""MNIST and Fashion-MNIST in the original idx files, gzip-compressed or plain.

An idx file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), the
dimensions as big-endian 32-bit integers, then the values. ``read_idx`` checks all of that against the
file's length, so a truncated or foreign file gets an error naming it rather than a reshape failure.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .in_memory import InMemorySplit, check_labels
from .info import FASHION_MNIST_CLASSES, MNIST_CLASSES

_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path, dataset: str) -> bytes:
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):  # decided by content, so a mis-named plain file still reads
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:
        raise DataError(
            f"{path}: truncated or corrupt gzip file ({err}). "
            f"Download it again: spikemlp data download {dataset}"
        ) from None


def read_idx(path: str | Path, expect_ndim: int | None = None, dataset: str = "NAME") -> np.ndarray:
    """The array in idx file ``path`` (``.gz`` or plain), in native byte order; ``dataset`` names the data
    set in the advice to download it again."""
    path = Path(path)
    raw = _read_bytes(path, dataset)
    kind = {1: "an idx1 label file (magic 0x00000801)", 3: "an idx3 image file (magic 0x00000803)"}
    expected = kind.get(expect_ndim, "an idx file") if expect_ndim else "an idx file"
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        magic = f"0x{raw[:4].hex()}" if len(raw) >= 4 else f"only {len(raw)} bytes"
        raise DataError(
            f"{path}: not an idx file (magic number {magic}); expected {expected}. "
            "Replace it with the original file."
        )
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    if expect_ndim is not None and ndim != expect_ndim:
        raise DataError(
            f"{path}: idx file with {ndim} dimensions (magic 0x{raw[:4].hex()}); expected {expected}. "
            "Are the image and label files swapped?"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated idx header ({len(raw)} bytes). Download the file again.")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(dims, dtype=np.int64))
    size = count * dtype.itemsize
    if len(raw) - header != size:
        problem = "truncated" if len(raw) - header < size else "longer than its header says"
        raise DataError(
            f"{path}: {problem}: the header announces {'x'.join(map(str, dims))} values ({size} bytes) but "
            f"{len(raw) - header} bytes follow. Download the file again."
        )
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)  # writable, native byte order


def idx_path(folder: Path, name: str) -> Path:
    """``folder/name`` (``name`` ends in .gz), or the plain file without .gz when only that exists."""
    gz, plain = folder / name, folder / name.removesuffix(".gz")
    return gz if gz.is_file() or not plain.is_file() else plain


def read_idx_split(folder: str | Path, split: str, classes: list[str], name: str) -> InMemorySplit:
    """One split of an MNIST-style data set: images ``[N, 1, 28, 28]`` uint8 and labels int64."""
    folder = Path(folder)
    prefix = "train" if split == "train" else "t10k"
    img_path = idx_path(folder, f"{prefix}-images-idx3-ubyte.gz")
    lab_path = idx_path(folder, f"{prefix}-labels-idx1-ubyte.gz")
    for p in (img_path, lab_path):
        if not p.is_file():
            raise DataError(
                f"{p}: file not found (nor without .gz); expected the {name} {split} idx files in {folder}. "
                f"Put them there, pass --data-dir, or fetch them: spikemlp data download {name}"
            )
    images = read_idx(img_path, expect_ndim=3, dataset=name)
    labels = read_idx(lab_path, expect_ndim=1, dataset=name)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise DataError(f"{img_path}: expected unsigned-byte idx files (type 0x08). Replace the files.")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{img_path} holds {images.shape[0]} images but {lab_path} holds {labels.shape[0]} labels; "
            "expected one label per image. One of the files is from another split or data set."
        )
    labels_t = torch.from_numpy(labels.astype(np.int64))
    check_labels(labels_t, len(classes), lab_path)
    return InMemorySplit(
        torch.from_numpy(images).unsqueeze(1),
        labels_t,
        list(classes),
        name=name,
        split=split,
        source=str(folder),
    )


def read_fashion_mnist(folder: str | Path, split: str) -> InMemorySplit:
    return read_idx_split(folder, split, FASHION_MNIST_CLASSES, "fashion_mnist")


def read_mnist(folder: str | Path, split: str) -> InMemorySplit:
    return read_idx_split(folder, split, MNIST_CLASSES, "mnist")
